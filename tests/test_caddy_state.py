"""Stored state against the real Caddy 2.6: Reload through its admin API's ``POST /load``, and the replay.

Caddy starts with a config holding only its admin endpoint (on a free port), so
it serves nothing until supd delivers a config. Caddy's ``/load`` replaces the
whole config, the ``admin`` block included, so every config sent here keeps
``"admin": {"listen": ...}`` on the same address, or Caddy would move its admin
endpoint away from the delivery URL.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import signal
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from supervisor.testing import free_port, running_supervisor
from supervisor.v1 import supervisor_pb2 as pb
from supervisor.v1 import supervisor_pb2_grpc as pb_grpc

from conftest import Follower, process_gone, spawn, wait_for

CADDY = shutil.which("caddy")
# Skipped on a developer machine without caddy; in CI (which installs it) a missing caddy fails.
pytestmark = pytest.mark.skipif(CADDY is None and not os.environ.get("CI"), reason="caddy is not installed")

# Direct connections only: a proxy from the environment must not answer for Caddy.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))




def caddy_config(admin: int, http: int, body: str) -> dict[str, Any]:
    """A full Caddy config: the admin endpoint where it is, and a server on ``http`` answering /hello with body."""
    return {
        "admin": {"listen": f"127.0.0.1:{admin}"},
        "apps": {"http": {"servers": {"test": {
            "listen": [f"127.0.0.1:{http}"],
            "routes": [{
                "match": [{"path": ["/hello"]}],
                "handle": [{"handler": "static_response", "body": body}],
            }],
        }}}},
    }


def fetch(port: int, path: str) -> tuple[int, bytes]:
    """(status, body) of a GET to 127.0.0.1:port; (0, b"") when nothing answers."""
    try:
        with _OPENER.open(f"http://127.0.0.1:{port}{path}", timeout=2) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, b""


def info(stub: pb_grpc.SupervisorStub) -> pb.ChildInfo:
    return stub.Health(pb.HealthRequest(name="caddy"), timeout=5).children[0]


def reload(stub: pb_grpc.SupervisorStub, state: bytes) -> pb.ReloadResponse:
    return stub.Reload(pb.ReloadRequest(name="caddy", state=state, content_type="application/json"), timeout=30)


class Caddy:
    """Caddy run by supd (restart ALWAYS, short backoff), its admin API as the http state delivery."""

    def __init__(self, tmp_path: pathlib.Path) -> None:
        assert CADDY, "caddy is missing: .ci/run installs it with apt-get"
        self.tmp_path = tmp_path
        self.admin, self.http = free_port(), free_port()

    def spawn(self, stub: pb_grpc.SupervisorStub) -> None:
        self.stub = stub
        initial = self.tmp_path / "caddy-admin-only.json"  # no_caddy_left_behind finds Caddy by this path
        initial.write_text(json.dumps({"admin": {"listen": f"127.0.0.1:{self.admin}"}}))
        delivery = pb.StateDelivery(
            http=pb.HttpDelivery(url=f"http://127.0.0.1:{self.admin}/load", timeout_seconds=5),
            retry=pb.DeliveryRetry(retries=5, backoff=pb.Backoff(initial_seconds=0.05, max_seconds=0.2)),
            ready_timeout_seconds=15,
        )
        # caddy run ignores its autosaved config (no --resume): a restarted Caddy holds only the admin block.
        home = str(self.tmp_path)
        env = {"XDG_DATA_HOME": home, "XDG_CONFIG_HOME": home, "HOME": home, "PATH": "/usr/bin:/bin"}
        assert CADDY
        spawn(
            stub, "caddy", [CADDY, "run", "--config", str(initial)], env=env,
            restart=pb.RESTART_POLICY_ALWAYS, backoff=pb.Backoff(initial_seconds=0.05, max_seconds=0.2),
            stop_grace_seconds=10, state_delivery=delivery,
        )
        wait_for(lambda: fetch(self.admin, "/config/")[0] == 200, 15, what="caddy's admin API")

    def config(self, body: str) -> dict[str, Any]:
        return caddy_config(self.admin, self.http, body)

    def served(self) -> tuple[int, bytes]:
        return fetch(self.http, "/hello")


def caddy_pids(config: pathlib.Path) -> list[int]:
    """Pids of the processes running Caddy with ``config`` (a path unique to one test)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                argv = pathlib.Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue  # ended meanwhile
            if str(config).encode() in argv:
                pids.append(int(entry))
    return pids


@pytest.fixture(autouse=True)
def no_caddy_left_behind(tmp_path: pathlib.Path) -> Iterator[None]:
    """After the test and its supd are gone: a Caddy that outlived a supd which died is killed, not leaked."""
    yield
    for pid in caddy_pids(tmp_path / "caddy-admin-only.json"):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def caddy(stub: pb_grpc.SupervisorStub, tmp_path: pathlib.Path) -> Caddy:
    c = Caddy(tmp_path)
    c.spawn(stub)
    return c


