"""Run a real supd in tests: yours and ours.

``running_supervisor(tmp_path)`` starts ``supd`` as a separate process on a
socket below ``tmp_path``, waits until it answers, yields a handle, and stops it
with SIGTERM (SIGKILL if it does not exit within the deadline). The handle
gives a ``supervisor.client.Client`` (``handle.client()``) or the raw channel.

Example (pytest)::

    from supervisor.testing import running_supervisor

    def test_my_worker_starts(tmp_path):
        with running_supervisor(tmp_path) as sup, sup.client() as supd:
            supd.spawn(name="worker", argv=["python3", "worker.py"])
            assert supd.wait_ready("worker", timeout=10).pid > 0
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import grpc

from supervisor.client import AsyncClient, Client, Connection
from supervisor.errors import SupervisorError
from supervisor.v1 import supervisor_pb2_grpc as pb_grpc

__all__ = ["SupervisorProcess", "running_supervisor", "wait_until"]

T = TypeVar("T")


@dataclasses.dataclass
class SupervisorProcess:
    """A running supd: its process, socket, address and the file its stderr goes to."""

    proc: subprocess.Popen[bytes]
    socket: pathlib.Path
    stderr_path: pathlib.Path

    @property
    def address(self) -> str:
        return f"unix://{self.socket}"

    def client(self, timeout: float | None = None) -> Client:
        """A blocking client of this supd; close it (``with``) when done."""
        return Client(self.address, timeout=timeout)

    def async_client(self, timeout: float | None = None) -> AsyncClient:
        """An asyncio client of this supd (create it inside the event loop that uses it)."""
        return AsyncClient(self.address, timeout=timeout)

    def channel(self) -> grpc.Channel:
        """A raw channel, for the generated stubs (``supervisor.v1``) and grpc.health.v1."""
        return Connection(self.address).channel()

    def stub(self) -> pb_grpc.SupervisorStub:
        return pb_grpc.SupervisorStub(self.channel())

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(errors="replace")


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, *, interval: float = 0.01, what: str = "") -> T:
    """Poll ``predicate()`` until it is truthy and return that value; AssertionError after ``timeout`` s.

    The one way tests wait: on a condition, under a deadline, never a bare sleep.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the kernel's pick; another process may take it before you do)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def accepting(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts a TCP connection on ``host:port`` now (half a second at most)."""
    try:
        socket.create_connection((host, port), timeout=0.5).close()
    except OSError:
        return False
    return True


def supd_command() -> list[str]:
    """How to start supd from this interpreter, installed or not: as the ``supd`` command starts."""
    return [sys.executable, "-m", "supervisor._daemon"]


@contextlib.contextmanager
def running_supervisor(
    tmp_path: pathlib.Path,
    args: Sequence[str] = (),
    *,
    env: dict[str, str] | None = None,
    start_timeout: float = 15.0,
    stop_timeout: float = 30.0,
) -> Iterator[SupervisorProcess]:
    """Start supd on ``tmp_path/run/supd.sock`` with its store in ``tmp_path/state`` and stop it afterwards."""
    socket = tmp_path / "run" / "supd.sock"
    stderr_path = tmp_path / "supd.stderr"
    store = [] if "--state-dir" in args else ["--state-dir", str(tmp_path / "state")]
    with stderr_path.open("wb") as err:
        proc = subprocess.Popen(
            [*supd_command(), "--socket", str(socket), *store, *args],
            stdin=subprocess.DEVNULL,
            stdout=err,
            stderr=err,
            env={**os.environ, **(env or {})},
        )
    handle = SupervisorProcess(proc=proc, socket=socket, stderr_path=stderr_path)
    try:
        _wait_ready(handle, start_timeout)
        yield handle
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_ready(handle: SupervisorProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if handle.proc.poll() is not None:
            raise RuntimeError(f"supd exited with {handle.proc.returncode}: {handle.stderr_text()}")
        if handle.socket.exists():
            with handle.client(timeout=1.0) as supd:
                try:
                    supd.list()
                    return
                except SupervisorError as exc:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"supd does not answer: {exc}") from exc
        if time.monotonic() > deadline:
            raise RuntimeError(f"supd did not create {handle.socket}: {handle.stderr_text()}")
        time.sleep(0.02)
