"""supctl against a real supd: every test runs supctl as a subprocess, as a user would.

No mocks: a supd is started per test on a socket under tmp_path, and children
are real processes. Waits poll with a deadline; nothing sleeps to synchronise.
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import pathlib
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from supervisor.testing import SupervisorProcess, running_supervisor, wait_until
from supervisor.v1 import supervisor_pb2 as pb

ROOT = pathlib.Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
PY = sys.executable

# What the round-trip child writes: a non-UTF-8 byte and an unterminated last line.
CHILD_BYTES = b"alpha\ncaf\xc3\xa9\nbad \xff byte\n\nno newline at end"
WRITE_CHILD_BYTES = f"import sys; sys.stdout.buffer.write({CHILD_BYTES!r}); sys.stdout.flush()"


@pytest.fixture
def sup(tmp_path: pathlib.Path) -> Iterator[SupervisorProcess]:
    with running_supervisor(tmp_path, env={"PYTHONPATH": ENV["PYTHONPATH"]}) as handle:
        yield handle


def supctl_argv(address: str, *args: str) -> list[str]:
    return [PY, "-m", "supervisor.cli", "--addr", address, *args]


def supctl(sup: SupervisorProcess | str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[bytes]:
    address = sup if isinstance(sup, str) else sup.address
    return subprocess.run(supctl_argv(address, *args), capture_output=True, env=ENV, timeout=timeout, check=False)


def ok(sup: SupervisorProcess, *args: str) -> str:
    """Run supctl, insist on success and a quiet stderr, return stdout as text."""
    result = supctl(sup, *args)
    assert result.returncode == 0, (args, result.returncode, result.stderr)
    assert b"Traceback" not in result.stderr
    return result.stdout.decode()


def assert_one_line_error(result: subprocess.CompletedProcess[bytes], code: int) -> str:
    """The failure contract: the documented code, one ``supctl:`` line on stderr, nothing else."""
    err = result.stderr.decode()
    assert result.returncode == code, (result.returncode, err)
    assert b"Traceback" not in result.stderr
    assert err.startswith("supctl: ") and err.endswith("\n") and err.count("\n") == 1, err
    assert result.stdout == b""
    return err


def child_info(sup: SupervisorProcess, name: str) -> pb.ChildInfo:
    with sup.client(timeout=10) as supd:
        return supd.child(name)


def wait_state(sup: SupervisorProcess, name: str, state: int, timeout: float = 20.0) -> pb.ChildInfo:
    def reached() -> pb.ChildInfo | None:
        info = child_info(sup, name)
        return info if info.state == state else None

    found = wait_until(reached, timeout=timeout, what=f"{name} in {pb.ChildState.Name(state)}")
    assert isinstance(found, pb.ChildInfo)
    return found


def read_until(proc: subprocess.Popen[bytes], needle: bytes, timeout: float = 20.0) -> bytes:
    """Everything proc wrote to stdout up to and including needle, or fail at the deadline."""
    assert proc.stdout is not None
    return read_fd_until(proc.stdout.fileno(), needle, timeout)


def read_fd_until(fd: int, needle: bytes, timeout: float = 20.0) -> bytes:
    """Everything read from fd up to and including needle, or fail at the deadline."""
    seen = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(fd, selectors.EVENT_READ)
        while needle not in seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {needle!r} within {timeout}s; got {seen!r}")
            if sel.select(left):
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise AssertionError(f"{fd} closed before {needle!r}; got {seen!r}")
                seen += chunk
    return seen


def spawn_finished_child(sup: SupervisorProcess, name: str = "web") -> pb.ChildInfo:
    out = ok(sup, "spawn", name, "--restart", "never", "--", PY, "-c", WRITE_CHILD_BYTES)
    assert out.startswith(f"{name}: ") and "pid" in out
    return wait_state(sup, name, pb.CHILD_STATE_EXITED)


def follow_logs(sup: SupervisorProcess, *args: str) -> subprocess.Popen[bytes]:
    """``supctl logs -f ARGS`` as a process whose stdout and stderr the test reads."""
    return subprocess.Popen(
        supctl_argv(sup.address, "logs", "-f", *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV
    )


def test_spawn_ls_logs_round_trip(sup: SupervisorProcess) -> None:
    spawn_finished_child(sup)
    table = ok(sup, "ls").splitlines()
    assert table[0].split() == ["NAME", "STATE", "HEALTH", "PID", "GEN", "RESTARTS", "UPTIME", "LAST-EXIT"]
    assert table[1].split()[:6] == ["web", "EXITED", "DOWN", "-", "1", "0"]

    result = supctl(sup, "logs", "web")
    assert result.returncode == 0, result.stderr
    assert result.stdout == CHILD_BYTES  # byte for byte: the bad byte and the unterminated line too
    assert b"Traceback" not in result.stderr
    # Events of a non-following read go to stderr as readable lines, never to stdout.
    assert all(line.startswith("supctl: [web] ") for line in result.stderr.decode().splitlines())

    listed = json.loads(ok(sup, "ls", "--json"))
    assert [c["spec"]["name"] for c in listed["children"]] == ["web"]
    assert listed["children"][0]["state"] == "CHILD_STATE_EXITED"


def test_logs_stream_filters_and_tail(sup: SupervisorProcess) -> None:
    script = "import sys; sys.stdout.write('o1\\no2\\no3\\n'); sys.stdout.flush(); sys.stderr.write('e1\\n')"
    ok(sup, "spawn", "web", "--restart", "never", "--", PY, "-c", script)
    wait_state(sup, "web", pb.CHILD_STATE_EXITED)
    assert supctl(sup, "logs", "web", "--stdout-only").stdout == b"o1\no2\no3\n"
    assert supctl(sup, "logs", "web", "--stderr-only").stdout == b"e1\n"
    assert sorted(supctl(sup, "logs", "web").stdout.splitlines()) == [b"e1", b"o1", b"o2", b"o3"]
    assert supctl(sup, "logs", "web", "--stdout-only", "--tail", "2").stdout.endswith(b"o3\n")
    assert b"o1" not in supctl(sup, "logs", "web", "--stdout-only", "--tail", "1").stdout


def test_logs_json_records(sup: SupervisorProcess) -> None:
    spawn_finished_child(sup)
    result = supctl(sup, "logs", "web", "--json")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.decode().splitlines()]
    lines = [r for r in records if "text" in r]
    assert [r["text"] for r in lines] == ["alpha", "café", "bad \ufffd byte", "", "no newline at end"]
    assert [r.get("partial", False) for r in lines] == [False, False, False, False, True]
    assert base64.b64decode(lines[2]["data_b64"]) == b"bad \xff byte"
    assert all("data_b64" not in r for i, r in enumerate(lines) if i != 2)
    assert {(r["stream"], r["generation"]) for r in lines} == {("stdout", 1)}
    assert all(datetime.datetime.fromisoformat(r["time"]).tzinfo is not None for r in lines)
    seqs = [r["seq"] for r in records if "seq" in r]
    assert seqs == sorted(set(seqs)) and all(isinstance(s, int) for s in seqs)
    assert [r["seq"] for r in lines] == list(range(lines[0]["seq"], lines[0]["seq"] + 5))  # one batch
    exited = [r for r in records if r.get("event") == "exited"]
    assert len(exited) == 1 and exited[0]["seq"] > lines[-1]["seq"]


def test_logs_follow_gets_live_line_and_exits_0_on_ctrl_c(sup: SupervisorProcess, tmp_path: pathlib.Path) -> None:
    fifo = tmp_path / "in.fifo"
    os.mkfifo(fifo)
    script = (
        "import sys\n"
        "print('ready', flush=True)\n"
        f"for line in open({str(fifo)!r}):\n"
        "    print('got:' + line, end='', flush=True)\n"
    )
    ok(sup, "spawn", "web", "--restart", "never", "--", PY, "-u", "-c", script)
    with follow_logs(sup, "--tail", "10", "web") as follower:
        read_until(follower, b"ready\n")  # the follower is attached and streaming
        # The child opens the FIFO after printing ready; a writer can open it once it has.
        wfd = wait_until(lambda: _open_fifo_writer(fifo), what="the child to open the fifo")
        assert isinstance(wfd, int)
        os.write(wfd, b"written after attach\n")
        read_until(follower, b"got:written after attach\n")
        os.close(wfd)
        follower.send_signal(signal.SIGINT)
        _, err = follower.communicate(timeout=20)
        assert follower.returncode == 0, err
        assert b"Traceback" not in err and b"KeyboardInterrupt" not in err


def _open_fifo_writer(fifo: pathlib.Path) -> int | None:
    try:
        return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:  # ENXIO: no reader yet
        return None


def test_logs_follow_ends_with_0_when_child_removed(sup: SupervisorProcess) -> None:
    ok(sup, "spawn", "web", "--", "sh", "-c", "echo ready; exec sleep 1000")
    with follow_logs(sup, "--from-seq", "0", "web") as follower:
        read_until(follower, b"ready\n")
        assert "removed" in ok(sup, "rm", "web")
        rest, err = follower.communicate(timeout=30)
    assert follower.returncode == 0, err
    assert rest == b""  # stdout carries the child's bytes only
    assert "supctl: [web] removed" in err.decode()
    assert b"Traceback" not in err


def test_logs_into_closed_pipe_exits_quietly(sup: SupervisorProcess) -> None:
    script = "import sys\nfor i in range(100000): sys.stdout.write(f'line {i:06d} ' + 'x' * 40 + '\\n')"
    ok(sup, "spawn", "web", "--restart", "never", "--", PY, "-c", script)
    wait_state(sup, "web", pb.CHILD_STATE_EXITED)
    with follow_logs(sup, "--from-seq", "0", "web") as reader:
        read_until(reader, b"\n")  # like `| head -1`: read a little, then hang up
        assert reader.stdout is not None
        reader.stdout.close()
        assert reader.stderr is not None
        err = reader.stderr.read()
        assert reader.wait(timeout=30) == 0, err
    assert b"Traceback" not in err and b"BrokenPipe" not in err


def test_stop_restart_kill_rm(sup: SupervisorProcess) -> None:
    out = ok(sup, "spawn", "web", "--restart", "never", "--grace", "5", "--", "sleep", "1000")
    first = child_info(sup, "web")
    assert first.state == pb.CHILD_STATE_RUNNING and first.pid > 0
    assert out.strip() == f"web: RUNNING, pid {first.pid}, generation 1"

    assert "STOPPED" in ok(sup, "stop", "web", "--grace", "2")
    assert child_info(sup, "web").state == pb.CHILD_STATE_STOPPED

    assert "RUNNING" in ok(sup, "restart", "web")
    second = child_info(sup, "web")
    assert second.state == pb.CHILD_STATE_RUNNING and second.pid not in (0, first.pid)
    assert second.generation == 2

    ok(sup, "kill", "web", "TERM")
    exited = wait_state(sup, "web", pb.CHILD_STATE_EXITED)
    assert not exited.last_exit.exited and exited.last_exit.signal == signal.SIGTERM
    assert "EXITED" in ok(sup, "ls")

    err = assert_one_line_error(supctl(sup, "kill", "web", "9"), 1)  # nothing runs: refused
    assert err.startswith("supctl: kill web: ")

    assert "removed" in ok(sup, "rm", "web")
    assert "web" not in ok(sup, "ls").splitlines()[1:]
    assert_one_line_error(supctl(sup, "rm", "web"), 4)


def test_kill_by_name_reaches_the_process_group(sup: SupervisorProcess) -> None:
    ok(sup, "spawn", "web", "--restart", "never", "--", "sh", "-c", "sleep 1000 & wait")
    ok(sup, "kill", "web", "SIGKILL", "--group")
    exited = wait_state(sup, "web", pb.CHILD_STATE_EXITED)
    assert exited.last_exit.signal == signal.SIGKILL


def test_health(sup: SupervisorProcess) -> None:
    ok(sup, "spawn", "web", "--", "sleep", "1000")
    pid = child_info(sup, "web").pid
    for args in (("health", "--json"), ("health", "web", "--json")):
        doc = json.loads(ok(sup, *args))
        assert [c["spec"]["name"] for c in doc["children"]] == ["web"]
        child = doc["children"][0]
        assert child["state"] == "CHILD_STATE_RUNNING"
        assert child["pid"] == pid and child["generation"] == 1 and child["restart_count"] == 0
    text = ok(sup, "health", "web")
    assert "state:       RUNNING" in text and f"pid:         {pid}" in text


@pytest.mark.parametrize(
    "args",
    [
        ("stop", "ghost"),
        ("restart", "ghost"),
        ("rm", "ghost"),
        ("kill", "ghost", "TERM"),
        ("logs", "ghost"),
        ("logs", "-f", "ghost"),
        ("health", "ghost"),
    ],
)
def test_not_found_is_exit_4(sup: SupervisorProcess, args: tuple[str, ...]) -> None:
    err = assert_one_line_error(supctl(sup, *args), 4)
    assert err == "supctl: no child named 'ghost'\n"


def test_unreachable_is_exit_3(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "missing.sock"
    err = assert_one_line_error(supctl(f"unix://{missing}", "ls"), 3)
    assert err == f"supctl: no supd is running at unix://{missing} (no such socket)\n"

    dead = tmp_path / "dead.sock"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(dead))  # the file exists, nobody listens: what a crashed supd leaves
    err = assert_one_line_error(supctl(f"unix://{dead}", "logs", "-f", "web"), 3)
    assert err == f"supctl: no supd is running at unix://{dead} (connection refused)\n"


def test_invalid_spawn_is_exit_1_naming_the_field(sup: SupervisorProcess) -> None:
    err = assert_one_line_error(supctl(sup, "spawn", "web", "--grace", "7200", "--", "sleep", "1"), 1)
    assert err.startswith("supctl: spawn web: spec.stop_grace_seconds: "), err
    # 0 is no grace at all: refused before supd is asked (it would otherwise read as "the default").
    err = assert_one_line_error(supctl(sup, "spawn", "web", "--grace", "0", "--", "sleep", "1"), 2)
    assert err.startswith("supctl: spawn: argument --grace: must be > 0"), err
    # A name supd would refuse is a usage error, said before the name is echoed anywhere (quoted, bounded).
    err = assert_one_line_error(supctl(sup, "spawn", "bad/name", "--", "sleep", "1"), 2)
    assert err.startswith("supctl: spawn: NAME must be 1-64 characters"), err
    assert err.rstrip().endswith("got 'bad/name'"), err
    err = assert_one_line_error(supctl(sup, "stop", "e1\x1b[31mRED" + "x" * 10_000), 2)
    assert "\x1b" not in err and "'e1\\x1b[31mRED" in err and len(err) < 400, err
    assert_one_line_error(supctl(sup, "health", "web"), 4)  # nothing was declared


def test_spawn_twice_needs_replace(sup: SupervisorProcess) -> None:
    ok(sup, "spawn", "web", "--", "sleep", "1000")
    first = child_info(sup, "web").pid
    err = assert_one_line_error(supctl(sup, "spawn", "web", "--", "sleep", "1000"), 1)
    assert err.startswith("supctl: spawn web: ")
    ok(sup, "spawn", "web", "--replace", "--grace", "1", "--", "sleep", "1000")
    assert child_info(sup, "web").pid != first


def test_spawn_passes_argv_env_and_cwd_exactly(sup: SupervisorProcess, tmp_path: pathlib.Path) -> None:
    script = 'printf "%s|" "$@"; printf "%s|%s|%s\\n" "$GREETING" "$EMPTY" "$(pwd)"'
    ok(
        sup,
        "spawn",
        "web",
        "--restart",
        "never",
        "--env",
        "GREETING=a=b",
        "--env",
        "EMPTY=",
        "--env",
        "PATH=" + os.environ["PATH"],
        "--cwd",
        str(tmp_path),
        "--",
        "sh",
        "-c",
        script,
        "sh",
        "x",
        "--",
        "--grace",
        "y z",
    )
    wait_state(sup, "web", pb.CHILD_STATE_EXITED)
    assert supctl(sup, "logs", "web").stdout == f"x|--|--grace|y z|a=b||{tmp_path}\n".encode()


def test_spawn_policy_flags_reach_the_spec(sup: SupervisorProcess) -> None:
    ok(
        sup,
        "spawn",
        "web",
        "--restart",
        "always",
        "--stop-signal",
        "HUP",
        "--backoff-initial",
        "0.25",
        "--backoff-max",
        "2",
        "--flap-window",
        "30",
        "--",
        "sleep",
        "1000",
    )
    spec = child_info(sup, "web").spec
    assert spec.restart == pb.RESTART_POLICY_ALWAYS and spec.stop_signal == signal.SIGHUP
    assert (spec.backoff.initial_seconds, spec.backoff.max_seconds) == (0.25, 2.0)
    # A window alone must not switch the flap limit off (0 means "no limit" once present).
    assert (spec.flap_limit.max_restarts, spec.flap_limit.window_seconds) == (5, 30.0)


@pytest.mark.parametrize(
    "args",
    [
        ("kill", "web", "NOSUCHSIG"),
        ("spawn", "web"),
        ("spawn", "web", "--env", "NOEQUALS", "--", "true"),
        ("logs", "web", "--tail", "-3"),
        ("frobnicate",),
    ],
)
def test_usage_errors_are_exit_2(tmp_path: pathlib.Path, args: tuple[str, ...]) -> None:
    result = supctl(f"unix://{tmp_path}/none.sock", *args)
    assert result.returncode == 2, result.stderr
    assert b"Traceback" not in result.stderr
    assert result.stderr.decode().splitlines()[-1].startswith("supctl")


def test_deadline_is_exit_5(sup: SupervisorProcess) -> None:
    # A child that ignores SIGTERM keeps Stop waiting for its whole grace, past our deadline.
    ok(sup, "spawn", "web", "--grace", "3", "--", "sh", "-c", 'trap "" TERM; echo ready; exec sleep 1000')
    wait_until(lambda: child_info(sup, "web").stdout_lines >= 1, what="the trap to be set")
    err = assert_one_line_error(supctl(sup, "--timeout", "0.5", "stop", "web"), 5)
    assert err.startswith("supctl: stop web: supd at ") and "did not answer after 0.5s" in err


def test_default_address_comes_from_supd_addr(sup: SupervisorProcess) -> None:
    env = {**ENV, "SUPD_ADDR": sup.address}
    result = subprocess.run([PY, "-m", "supervisor.cli", "ls"], capture_output=True, env=env, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b"NAME")


def test_logs_follow_ends_with_0_on_supd_shutdown(sup: SupervisorProcess) -> None:
    ok(sup, "spawn", "web", "--", "sh", "-c", "echo ready; exec sleep 1000")
    with follow_logs(sup, "--from-seq", "0", "web") as follower:
        read_until(follower, b"ready\n")
        sup.proc.send_signal(signal.SIGTERM)
        rest, err = follower.communicate(timeout=30)
    assert follower.returncode == 0, err
    assert rest == b""
    assert err.decode().splitlines()[-1] == "supctl: [web] supd is shutting down"


def test_logs_follow_losing_supd_is_exit_3(sup: SupervisorProcess) -> None:
    # The child ticks so that it dies of SIGPIPE once supd, its reader, is gone.
    ok(sup, "spawn", "web", "--", "sh", "-c", "echo ready; while echo tick; do sleep 0.1; done")
    with follow_logs(sup, "--from-seq", "0", "web") as follower:
        read_until(follower, b"ready\n")
        sup.proc.kill()
        sup.proc.wait()
        _, err = follower.communicate(timeout=30)
    assert follower.returncode == 3, err
    last = err.decode().splitlines()[-1]
    assert last.startswith("supctl: logs web: lost the connection to supd at "), last
    assert b"Traceback" not in err


def test_wait_connects_once_supd_comes_up_and_gives_up_with_exit_3(tmp_path: pathlib.Path) -> None:
    address = f"unix://{tmp_path / 'run' / 'supd.sock'}"
    waiting = subprocess.Popen(
        supctl_argv(address, "--wait", "20", "ls"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV
    )
    with running_supervisor(tmp_path):
        out, err = waiting.communicate(timeout=30)
    assert waiting.returncode == 0, err
    assert out.decode().startswith("NAME")
    late = subprocess.run(
        supctl_argv(address, "--wait", "0.3", "ls"), capture_output=True, text=True, env=ENV, check=False
    )
    assert late.returncode == 3
    assert late.stderr.strip() == f"supctl: no supd answered at {address} within 0.3s (--wait)"


def test_spawn_whose_start_failed_says_why_and_exits_6(sup: SupervisorProcess, tmp_path: pathlib.Path) -> None:
    # Issue 15 item 13: supctl spawn exited 0 and printed no reason when the start failed.
    script = tmp_path / "bad-interpreter"
    script.write_text("#!/nonexistent/interpreter\necho hi\n")
    script.chmod(0o755)
    err = assert_one_line_error(supctl(sup, "spawn", "fatal", "--restart", "never", "--", str(script)), 6)
    assert err.startswith("supctl: spawn fatal: failed to start: ") and err.endswith(" (FATAL)\n"), err
    assert "/nonexistent/interpreter" in err or "No such file" in err, err
    err = assert_one_line_error(
        supctl(sup, "spawn", "looping", "--restart", "always", "--backoff-initial", "30", "--", str(script)), 6
    )
    assert err.startswith("supctl: spawn looping: failed to start: ") and "(BACKOFF, next start in" in err, err
    assert "No such file" in err or "/nonexistent/interpreter" in err, err
    assert child_info(sup, "looping").state == pb.CHILD_STATE_BACKOFF  # still declared, retrying


def test_size_bounds_are_printed_as_whole_bytes(sup: SupervisorProcess) -> None:
    # Issue 15 item 18: the ring's upper bound read "1.07374e+09".
    err = assert_one_line_error(supctl(sup, "spawn", "big", "--ring-bytes", "10", "--", "sleep", "1"), 1)
    assert err == (
        "supctl: spawn big: spec.ring_bytes: must be between 65536 (64 KiB) and 1073741824 (1 GiB), got 10\n"
    )


def test_a_restart_whose_start_fails_says_why_and_exits_6(sup: SupervisorProcess, tmp_path: pathlib.Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    ok(sup, "spawn", "cwd", "--restart", "never", "--cwd", str(work), "--", "sleep", "1000")
    work.rmdir()
    err = assert_one_line_error(supctl(sup, "restart", "cwd", "--grace", "1"), 6)
    assert f"failed to start: working directory {str(work)!r} does not exist" in err, err
    assert "could not start: " not in err  # said once, not twice


def test_usage_errors_are_one_line_with_exit_2(sup: SupervisorProcess) -> None:
    bad = (("stop",), ("kill", "web", "NOSUCHSIG"), ("logs", "web", "--tail", "-1"), ("rm", "web", "--grace", "0"))
    for args in bad:
        err = assert_one_line_error(supctl(sup, *args), 2)
        assert f"supctl: {args[0]}: " in err and "--help" in err, err


def test_spawn_with_a_spec_file_declares_probes_state_and_ports(sup: SupervisorProcess, tmp_path: pathlib.Path) -> None:
    spec = tmp_path / "web.toml"
    spec.write_text(
        'argv = ["sleep", "100"]\nports = [40991]\nstart_order = 3\n'
        '[readiness_probe]\nexec = { argv = ["true"] }\nperiod_seconds = 0.1\n'
        '[state_delivery.exec]\nargv = ["/bin/sh", "-c", "cat > /dev/null"]\n'
    )
    out = ok(sup, "spawn", "web", "--spec", str(spec), "--grace", "3")
    assert out.startswith("web: RUNNING")
    child = json.loads(ok(sup, "ls", "--json"))["children"][0]["spec"]
    assert child["argv"] == ["sleep", "100"] and child["stop_grace_seconds"] == 3
    assert child["readiness_probe"]["exec"]["argv"] == ["true"]
    assert child["ports"] == [{"port": 40991, "protocol": "tcp"}]
    assert child["state_delivery"]["exec"]["argv"][0] == "/bin/sh" and child["start_order"] == 3
    replaced = ok(sup, "spawn", "web", "--spec", str(spec), "--replace", "--", "sleep", "200")
    assert replaced.startswith("web: RUNNING")
    assert json.loads(ok(sup, "ls", "--json"))["children"][0]["spec"]["argv"] == ["sleep", "200"]
    bad = tmp_path / "bad.toml"
    bad.write_text('argv = ["sleep", "1"]\n[liveness_probe]\ntcp = { port = 0 }\n')
    result = supctl(sup, "spawn", "x", "--spec", str(bad))
    assert result.returncode == 2
    assert result.stderr.decode().strip() == (
        f"supctl: spawn x: {bad}: spec.liveness_probe.tcp.port: must be a port number (1..65535), got 0"
    )


def _logs_on_a_terminal(sup: SupervisorProcess, name: str, env: dict[str, str]) -> bytes:
    import pty

    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            supctl_argv(sup.address, "logs", name), stdout=slave, stderr=slave, env={**env, "TERM": "xterm"}
        )
        seen = read_fd_until(master, b"exited with code 0")
        assert proc.wait(timeout=20) == 0
        return seen
    finally:
        os.close(master)
        os.close(slave)


def test_logs_colours_stderr_lines_and_dims_events_on_a_terminal_only(sup: SupervisorProcess) -> None:
    ok(sup, "spawn", "web", "--restart", "never", "--", "sh", "-c", "echo out; echo err >&2")
    wait_state(sup, "web", pb.CHILD_STATE_EXITED)
    env = {k: v for k, v in ENV.items() if k != "NO_COLOR"}
    coloured = _logs_on_a_terminal(sup, "web", env)
    assert b"\x1b[31merr\r\n\x1b[0m" in coloured  # the pty turns \n into \r\n
    assert b"\x1b[2msupctl: [web] started with pid" in coloured
    assert b"out\r\n" in coloured and b"\x1b[31mout" not in coloured
    assert b"\x1b[" not in _logs_on_a_terminal(sup, "web", {**env, "NO_COLOR": "1"})
    piped = supctl(sup, "logs", "web")  # not a terminal: never a colour
    assert piped.stdout == b"out\nerr\n" and b"\x1b[" not in piped.stderr


def test_logs_timestamps_and_since(sup: SupervisorProcess) -> None:
    spawn_finished_child(sup)
    stamped = supctl(sup, "logs", "web", "--timestamps").stdout.split(b"\n")
    assert len(stamped) == 5  # the last line has no newline
    for line in stamped:
        when, _, _ = line.partition(b" ")
        assert datetime.datetime.fromisoformat(when.decode()).tzinfo is not None, line
    assert b"\n".join(line.partition(b" ")[2] for line in stamped) == CHILD_BYTES
    events = supctl(sup, "logs", "web", "-t").stderr.decode().splitlines()
    assert events[0].startswith("supctl: 20") and "[web] started" in events[0]

    assert supctl(sup, "logs", "web", "--since", "1h").stdout == CHILD_BYTES
    assert ok(sup, "logs", "web", "--since", "2099-01-01T00:00:00Z") == ""
    records = [json.loads(r) for r in ok(sup, "logs", "web", "--json").splitlines()]
    exited = next(r for r in records if r.get("event") == "exited")
    after = [json.loads(r) for r in ok(sup, "logs", "web", "--json", "--since", exited["time"]).splitlines()]
    assert after == [exited]
    err = assert_one_line_error(supctl(sup, "logs", "web", "--since", "yesterday"), 2)
    assert "an age like 90s, 5m" in err


def test_every_read_command_speaks_json_and_tables_line_up(sup: SupervisorProcess) -> None:
    ok(sup, "spawn", "a-much-longer-name", "--", "sleep", "1000")
    spawn_finished_child(sup)
    assert [c["spec"]["name"] for c in json.loads(ok(sup, "ls", "--json"))["children"]] == [
        "a-much-longer-name",
        "web",
    ]
    assert len(json.loads(ok(sup, "health", "--json"))["children"]) == 2
    assert json.loads(ok(sup, "state", "web", "--json")) == {"history": []}
    assert all(json.loads(r) for r in ok(sup, "logs", "web", "--json").splitlines())
    for args in (("ls",), ("health",)):
        rows = ok(sup, *args).splitlines()
        rows = rows[1:] if args == ("health",) else rows  # health starts with supd's own line
        header = rows[0]
        starts = [header.index(col) for col in header.split()]
        for row in rows[1:]:
            for start in starts[1:]:
                assert row[start - 2 : start] == "  " and row[start] != " ", (args, row)
    assert ok(sup, "health").splitlines()[0].startswith("supd ")


def test_completion_script_and_child_names(sup: SupervisorProcess, tmp_path: pathlib.Path) -> None:
    script = ok(sup, "completion", "bash")
    assert "complete " in script and "supctl" in script
    ok(sup, "spawn", "web", "--", "sleep", "1000")
    ok(sup, "spawn", "worker", "--", "sleep", "1000")
    ok(sup, "spawn", "db", "--", "sleep", "1000")
    answer = tmp_path / "completions"
    line = f"supctl --addr {sup.address} logs w"
    env = {
        **ENV,
        "_ARGCOMPLETE": "1",
        "COMP_LINE": line,
        "COMP_POINT": str(len(line)),
        "_ARGCOMPLETE_STDOUT_FILENAME": str(answer),
        "_ARGCOMPLETE_IFS": "\n",
    }
    subprocess.run([PY, "-m", "supervisor.cli"], env=env, timeout=30, check=True, capture_output=True)
    assert sorted(answer.read_text().split()) == ["web", "worker"]
    assert_one_line_error(supctl(sup, "completion", "tcsh"), 2)


def test_supctl_alone_shows_what_there_is_to_do() -> None:
    result = subprocess.run([PY, "-m", "supervisor.cli"], capture_output=True, text=True, env=ENV, check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert "spawn" in result.stderr and "exit codes:" in result.stderr


def test_files_that_are_not_utf8_are_one_line_and_exit_2(tmp_path: pathlib.Path) -> None:
    address = f"unix://{tmp_path}/none.sock"  # the file is read, and refused, before supd is asked
    piped = subprocess.run(
        [*supctl_argv(address, "apply", "-f", "-")], input=b"# caf\xe9\n", capture_output=True, timeout=60, check=False
    )
    err = assert_one_line_error(piped, 2)
    assert "not valid TOML" in err and "utf-8" in err, err
    latin = tmp_path / "latin.toml"
    latin.write_bytes(b"# caf\xe9\nargv = ['/bin/true']\n")
    err = assert_one_line_error(supctl(address, "spawn", "lat", "--spec", str(latin)), 2)
    assert f"{latin}: not valid TOML" in err, err
