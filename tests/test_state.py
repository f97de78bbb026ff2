"""Stored state end to end: Reload, GetState, replay after a child's and supd's restart, with real servers.

The child is ``admin_server.py``, an HTTP server shaped like Caddy's admin API
(``POST /load``, 400 on bad JSON, 503 for its first N requests, ``GET
/config/`` shows what it holds). supd, the child and the client are separate
processes talking over real sockets.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

import grpc
import pytest

from supervisor.testing import SupervisorProcess, accepting, free_port, running_supervisor
from supervisor.v1 import supervisor_pb2 as pb
from supervisor.v1 import supervisor_pb2_grpc as pb_grpc

from conftest import Follower, process_gone, spawn, wait_for

ADMIN = str(pathlib.Path(__file__).with_name("admin_server.py"))
ROUTES = {"routes": {"app": "hello from app"}}



def http_delivery(port: int, **retry: Any) -> pb.StateDelivery:
    retry.setdefault("backoff", pb.Backoff(initial_seconds=0.05, max_seconds=0.2))
    return pb.StateDelivery(
        http=pb.HttpDelivery(url=f"http://127.0.0.1:{port}/load", timeout_seconds=5),
        retry=pb.DeliveryRetry(**retry),
        ready_timeout_seconds=20,
    )


def spawn_admin(stub: pb_grpc.SupervisorStub, port: int, *extra: str, name: str = "admin", **retry: Any) -> None:
    spawn(
        stub, name, [sys.executable, ADMIN, "--port", str(port), *extra],
        restart=pb.RESTART_POLICY_ALWAYS, backoff=pb.Backoff(initial_seconds=0.05, max_seconds=0.5),
        stop_grace_seconds=5, state_delivery=http_delivery(port, **retry),
    )
    wait_for(lambda: accepting(port), 20, what=f"admin server on port {port}")



def held(port: int) -> Any:
    """What the admin server holds now (None when it holds nothing or is not up)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/config/", timeout=2) as r:
            return json.loads(r.read())
    except (OSError, urllib.error.URLError):
        return None


def info(stub: pb_grpc.SupervisorStub, name: str) -> pb.ChildInfo:
    return stub.Health(pb.HealthRequest(name=name), timeout=5).children[0]


def reload(stub: pb_grpc.SupervisorStub, name: str, state: bytes, **fields: Any) -> pb.ReloadResponse:
    request = pb.ReloadRequest(name=name, state=state, content_type="application/json", **fields)
    return stub.Reload(request, timeout=30)


def test_reload_delivers_stores_and_reports_ready(stub: pb_grpc.SupervisorStub) -> None:
    port = free_port()
    spawn_admin(stub, port)
    before = info(stub, "admin")
    assert before.ready and before.state_revision == 0, "a child without stored state is ready when it runs"
    resp = reload(stub, "admin", json.dumps(ROUTES).encode())
    assert (resp.revision, resp.attempts) == (1, 1)
    assert held(port) == ROUTES
    child = info(stub, "admin")
    assert (child.state_revision, child.state_applied_revision, child.state_error) == (1, 1, "")
    assert child.ready
    got = stub.GetState(pb.GetStateRequest(name="admin"), timeout=5)
    assert got.revision.state == json.dumps(ROUTES).encode()
    assert got.revision.content_type == "application/json" and got.revision.accepted
    assert [h.revision for h in got.history] == [1]


def test_503s_are_retried_then_succeed(stub: pb_grpc.SupervisorStub) -> None:
    port = free_port()
    spawn_admin(stub, port, "--fail-first", "2")
    follower = Follower(stub, pb.StreamRequest(name="admin", follow=True, tail=0))
    resp = reload(stub, "admin", json.dumps(ROUTES).encode())
    assert resp.attempts == 3
    assert held(port) == ROUTES
    failed = follower.wait_event(pb.Event.KIND_STATE_FAILED, count=2)
    assert all("503" in e.message for e in failed if e.kind == pb.Event.KIND_STATE_FAILED)
    follower.wait_event(pb.Event.KIND_STATE_APPLIED)
    follower.cancel()