def test_a_reloaded_config_is_served_by_caddy(caddy: Caddy) -> None:
    assert caddy.served() == (0, b""), "caddy serves nothing before it is given a config"
    first = caddy.config("hello from caddy")
    resp = reload(caddy.stub, json.dumps(first).encode())
    assert (resp.revision, resp.attempts) == (1, 1)
    assert caddy.served() == (200, b"hello from caddy")
    status, held = fetch(caddy.admin, "/config/")
    assert status == 200 and json.loads(held) == first, "caddy holds exactly the delivered config"
    child = info(caddy.stub)
    assert (child.state_revision, child.state_applied_revision, child.state_error) == (1, 1, "")
    assert child.ready and child.state_applied_time.seconds > 0
    # /load replaces the whole config: a second revision is served in place of the first.
    assert reload(caddy.stub, json.dumps(caddy.config("second revision")).encode()).revision == 2
    assert caddy.served() == (200, b"second revision")


def test_bad_json_gets_caddys_own_400_and_commits_nothing(caddy: Caddy) -> None:
    good = json.dumps(caddy.config("still the good one")).encode()
    reload(caddy.stub, good)
    with pytest.raises(grpc.RpcError) as err:
        reload(caddy.stub, b"{bad")
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = err.value.details()
    assert "rejected state revision 2" in details and "HTTP 400" in details
    # Caddy's (Go's) own words, which no part of supd writes.
    assert "invalid character 'b' looking for beginning of object key string" in details, details
    got = caddy.stub.GetState(pb.GetStateRequest(name="caddy"), timeout=5)
    assert got.revision.revision == 1 and got.revision.state == good
    assert [(h.revision, h.accepted) for h in got.history] == [(2, False), (1, True)]
    assert "invalid character" in got.history[0].error
    child = info(caddy.stub)
    assert (child.state_revision, child.state_applied_revision) == (1, 1) and child.ready
    assert caddy.served() == (200, b"still the good one"), "caddy keeps the config it had"


def test_a_sigkilled_caddy_is_restarted_and_serves_its_routes_again_without_a_client_call(caddy: Caddy) -> None:
    reload(caddy.stub, json.dumps(caddy.config("back again")).encode())
    old = info(caddy.stub)
    assert old.pid and caddy.served() == (200, b"back again")
    follower = Follower(caddy.stub, pb.StreamRequest(name="caddy", follow=True, tail=0))
    os.kill(old.pid, signal.SIGKILL)
    wait_for(lambda: process_gone(old.pid), 10, what="the killed caddy to be gone")
    # No Reload from here on: supd restarts Caddy and delivers the accepted revision to the new process.
    seen: list[pb.ChildInfo] = []

    def ready() -> pb.ChildInfo | None:
        c = info(caddy.stub)
        seen.append(c)
        return c if c.ready and c.generation > old.generation else None

    child = wait_for(ready, 15, what="the restarted caddy to be ready")
    early = [(c.generation, c.state_revision, c.state_applied_revision)
             for c in seen if c.ready and c.state_applied_revision != c.state_revision]
    assert not early, f"ready before its state was applied (generation, revision, applied): {early}"
    assert caddy.served() == (200, b"back again"), "ready, so the restarted caddy serves /hello"
    assert child.pid != old.pid and child.state == pb.CHILD_STATE_RUNNING
    assert child.state_applied_revision == child.state_revision == 1 and child.state_error == ""
    applied = follower.wait_event(pb.Event.KIND_STATE_APPLIED)
    assert any(e.kind == pb.Event.KIND_STATE_APPLIED and e.generation == child.generation and e.revision == 1
               for e in applied)
    follower.cancel()
    status, held = fetch(caddy.admin, "/config/")
    assert status == 200 and json.loads(held) == caddy.config("back again")


def test_plain_http_delivery_does_not_depend_on_tls_settings(tmp_path: pathlib.Path) -> None:
    """Caddy's admin API is plain HTTP: a CA bundle setting that does not fit (a pod's SSL_CERT_FILE for
    another image) must neither fail its Reload nor take supd down when it replays Caddy's state."""
    caddy = Caddy(tmp_path)
    config = json.dumps(caddy.config("no TLS involved")).encode()
    with running_supervisor(tmp_path) as first:
        caddy.spawn(first.stub())
        reload(caddy.stub, config)
    # The same store, now with a CA bundle setting that names no file: the replay at start, then a Reload.
    with running_supervisor(tmp_path, env={"SSL_CERT_FILE": str(tmp_path / "missing-ca.pem")}) as second:
        stub = second.stub()
        wait_for(lambda: second.proc.poll() is not None or caddy.served() == (200, b"no TLS involved"), 15,
                 what="the replay to the re-created caddy")
        assert second.proc.poll() is None, f"supd exited while replaying: {second.stderr_text()[-2000:]}"
        child = wait_for(lambda: (c := info(stub)).ready and c, 10, what="the re-created caddy to be ready")
        assert child.state_applied_revision == child.state_revision == 1
        caddy.stub = stub
        assert reload(stub, json.dumps(caddy.config("reloaded")).encode()).revision == 2
        assert caddy.served() == (200, b"reloaded")
