"""supd's shutdown: one deadline from the first signal to exit, and `supctl shutdown` for any user."""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time

import grpc
import pytest

from supervisor._daemon.children.sessions import read_stat
from supervisor.testing import running_supervisor
from supervisor.v1 import supervisor_pb2 as pb
from supervisor.v1 import supervisor_pb2_grpc as pb_grpc

from conftest import log_entries, signalled_while_starting, spawn, wait_for, wait_state, zoo

SUPCTL = [sys.executable, "-m", "supervisor.cli"]


def alive(pid: int) -> bool:
    member = read_stat(pid)
    return member is not None and not member.zombie


def test_supctl_shutdown_stops_children_and_supd_and_leaves_no_dead_pid(tmp_path: pathlib.Path):
    pidfile = tmp_path / "pids"
    with running_supervisor(tmp_path) as handle, handle.channel() as channel:
        stub = pb_grpc.SupervisorStub(channel)
        spawn(stub, "stubborn", zoo("ignore-term", str(pidfile)), stop_grace_seconds=0.5)
        wait_for(pidfile.exists)
        pids = [int(p) for p in pidfile.read_text().split()]
        out = subprocess.run(
            [*SUPCTL, "shutdown"], env={**os.environ, "SUPD_ADDR": handle.address},
            capture_output=True, text=True, timeout=30, check=False,
        )
        assert out.returncode == 0, out.stderr
        assert f"supd (pid {handle.proc.pid}): exited" in out.stdout
        assert handle.proc.wait(10) == 0
    assert not any(alive(p) for p in pids)
    lock = pathlib.Path(str(handle.socket) + ".lock")
    assert lock.read_text() == ""  # `kill $(cat …lock)` can never hit a stranger


def test_shutdown_rpc_answers_with_pid_and_deadline(tmp_path: pathlib.Path):
    with running_supervisor(tmp_path, ["--shutdown-timeout", "7"]) as handle, handle.channel() as channel:
        reply = pb_grpc.SupervisorStub(channel).Shutdown(pb.ShutdownRequest(), timeout=10)
        assert reply.pid == handle.proc.pid and 6 < reply.deadline_seconds <= 7
        assert handle.proc.wait(15) == 0


def test_the_shutdown_timeout_is_a_deadline_even_with_a_long_stop_in_flight(tmp_path: pathlib.Path):
    pidfile = tmp_path / "pids"
    with running_supervisor(tmp_path, ["--shutdown-timeout", "2"]) as handle, handle.channel() as channel:
        stub = pb_grpc.SupervisorStub(channel)
        spawn(stub, "stubborn", zoo("ignore-term", str(pidfile)), stop_grace_seconds=30)
        wait_for(pidfile.exists)
        pids = [int(p) for p in pidfile.read_text().split()]
        stop_error: list[grpc.RpcError] = []

        def stop() -> None:
            try:
                stub.Stop(pb.StopRequest(name="stubborn", grace_seconds=12), timeout=30)
            except grpc.RpcError as exc:  # the server goes away with the call answered or cut
                stop_error.append(exc)

        stopper = threading.Thread(target=stop)
        stopper.start()
        wait_state(stub, "stubborn", pb.CHILD_STATE_STOPPING)
        begun = time.monotonic()
        handle.proc.send_signal(signal.SIGTERM)
        code = handle.proc.wait(20)
        took = time.monotonic() - begun
        stopper.join(30)
    assert code == 0
    assert took < 6, f"supd took {took:.1f}s to exit with --shutdown-timeout 2 (the Stop asked for 12)"
    assert not any(alive(p) for p in pids)


