"""Caddy, the proxy of the seed stories, run for real under supd: its JSON logs, its admin API, its stop."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import urllib.error
import urllib.request

import pytest

from supervisor.testing import free_port, running_supervisor
from supervisor.v1 import supervisor_pb2 as pb
from supervisor.v1 import supervisor_pb2_grpc as pb_grpc

from conftest import spawn, wait_for
from otlp_receiver import GrpcReceiver, attributes

CADDY = shutil.which("caddy")
# Skipped on a developer machine without caddy; in CI (which installs it) a missing caddy fails.
pytestmark = pytest.mark.skipif(CADDY is None and not os.environ.get("CI"), reason="caddy is not installed")



def admin_status(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/config/", timeout=2) as reply:
            return reply.status
    except (urllib.error.URLError, ConnectionError):
        return 0


def test_caddy_logs_are_exported_with_their_levels_and_it_stops_cleanly(tmp_path: pathlib.Path):
    assert CADDY, "caddy is missing: .ci/run installs it with apt-get"
    port = free_port()
    config = tmp_path / "caddy.json"
    config.write_text(json.dumps({"admin": {"listen": f"127.0.0.1:{port}"}}))
    with GrpcReceiver() as receiver:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_EXPORTER_OTLP_INSECURE": "true"}
        with running_supervisor(tmp_path, env=env) as sup, sup.channel() as channel:
            stub = pb_grpc.SupervisorStub(channel)
            caddy_env = {"XDG_DATA_HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
            spawn(stub, "caddy", [CADDY, "run", "--config", str(config)], env=caddy_env, stop_grace_seconds=20)
            wait_for(lambda: admin_status(port) == 200, timeout=20, what="caddy's admin API")
            reply = stub.Stop(pb.StopRequest(name="caddy"), timeout=30)
            assert reply.exit.exited and reply.exit.code == 0 and not reply.exit.killed_after_grace
            assert reply.exit.requested

            def caddy_records() -> list:
                return [r for r in list(receiver.received.records)
                        if attributes(r.attributes).get("supd.child.name") == "caddy"]

            wait_for(lambda: any("byeee" in r.body.string_value for r in caddy_records()), what="caddy's goodbye")
            records = caddy_records()
            by_msg = {json.loads(r.body.string_value)["msg"]: r for r in records}
            assert by_msg["admin endpoint started"].severity_number == 9  # INFO, from caddy's "level"
            assert by_msg["exiting; byeee!! 👋"].severity_number == 13  # WARN, and the emoji survives
            assert all(attributes(r.attributes)["log.iostream"] == "stderr" for r in records)