def test_a_400_is_not_retried_not_committed_and_its_body_reaches_the_caller(stub: pb_grpc.SupervisorStub) -> None:
    port = free_port()
    spawn_admin(stub, port)
    reload(stub, "admin", json.dumps(ROUTES).encode())
    with pytest.raises(grpc.RpcError) as err:
        reload(stub, "admin", b"{bad")
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "HTTP 400" in err.value.details() and "rejected state revision 2" in err.value.details()
    got = stub.GetState(pb.GetStateRequest(name="admin"), timeout=5)
    assert got.revision.revision == 1, "the rejected revision must not become the accepted one"
    assert [(h.revision, h.accepted) for h in got.history] == [(2, False), (1, True)]
    assert "HTTP 400" in got.history[0].error
    assert held(port) == ROUTES
    stats = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=2).read())
    assert (stats["load"], stats["load_400"]) == (2, 1), "a 400 must not be retried"


def test_compare_and_swap_and_size_bound(stub: pb_grpc.SupervisorStub) -> None:
    port = free_port()
    spawn_admin(stub, port)
    assert reload(stub, "admin", b"{}", expected_revision=0).revision == 1
    with pytest.raises(grpc.RpcError) as err:
        reload(stub, "admin", b"{}", expected_revision=0)
    assert err.value.code() == grpc.StatusCode.ABORTED and "accepted revision 1" in err.value.details()
    assert reload(stub, "admin", b"[]", expected_revision=1).revision == 2
    with pytest.raises(grpc.RpcError) as err:
        reload(stub, "admin", b"x" * (10 * 1024 * 1024))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "max_state_bytes" in err.value.details()
    assert stub.GetState(pb.GetStateRequest(name="admin"), timeout=5).revision.revision == 2


def test_reload_refused_without_delivery_or_process(stub: pb_grpc.SupervisorStub) -> None:
    spawn(stub, "plain", ["sleep", "100"])
    with pytest.raises(grpc.RpcError) as err:
        reload(stub, "plain", b"{}")
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "state_delivery" in err.value.details()
    port = free_port()
    spawn_admin(stub, port)
    stub.Stop(pb.StopRequest(name="admin"), timeout=10)
    with pytest.raises(grpc.RpcError) as err:
        reload(stub, "admin", b"{}")
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "no running process" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        reload(stub, "nobody", b"{}")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_sigkilled_child_gets_its_state_again_without_a_client_call(stub: pb_grpc.SupervisorStub) -> None:
    port = free_port()
    spawn_admin(stub, port)
    reload(stub, "admin", json.dumps(ROUTES).encode())
    old = info(stub, "admin")
    follower = Follower(stub, pb.StreamRequest(name="admin", follow=True, tail=0))
    os.kill(old.pid, signal.SIGKILL)
    wait_for(lambda: info(stub, "admin").generation > old.generation and held(port) == ROUTES, 20,
             what="the restarted child to hold the routes again")
    child = wait_for(lambda: (c := info(stub, "admin")).ready and c, 10, what="the child to be ready")
    assert child.state_applied_revision == 1 and child.generation == old.generation + 1
    applied = follower.wait_event(pb.Event.KIND_STATE_APPLIED)
    assert any(e.kind == pb.Event.KIND_STATE_APPLIED and e.generation == child.generation for e in applied)
    follower.cancel()


def test_a_child_whose_state_cannot_be_applied_keeps_running_and_is_not_ready(stub: pb_grpc.SupervisorStub) -> None:
    port = free_port()
    spawn_admin(stub, port)
    reload(stub, "admin", json.dumps(ROUTES).encode())
    old = info(stub, "admin")
    # The restarted server refuses its first 1000 loads: the replay keeps failing, softly.
    stub.Spawn(pb.SpawnRequest(replace=True, spec=pb.ChildSpec(
        name="admin", argv=[sys.executable, ADMIN, "--port", str(port), "--fail-first", "1000"],
        restart=pb.RESTART_POLICY_ALWAYS, state_delivery=http_delivery(port, retries=1),
    )), timeout=10)
    child = wait_for(lambda: (c := info(stub, "admin")).state_error and c, 20, what="a replay error in Health")
    assert child.state == pb.CHILD_STATE_RUNNING and not child.ready
    assert child.state_revision == 1 and child.state_applied_revision == 0 and "503" in child.state_error
    assert child.pid != old.pid


