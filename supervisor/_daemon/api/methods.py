"""The gRPC names supd's policies refer to (roles, metrics, serialisation), each spelled once, from the proto."""

from __future__ import annotations

from supervisor.v1 import supervisor_pb2 as pb

__all__ = ["SERVICE_NAME", "STREAM", "method_path"]

_SERVICE = pb.DESCRIPTOR.services_by_name["Supervisor"]
SERVICE_NAME = _SERVICE.full_name  # "supervisor.v1.Supervisor"


def method_path(method: str) -> str:
    """The path gRPC calls a Supervisor method by, e.g. ``"/supervisor.v1.Supervisor/Stream"``.

    Raises KeyError when the proto has no such method (a misspelling fails at import, not at call time).
    """
    return f"/{SERVICE_NAME}/{_SERVICE.methods_by_name[method].name}"


STREAM = method_path("Stream")
