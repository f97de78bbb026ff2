"""Fixtures: a real supd per test on a temporary socket, and helpers to drive it."""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from supervisor.testing import SupervisorProcess, running_supervisor
from supervisor.testing import wait_until as wait_for
from supervisor.v1 import supervisor_pb2 as pb
from supervisor.v1 import supervisor_pb2_grpc as pb_grpc

ZOO = str(pathlib.Path(__file__).with_name("zoo.py"))


def zoo(*args: str) -> list[str]:
    """argv running one of the zoo's child programs."""
    return [sys.executable, ZOO, *args]


@pytest.fixture(autouse=True)
def private_state_dir(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every supd a test starts keeps its store under the test's own directory, never the user's."""
    monkeypatch.setenv("SUPD_STATE_DIR", str(tmp_path / "state-env"))


@pytest.fixture
def sup(tmp_path: pathlib.Path) -> Iterator[SupervisorProcess]:
    with running_supervisor(tmp_path) as handle:
        yield handle


@pytest.fixture
def stub(sup: SupervisorProcess) -> Iterator[pb_grpc.SupervisorStub]:
    with sup.channel() as channel:
        yield pb_grpc.SupervisorStub(channel)


def spawn(stub: pb_grpc.SupervisorStub, name: str, argv: list[str], **fields: Any) -> pb.ChildInfo:
    fields.setdefault("restart", pb.RESTART_POLICY_NEVER)
    return stub.Spawn(pb.SpawnRequest(spec=pb.ChildSpec(name=name, argv=argv, **fields)), timeout=10).child


def wait_state(stub: pb_grpc.SupervisorStub, name: str, state: int, timeout: float = 10.0) -> pb.ChildInfo:
    def check() -> pb.ChildInfo | None:
        info = stub.Health(pb.HealthRequest(name=name), timeout=5).children[0]
        return info if info.state == state else None

    return wait_for(check, timeout, what=f"{name} to reach {pb.ChildState.Name(state)}")


def split_lines(batch: pb.LineBatch) -> list[bytes]:
    out, off = [], 0
    for n in batch.lengths:
        out.append(batch.data[off : off + n])
        off += n
    assert off == len(batch.data), "lengths must cover the blob exactly"
    return out


class Follower:
    """Reads a Stream in a thread, recording every message, until it ends or is cancelled."""

    def __init__(self, stub: pb_grpc.SupervisorStub, request: pb.StreamRequest) -> None:
        self.messages: list[pb.StreamMessage] = []
        self.error: grpc.RpcError | None = None
        self.done = threading.Event()
        self._call = stub.Stream(request, timeout=60)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for message in self._call:
                self.messages.append(message)
        except grpc.RpcError as exc:
            self.error = exc
        finally:
            self.done.set()

    def events(self) -> list[pb.Event]:
        return [m.event for m in list(self.messages) if m.HasField("event")]

    def lines(self) -> list[tuple[int, bytes]]:
        out = []
        for m in list(self.messages):
            if m.HasField("lines"):
                out.extend(enumerate(split_lines(m.lines), start=m.lines.first_seq))
        return out

    def wait_event(self, kind: int, count: int = 1, timeout: float = 20.0) -> list[pb.Event]:
        return wait_for(
            lambda: [e for e in self.events() if e.kind == kind][count - 1 : count] and self.events(),
            timeout,
            what=f"{count} event(s) {pb.Event.Kind.Name(kind)}",
        )

    def cancel(self) -> None:
        self._call.cancel()
        self.done.wait(10)


def proc_status(pid: int, field: str) -> str:
    """One field of /proc/PID/status (``SigCgt``, ``Threads``, ...)."""
    lines = pathlib.Path(f"/proc/{pid}/status").read_text().splitlines()
    return next(line.split(":", 1)[1].strip() for line in lines if line.startswith(f"{field}:"))


def log_entries(sup: SupervisorProcess | pathlib.Path, event: str) -> list[dict[str, Any]]:
    """supd's structured log entries named ``event`` (from its handle, or the file its stderr goes to)."""
    text = (sup if isinstance(sup, pathlib.Path) else sup.stderr_path).read_text(errors="replace")
    entries = (json.loads(line) for line in text.splitlines() if line.startswith("{"))
    return [e for e in entries if e.get("event") == event]


@contextlib.contextmanager
def signalled_while_starting(
    directory: pathlib.Path, config: pathlib.Path, sig: int
) -> Iterator[tuple[subprocess.Popen[bytes], bool, pathlib.Path]]:
    """Start the `supd` command with ``config``, send ``sig`` the moment it catches it: (process, early, stderr file).

    supd is frozen (SIGSTOP) while the signal is sent, so ``early`` (one thread and no socket yet: still in its
    imports, where only the handler that holds signals could catch it) is exactly what was seen then. A process
    still running when the block ends is terminated.
    """
    socket = directory / "run" / "supd.sock"
    stderr = directory / "supd.stderr"
    supd = str(pathlib.Path(sys.executable).with_name("supd"))
    argv = [supd, "--socket", str(socket), "--state-dir", str(directory / "state"), "--config", str(config)]
    with stderr.open("wb") as err:
        proc = subprocess.Popen(argv, stderr=err)
    try:
        wait_for(
            lambda: int(proc_status(proc.pid, "SigCgt"), 16) & (1 << (sig - 1)), 30, interval=0.0005,
            what=f"a {signal.Signals(sig).name} handler",
        )
        proc.send_signal(signal.SIGSTOP)
        early = proc_status(proc.pid, "Threads") == "1" and not socket.exists()
        proc.send_signal(sig)
        proc.send_signal(signal.SIGCONT)
        yield proc, early, stderr
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)


def process_gone(pid: int) -> bool:
    """True when ``pid`` no longer runs (absent, or a zombie awaiting its parent)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def kill_marked(token: str) -> None:
    """SIGKILL every process with ``token`` in its argv: the children of supds a kill-in-a-loop test killed."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if token.encode() in f.read():
                    os.kill(int(pid), signal.SIGKILL)
        except (FileNotFoundError, ProcessLookupError):
            continue