def test_file_delivery_writes_before_start_and_signals_on_reload(
    stub: pb_grpc.SupervisorStub, tmp_path: pathlib.Path
) -> None:
    target = tmp_path / "conf" / "state.json"
    target.parent.mkdir()
    script = (
        f'trap \'echo "HUP $(cat {target})"\' HUP; echo "start $(cat {target} 2>/dev/null)";'
        " while :; do sleep 0.05; done"
    )
    delivery = pb.StateDelivery(file=pb.FileDelivery(path=str(target), mode=0o640, signal=signal.SIGHUP))
    spawn(stub, "filer", ["/bin/sh", "-c", script], restart=pb.RESTART_POLICY_ALWAYS, state_delivery=delivery)
    follower = Follower(stub, pb.StreamRequest(name="filer", follow=True))
    wait_for(lambda: any(b"start" in line for _, line in follower.lines()), 10, what="the child to start")
    reload(stub, "filer", b"v1")
    assert target.read_bytes() == b"v1" and (target.stat().st_mode & 0o777) == 0o640
    wait_for(lambda: any(line == b"HUP v1\n" for _, line in follower.lines()), 10, what="the child to see SIGHUP")
    stub.Restart(pb.RestartRequest(name="filer"), timeout=10)
    wait_for(lambda: any(line == b"start v1\n" for _, line in follower.lines()), 10,
             what="the restarted child to read the state at start")
    assert info(stub, "filer").ready
    follower.cancel()


def test_exec_delivery_accepts_on_exit_0_and_rejects_with_stderr(
    stub: pb_grpc.SupervisorStub, tmp_path: pathlib.Path
) -> None:
    out = tmp_path / "got"
    check = (
        f'cat > {out}.new; if grep -q bad {out}.new; then echo "invalid: bad word" >&2; exit 3; fi; mv {out}.new {out}'
    )
    delivery = pb.StateDelivery(exec=pb.ExecDelivery(argv=["/bin/sh", "-c", check]))
    spawn(stub, "execd", ["sleep", "100"], state_delivery=delivery)
    assert reload(stub, "execd", b"good").revision == 1
    assert out.read_bytes() == b"good"
    with pytest.raises(grpc.RpcError) as err:
        reload(stub, "execd", b"bad")
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "exit 3" in err.value.details() and "invalid: bad word" in err.value.details()
    assert out.read_bytes() == b"good"


def _kill_supd(handle: SupervisorProcess) -> None:
    handle.proc.kill()
    handle.proc.wait(10)


def test_after_supd_is_sigkilled_spawned_children_run_again_with_their_state(tmp_path: pathlib.Path) -> None:
    port = free_port()
    with running_supervisor(tmp_path) as first:
        stub = first.stub()
        spawn_admin(stub, port)
        reload(stub, "admin", json.dumps(ROUTES).encode())
        pid = info(stub, "admin").pid
        _kill_supd(first)
    # supd died with SIGKILL; its child lives on holding the port (reaping it is the port owner's job, not
    # this test's): end it as the pod's restart would.
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: process_gone(pid), 10, what="the orphan to die")
    with running_supervisor(tmp_path) as second:
        stub = second.stub()
        wait_for(lambda: held(port) == ROUTES, 30, what="the re-created child to hold its routes again")
        child = wait_for(lambda: (c := info(stub, "admin")).ready and c, 10, what="ready")
        assert child.state_revision == child.state_applied_revision == 1
        assert stub.GetState(pb.GetStateRequest(name="admin"), timeout=5).revision.state == json.dumps(ROUTES).encode()