def test_a_dead_otlp_endpoint_does_not_hold_up_the_exit(tmp_path: pathlib.Path):
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(64)  # accepts connections in the kernel, never answers a byte
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{hole.getsockname()[1]}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
    }
    try:
        with running_supervisor(tmp_path, ["--shutdown-timeout", "1"], env=env) as handle, handle.channel() as ch:
            stub = pb_grpc.SupervisorStub(ch)
            spawn(stub, "chatty", zoo("lines", "1000"))
            wait_state(stub, "chatty", pb.CHILD_STATE_EXITED)
            begun = time.monotonic()
            handle.proc.send_signal(signal.SIGTERM)
            code = handle.proc.wait(20)
            took = time.monotonic() - begun
    finally:
        hole.close()
    assert code == 0
    assert took < 4, f"supd took {took:.1f}s to exit with --shutdown-timeout 1 and a dead endpoint"


def test_many_children_stop_within_the_deadline(tmp_path: pathlib.Path):
    config = tmp_path / "many.toml"
    config.write_text(
        "".join(f'[children.s{i}]\nargv = ["sleep", "1000"]\nstop_grace_seconds = 1\n' for i in range(60))
    )
    with running_supervisor(tmp_path, ["--config", str(config), "--shutdown-timeout", "2"]) as handle:
        with handle.channel() as channel:
            stub = pb_grpc.SupervisorStub(channel)
            wait_for(lambda: len(stub.List(pb.ListRequest(), timeout=5).children) == 60, what="60 children")
            pids = [c.pid for c in stub.List(pb.ListRequest(), timeout=5).children]
        begun = time.monotonic()
        handle.proc.send_signal(signal.SIGTERM)
        code = handle.proc.wait(20)
        took = time.monotonic() - begun
    assert code == 0 and not any(alive(p) for p in pids)
    assert took < 5, f"60 idle children took {took:.1f}s with --shutdown-timeout 2"


def test_a_shutdown_of_hundreds_of_children_keeps_the_log_json_and_loses_no_signal(tmp_path: pathlib.Path):
    """Their SIGCHLD burst used to overflow asyncio's 278-byte signal pipe: a traceback on supd's JSON log per
    signal dropped ("Exception ignored when trying to write to the signal wakeup fd"), and a signal behind the
    burst was lost (tests/test_signal_inbox.py stages that loss in process)."""
    n = 400
    config = tmp_path / "many.toml"
    config.write_text("".join(f'[children.s{i}]\nargv = ["sleep", "1000"]\n' for i in range(n)))
    with running_supervisor(tmp_path, ["--config", str(config), "--shutdown-timeout", "10"]) as handle:
        with handle.channel() as channel:
            stub = pb_grpc.SupervisorStub(channel)
            wait_for(
                lambda: sum(c.state == pb.CHILD_STATE_RUNNING for c in stub.List(pb.ListRequest(), timeout=10).children)
                == n,
                timeout=60, what=f"{n} children running",
            )
        handle.proc.send_signal(signal.SIGTERM)
        assert handle.proc.wait(30) == 0
        log = handle.stderr_text()
    strays = [line for line in log.splitlines() if line and not line.startswith("{")]
    assert not strays, f"{len(strays)} lines of supd's log are not JSON, the first: {strays[:3]}"
    assert log.count('"event": "child.stopped"') == n


def test_a_sigterm_held_at_start_up_starts_no_child(tmp_path: pathlib.Path):
    """The signal came before supd could act on it: it exits 0 without starting what it would stop at once."""
    config = tmp_path / "supd.toml"
    config.write_text("".join(f'[children.s{i}]\nargv = ["sleep", "1000"]\n' for i in range(20)))
    for attempt in range(3):  # a loaded machine may let supd past its imports before the poll sees the handler
        directory = tmp_path / str(attempt)
        directory.mkdir()
        with signalled_while_starting(directory, config, signal.SIGTERM) as (proc, early, stderr):
            code = proc.wait(30)
        if early:
            assert code == 0, stderr.read_text(errors="replace")[-2000:]
            assert not log_entries(stderr, "child.spawned")
            assert [e["children"] for e in log_entries(stderr, "supd.boot.skipped")] == [20]
            return
    pytest.fail("supd never caught SIGTERM while still starting (one thread, no socket): the signal is not held")
