"""Stored state against the real Caddy 2.6 beyond the story (``test_caddy_story.py``): TLS settings of the pod.

Caddy runs from ``examples/caddy/`` (ports replaced); its admin API's ``POST /load`` is the http state delivery.
"""

from __future__ import annotations

import pathlib

from caddy_peer import Example, fetch, skip_without_caddy

from supervisor.testing import free_port, running_supervisor
from supervisor.v1 import supervisor_pb2 as pb
from supervisor.v1 import supervisor_pb2_grpc as pb_grpc

from conftest import wait_for

pytestmark = skip_without_caddy


def info(stub: pb_grpc.SupervisorStub) -> pb.ChildInfo:
    return stub.Health(pb.HealthRequest(name="caddy"), timeout=5).children[0]


def reload(stub: pb_grpc.SupervisorStub, state: bytes) -> pb.ReloadResponse:
    return stub.Reload(pb.ReloadRequest(name="caddy", state=state), timeout=30)


def test_plain_http_delivery_does_not_depend_on_tls_settings(tmp_path: pathlib.Path) -> None:
    """Caddy's admin API is plain HTTP: a CA bundle setting that does not fit (a pod's SSL_CERT_FILE for
    another image) must neither fail its Reload nor take supd down when it replays Caddy's state."""
    example = Example(tmp_path / "example", free_port(), free_port())
    args = ["--config", str(example.config)]
    try:
        with running_supervisor(tmp_path, args) as first:
            stub = first.stub()
            wait_for(lambda: fetch(example.admin, "/config/")[0] == 200, 15, what="caddy's admin API")
            reload(stub, example.routes(hello="no TLS involved"))
        # The same store, now with a CA bundle setting that names no file: the replay at start, then a Reload.
        with running_supervisor(tmp_path, args, env={"SSL_CERT_FILE": str(tmp_path / "missing-ca.pem")}) as second:
            stub = second.stub()
            replayed = (200, b"no TLS involved")
            wait_for(lambda: second.proc.poll() is not None or fetch(example.http, "/hello") == replayed,
                     15, what="the replay to the re-created caddy")
            assert second.proc.poll() is None, f"supd exited while replaying: {second.stderr_text()[-2000:]}"
            child = wait_for(lambda: (c := info(stub)).ready and c, 10, what="the re-created caddy to be ready")
            assert child.state_applied_revision == child.state_revision == 1
            assert reload(stub, example.routes(hello="reloaded")).revision == 2
            assert fetch(example.http, "/hello") == (200, b"reloaded")
    finally:
        example.kill_all()