def test_config_wins_over_a_stored_spec_of_the_same_name(tmp_path: pathlib.Path) -> None:
    with running_supervisor(tmp_path) as first:
        spawn(first.stub(), "dup", ["sleep", "101"])
        spawn(first.stub(), "kept", ["sleep", "102"])
    config = tmp_path / "supd.toml"
    config.write_text('[children.dup]\nargv = ["sleep", "103"]\n')
    with running_supervisor(tmp_path, ["--config", str(config)]) as second:
        stub = second.stub()
        children = {c.spec.name: list(c.spec.argv) for c in stub.List(pb.ListRequest(), timeout=5).children}
        assert children == {"dup": ["sleep", "103"], "kept": ["sleep", "102"]}
        assert "child.spec.stored_ignored" in second.stderr_text()
        stub.Remove(pb.RemoveRequest(name="kept"), timeout=10)
    with running_supervisor(tmp_path) as third:
        names = [c.spec.name for c in third.stub().List(pb.ListRequest(), timeout=5).children]
        assert names == ["dup"], "a removed child is forgotten; the stored dup spec stays until removed"


def test_supctl_reload_and_state(stub: pb_grpc.SupervisorStub, sup: SupervisorProcess, tmp_path: pathlib.Path) -> None:
    port = free_port()
    spawn_admin(stub, port)
    routes = tmp_path / "routes.json"
    routes.write_text(json.dumps(ROUTES))

    def supctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "supervisor.cli", "--addr", sup.address, *args],
            capture_output=True, text=True, timeout=60, check=False,
        )

    ok = supctl("reload", "admin", "--file", str(routes), "--content-type", "application/json")
    assert ok.returncode == 0 and "state revision 1 accepted" in ok.stdout, ok.stderr
    conflict = supctl("reload", "admin", "--file", str(routes), "--expect-revision", "0")
    assert conflict.returncode == 7 and "accepted revision 1" in conflict.stderr
    assert len(conflict.stderr.strip().splitlines()) == 1
    (tmp_path / "bad.json").write_text("{bad")
    bad = supctl("reload", "admin", "--file", str(tmp_path / "bad.json"))
    assert bad.returncode == 1 and "HTTP 400" in bad.stderr
    shown = supctl("state", "admin")
    assert shown.returncode == 0 and "state revision 1" in shown.stdout and "applied to the running" in shown.stdout
    raw = supctl("state", "admin", "--raw")
    assert raw.returncode == 0 and json.loads(raw.stdout) == ROUTES
    missing = supctl("reload", "admin", "--file", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    # Without --content-type, the file's suffix names the media type (revision 2 was the rejected bad.json).
    guessed = supctl("reload", "admin", "--file", str(routes))
    assert guessed.returncode == 0 and "state revision 3 accepted" in guessed.stdout, guessed.stderr
    assert stub.GetState(pb.GetStateRequest(name="admin"), timeout=10).revision.content_type == "application/json"
    spec = supctl("spec", "admin")
    assert spec.returncode == 0, spec.stderr
    assert json.loads(spec.stdout)["argv"] == list(stub.GetSpec(pb.GetSpecRequest(name="admin"), timeout=10).spec.argv)


def test_a_stopped_child_holds_no_applied_state_and_a_missing_revision_is_named(
    stub: pb_grpc.SupervisorStub, sup: SupervisorProcess, tmp_path: pathlib.Path
) -> None:
    spawn(stub, "f", ["sleep", "100"], state_delivery=pb.StateDelivery(file=pb.FileDelivery(path=str(tmp_path / "s"))))
    reload(stub, "f", b"one")
    assert info(stub, "f").state_applied_revision == 1
    stub.Stop(pb.StopRequest(name="f"), timeout=10)
    stopped = info(stub, "f")
    assert (stopped.state_revision, stopped.state_applied_revision) == (1, 0), "nothing runs to hold it"
    missing = subprocess.run(
        [sys.executable, "-m", "supervisor.cli", "--addr", sup.address, "state", "f", "--revision", "99"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert missing.returncode == 4
    assert missing.stderr.strip() == "supctl: child 'f' has no state revision 99 (kept: 1)"
