"""``grpc.health.v1`` per child: a child's name is SERVING while the child is ready.

The empty service name (and ``supervisor.v1.Supervisor``) report supd itself.
A child's name reports SERVING only while the child is READY, NOT_SERVING
otherwise, and SERVICE_UNKNOWN once it is removed; a Kubernetes gRPC probe can
then target one child (``grpc: {port, service: web}``). A name never declared
is NOT_FOUND for Check and SERVICE_UNKNOWN for Watch, as the health protocol
says (https://github.com/grpc/grpc/blob/master/doc/health-checking.md).

Changes arrive as names (``changed``); one task recomputes and publishes them,
because the servicer's ``set`` is a coroutine and the callers are not.
"""

from __future__ import annotations

from collections.abc import Callable

import anyio
import structlog
from grpc_health.v1 import health, health_pb2

__all__ = ["HealthBoard"]

log = structlog.get_logger("supd.health")


class HealthBoard:
    """Publishes each child's readiness to the grpc.health.v1 servicer."""

    def __init__(
        self, servicer: health.aio.HealthServicer, ready: Callable[[str], bool | None], reserved: frozenset[str]
    ) -> None:
        """``ready(name)``: True/False for a child, None when there is no such child any more.

        ``reserved`` names belong to supd's own services; a child of such a name is not published.
        """
        self._servicer = servicer
        self._ready = ready
        self._reserved = reserved
        self._published: dict[str, int] = {}
        self._pending: set[str] = set()
        self._wake = anyio.Event()

    def changed(self, name: str) -> None:
        """The child ``name`` may have changed (state, probes, stored state): publish it again if so."""
        if name in self._reserved:
            return
        self._pending.add(name)
        self._wake.set()

    async def run(self) -> None:
        """Publish changes until cancelled."""
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            names, self._pending = self._pending, set()
            for name in sorted(names):
                await self._publish(name)

    async def _publish(self, name: str) -> None:
        ready = self._ready(name)
        if ready is None:
            if self._published.pop(name, None) is None:
                return
            status = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        else:
            status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
            if self._published.get(name) == status:
                return
            self._published[name] = status
        await self._servicer.set(name, status)
        log.debug("health.published", child=name, status=health_pb2.HealthCheckResponse.ServingStatus.Name(status))
