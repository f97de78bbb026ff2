"""Stale port holders and a crashed supd's children, end to end: real servers on real ports, a real SIGKILL.

A holder is stopped only when supd can prove it is its own (the SUPD_INSTANCE
and SUPD_CHILD marks in its environment, of supd's user), or when the spec
allows any process of supd's user; anything else fails the start, named.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import grpc

from supervisor.testing import SupervisorProcess, accepting, free_port, running_supervisor
from supervisor.v1 import supervisor_pb2 as pb
from supervisor.v1 import supervisor_pb2_grpc as pb_grpc

from conftest import process_gone, spawn, wait_for

SERVERS = str(pathlib.Path(__file__).with_name("probe_servers.py"))




def serve(port: int, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A TCP server on ``port`` that supd did not start."""
    proc = subprocess.Popen(
        [sys.executable, SERVERS, "tcp", "--port", str(port)], stdout=subprocess.DEVNULL,
        env={**os.environ, **(env or {})}, start_new_session=True,
    )
    wait_for(lambda: accepting(port), 20, what=f"a server on {port}")
    return proc


def environ(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        entries = f.read().split(b"\0")
    return dict(e.decode().split("=", 1) for e in entries if b"=" in e)


def info(stub: pb_grpc.SupervisorStub, name: str) -> pb.ChildInfo:
    return stub.Health(pb.HealthRequest(name=name), timeout=5).children[0]


def events(stub: pb_grpc.SupervisorStub, name: str, kind: int) -> list[pb.Event]:
    stream = stub.Stream(pb.StreamRequest(name=name), timeout=10)
    return [m.event for m in stream if m.HasField("event") and m.event.kind == kind]


def test_children_carry_supd_identity(stub: pb_grpc.SupervisorStub) -> None:
    child = spawn(stub, "marked", ["sleep", "100"])
    marks = environ(child.pid)
    assert marks["SUPD_CHILD"] == "marked" and len(marks["SUPD_INSTANCE"]) == 32


def test_a_holder_supd_cannot_prove_is_its_own_is_named_and_left_alone(stub: pb_grpc.SupervisorStub) -> None:
    port = free_port()
    stranger = serve(port)
    try:
        child = spawn(stub, "web", [sys.executable, SERVERS, "tcp", "--port", str(port)],
                      ports=[pb.Port(port=port)], restart=pb.RESTART_POLICY_NEVER)
        assert child.state == pb.CHILD_STATE_FATAL
        assert f"port {port}/tcp is held by pid {stranger.pid}" in child.fatal_reason
        assert "probe_servers.py tcp" in child.fatal_reason and "port_holders = same-user" in child.fatal_reason
        assert stranger.poll() is None, "a process supd cannot prove is its own is never signalled"
    finally:
        stranger.kill()
        stranger.wait()


def test_same_user_lets_supd_stop_a_stale_holder_and_says_so(stub: pb_grpc.SupervisorStub) -> None:
    port = free_port()
    stale = serve(port)
    spawn(stub, "web", [sys.executable, SERVERS, "tcp", "--port", str(port)], ports=[pb.Port(port=port)],
          port_holders=pb.PORT_HOLDERS_SAME_USER, stop_grace_seconds=2)
    assert stale.wait(10) == 0, "the stale holder got SIGTERM and exited cleanly"
    child = wait_for(lambda: (c := info(stub, "web")).state == pb.CHILD_STATE_RUNNING and accepting(port) and c, 20,
                     what="the child on the freed port")
    (reaped,) = events(stub, "web", pb.Event.KIND_PORT_HOLDER_REAPED)
    assert reaped.pid == stale.pid and f"held {port}/tcp: stopped by SIGTERM" in reaped.message
    assert child.pid != stale.pid


def test_an_earlier_instance_of_the_child_is_reaped_by_its_marks(stub: pb_grpc.SupervisorStub) -> None:
    marks = environ(spawn(stub, "probe-env", ["sleep", "100"]).pid)
    port = free_port()
    # An escaped process of an earlier generation of "web": it carries supd's marks for "web".
    escaped = serve(port, {"SUPD_INSTANCE": marks["SUPD_INSTANCE"], "SUPD_CHILD": "web"})
    other = free_port()
    not_web = serve(other, {"SUPD_INSTANCE": marks["SUPD_INSTANCE"], "SUPD_CHILD": "api"})
    try:
        spawn(stub, "web", [sys.executable, SERVERS, "tcp", "--port", str(port)], ports=[pb.Port(port=port)])
        assert escaped.wait(10) == 0
        with_wrong_child = spawn(stub, "web2", ["sleep", "100"], ports=[pb.Port(port=other)])
        assert with_wrong_child.state == pb.CHILD_STATE_FATAL and f"pid {not_web.pid}" in with_wrong_child.fatal_reason
        assert not_web.poll() is None, "marks of another child prove nothing about this one"
    finally:
        not_web.kill()
        not_web.wait()


def test_after_supd_is_sigkilled_its_children_are_stopped_and_started_once_on_their_ports(
    tmp_path: pathlib.Path,
) -> None:
    port = free_port()
    config = tmp_path / "supd.toml"
    config.write_text(
        f'[children.web]\nargv = ["{sys.executable}", "{SERVERS}", "tcp", "--port", "{port}"]\n'
        f'ports = [{port}]\nrestart = "always"\n'
        '[children.quiet]\nargv = ["sleep", "1000"]\n'
    )
    with running_supervisor(tmp_path, ["--config", str(config)]) as first:
        stub = first.stub()
        old = {n: wait_for(lambda n=n: (c := info(stub, n)).pid and c, 20, what=n) for n in ("web", "quiet")}
        wait_for(lambda: accepting(port), 20, what="web listening")
        first.proc.kill()
        first.proc.wait(10)
    assert not process_gone(old["quiet"].pid), "SIGKILL of supd leaves its children running"
    with running_supervisor(tmp_path, ["--config", str(config)]) as second:
        stub = second.stub()
        for name in ("web", "quiet"):
            assert wait_for(lambda n=name: process_gone(old[n].pid), 20, what=f"the old {name} to be stopped")
        new = {n: wait_for(lambda n=n: (c := info(stub, n)).pid and c, 20, what=n) for n in ("web", "quiet")}
        wait_for(lambda: accepting(port), 20, what="the new web on the same port")
        assert all(new[n].pid != old[n].pid and new[n].generation == 1 for n in new), "each started once"
        assert info(stub, "web").restart_count == 0, "the new web never met its old self on the port"
        assert "supd.previous_children.found" in second.stderr_text()
        children_of_supd = _children_of(second.proc.pid)
        assert sorted(children_of_supd) == sorted(c.pid for c in new.values()), "nothing started twice"


def _children_of(pid: int) -> list[int]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found += [int(x) for x in f.read().split()]
    return found


def test_a_port_held_by_another_live_child_is_a_conflict(stub: pb_grpc.SupervisorStub, sup: SupervisorProcess) -> None:
    port = free_port()
    spawn(stub, "first", [sys.executable, SERVERS, "tcp", "--port", str(port)], ports=[pb.Port(port=port)])
    wait_for(lambda: accepting(port), 20, what="first listening")
    second = spawn(stub, "second", ["sleep", "100"], ports=[pb.Port(port=port)], port_holders=pb.PORT_HOLDERS_SAME_USER)
    assert second.state == pb.CHILD_STATE_FATAL and "a running child of this supd (first)" in second.fatal_reason
    assert info(stub, "first").state == pb.CHILD_STATE_RUNNING, "supd never stops its own other children"
    try:
        spawn(stub, "bad", ["sleep", "1"], ports=[pb.Port(port=port, protocol="sctp")])
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "spec.ports[0]" in err.details()
    else:
        raise AssertionError("a port with an unknown protocol must be refused")


def test_why_a_start_failed_shows_in_health_while_backing_off(
    stub: pb_grpc.SupervisorStub, sup: SupervisorProcess
) -> None:
    port = free_port()
    stranger = serve(port)
    try:
        spawn(stub, "web", ["sleep", "100"], ports=[pb.Port(port=port)], restart=pb.RESTART_POLICY_ALWAYS,
              backoff=pb.Backoff(initial_seconds=5))
        child = info(stub, "web")
        assert child.state == pb.CHILD_STATE_BACKOFF and f"held by pid {stranger.pid}" in child.last_start_error
        assert child.health == pb.CHILD_HEALTH_DOWN and "start failed: port" in child.health_reason
        shown = subprocess.run([sys.executable, "-m", "supervisor.cli", "--addr", sup.address, "health", "web"],
                               capture_output=True, text=True, timeout=60, check=False)
        assert shown.returncode == 8 and f"start error: port {port}/tcp is held by pid {stranger.pid}" in shown.stdout
    finally:
        stranger.kill()
        stranger.wait()
