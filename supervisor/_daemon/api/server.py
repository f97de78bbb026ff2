"""The listening side: the gRPC server on the Unix socket.

The socket's directory, its lock and its binding are ``socket_dir``'s: the
socket is bound in a private directory and renamed into place with its mode.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from supervisor._daemon.api.limits import ApiLimits, RequestGuard, server_options
from supervisor._daemon.api.listeners import ListenSettings
from supervisor._daemon.api.methods import SERVICE_NAME, STREAM
from supervisor._daemon.api.preserialised import PassSerialised
from supervisor._daemon.api.service import SupervisorService
from supervisor._daemon.api.socket_dir import SocketError, SocketLock, bind_unix, check_private_directory
from supervisor.v1 import supervisor_pb2_grpc as pb_grpc

__all__ = ["SERVICE_NAME", "SocketError", "SocketLock", "build_server", "check_private_directory"]

log = structlog.get_logger("supd.server")
# Methods whose handler may yield a reply already serialised (Stream's LineBatch from the C core).
PRESERIALISED = frozenset({STREAM})


async def build_server(
    service: SupervisorService,
    socket_path: str,
    listen: ListenSettings | None = None,
    limits: ApiLimits | None = None,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
) -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
    """A started gRPC server with our service, grpc.health.v1 and reflection, on the socket (and ``listen``),
    within ``limits``.

    ``interceptors`` see every call first (before authentication), in order.

    Raises ListenError when a TCP listener cannot be bound.
    """
    limits = limits or ApiLimits()
    # Credentials before the guard, so that a caller without them uses no stream slot. PassSerialised is the
    # innermost: every layer outside it keeps the serializer it sets.
    chain = [
        *interceptors,
        *(listen.interceptors() if listen is not None else []),
        RequestGuard(limits),
        PassSerialised(PRESERIALISED),
    ]
    server = grpc.aio.server(
        # grpc.so_reuseport 0: a port another process listens on is an error, not a silently shared port.
        options=[*server_options(limits), ("grpc.so_reuseport", 0)],
        interceptors=chain,
    )
    pb_grpc.add_SupervisorServicer_to_server(service, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
        server,
    )
    publish = bind_unix(server.add_insecure_port, socket_path)
    if listen is not None:
        await listen.serve(server, health_servicer)
    await server.start()
    publish()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, health_servicer
