"""The Supervisor gRPC service: validate, call the registry, answer.

Errors become statuses in one place (``_boundary``): a SupervisorError carries
its own code and a message a person can act on; anything else is a bug, logged
with its traceback and answered INTERNAL. Nothing is swallowed.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import grpc
import structlog

from supervisor import __version__
from supervisor._daemon.api.abridge import budget_for
from supervisor._daemon.api.convert import child_to_proto, exit_to_proto, revision_to_proto
from supervisor._daemon.api.limits import status_message
from supervisor._daemon.children.apply import Applier, declared_of
from supervisor._daemon.children.driver import ChildDriver, ChildStatistics
from supervisor._daemon.children.registry import Registry
from supervisor._daemon.health.assess import Health, assess
from supervisor._daemon.output.records import ExitRecord
from supervisor._daemon.output.sinks import STDERR, STDOUT
from supervisor._daemon.output.stream import Reply, read_stream
from supervisor._daemon.telemetry.log_writer import log_dropped_events
from supervisor._daemon.telemetry.tracing import NO_SPANS, SpanTracer
from supervisor._fields import shown
from supervisor.errors import FailedPrecondition, InvalidArgument, SupervisorError, Unimplemented
from supervisor.spec import spec_from_proto, spec_to_proto
from supervisor.v1 import supervisor_pb2 as pb
from supervisor.v1 import supervisor_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from supervisor._daemon.state.keeper import StateKeeper
    from supervisor._daemon.telemetry.otlp.export import LineExporter

__all__ = ["SupervisorService"]

log = structlog.get_logger("supd.service")
Req = TypeVar("Req")
Resp = TypeVar("Resp")
# The largest spec GetSpec answers with: a client's default 4 MiB receive limit less room for the envelope.
MAX_SPEC_ANSWER_BYTES = 4 * 1024 * 1024 - 64 * 1024
Handler = Callable[[Any, Req, grpc.aio.ServicerContext[Any, Any]], Awaitable[Resp]]


async def _abort(context: grpc.aio.ServicerContext[Any, Any], rpc: str, exc: Exception) -> NoReturn:
    """The one place errors become statuses: ours carry their code; anything else is a logged INTERNAL.

    The message is cut to ``limits.MAX_STATUS_BYTES``: a longer one (a child's 4 KiB rejection of a state, in
    replacement characters) reached clients as RESOURCE_EXHAUSTED.
    """
    if isinstance(exc, SupervisorError):
        log.info("rpc.rejected", rpc=rpc, code=exc.code.name, message=exc.message)
        await context.abort(exc.code, status_message(exc.message))
    else:
        log.error("rpc.failed", rpc=rpc, exc_info=exc)
        await context.abort(grpc.StatusCode.INTERNAL, status_message(f"internal error in {rpc}: {exc!r}"))
    raise AssertionError("unreachable: abort raises") from exc


def _boundary(method: Handler[Req, Resp]) -> Handler[Req, Resp]:
    """Unary handlers: every error leaves through ``_abort``."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Req, context: grpc.aio.ServicerContext[Any, Any]) -> Resp:
        try:
            return await method(self, request, context)
        except Exception as exc:  # noqa: BLE001 - the error boundary: _abort logs it and answers a status
            await _abort(context, method.__name__, exc)

    return wrapper


# Revisions are SQLite integers (signed 64-bit); the proto's uint64 allows more.
MAX_REVISION = 2**63 - 1


def _revision(field: str, value: int) -> int:
    """``value`` when it can be a stored revision; InvalidArgument naming ``field`` otherwise."""
    if value > MAX_REVISION:
        raise InvalidArgument(f"{field}: must be at most {MAX_REVISION}, got {value}")
    return value


def _copy_exit(target: pb.ExitStatus, ended: ExitRecord | None) -> None:
    """Fill ``target`` with the exit of the process an operation just ended, if it ended one."""
    if ended is not None:
        target.CopyFrom(exit_to_proto(ended))


class SupervisorService(pb_grpc.SupervisorServicer):
    """Every RPC of supervisor.v1.Supervisor over the registry."""

    def __init__(
        self,
        registry: Registry,
        tracer: SpanTracer | None = None,
        exporter: LineExporter | None = None,
        shutdown: Callable[[], float] | None = None,
    ) -> None:
        """``shutdown`` starts supd's ordered shutdown and returns the seconds left until exit."""
        self._registry = registry
        self._tracer = tracer or NO_SPANS
        self._exporter = exporter
        self._shutdown = shutdown
        self._started = time.monotonic()
        self.applier = Applier(registry)  # shared with the SIGHUP re-apply of --config: one apply at a time

    def _infos(self, children: list[ChildDriver]) -> list[pb.ChildInfo]:
        """Snapshots of ``children`` with their export counts from one consistent exporter snapshot."""
        export = self._exporter.statistics().children if self._exporter is not None else {}
        keeper = self._registry.keeper
        budget = budget_for(len(children))
        return [
            child_to_proto(
                stats := child.statistics(),
                export.get(child.name),
                keeper.status(child.name) if keeper is not None else None,
                self._assess(child, stats),
                budget,
            )
            for child in children
        ]

    def _assess(self, child: ChildDriver, stats: ChildStatistics) -> tuple[Health, str]:
        keeper = self._registry.keeper
        if keeper is None or keeper.applied(child):
            return assess(stats)
        st = keeper.status(child.name)
        reason = st.error or f"stored state revision {st.accepted} is not applied to this process yet"
        return assess(stats, state_applied=False, state_reason=reason)

    def child_ready(self, name: str) -> bool | None:
        """Whether the child ``name`` is ready (grpc.health.v1); None when there is no such child."""
        try:
            child = self._registry.get(name)
        except SupervisorError:
            return None
        return self._assess(child, child.statistics())[0] is Health.READY

    def _keeper(self) -> StateKeeper:
        keeper = self._registry.keeper
        if keeper is None:
            raise Unimplemented("this supd runs without a state store; stored state is not supported")
        return keeper

    @_boundary
    async def Spawn(self, request: pb.SpawnRequest, context: Any) -> pb.SpawnResponse:
        with self._tracer.start_as_current_span("Spawn", attributes={"supd.child.name": request.spec.name}):
            spec = spec_from_proto(request.spec)
            child = await self._registry.spawn(spec, replace=request.replace)
            return pb.SpawnResponse(child=self._infos([child])[0])

    def _stream_start(self, request: pb.StreamRequest) -> tuple[ChildDriver, int, frozenset[int]]:
        """The child, the first sequence number and the streams a Stream request asks for."""
        child = self._registry.get(request.name)
        ring = child.ring
        streams = frozenset(int(s) for s in request.streams) or frozenset({STDOUT, STDERR})
        if not streams <= {STDOUT, STDERR}:
            raise InvalidArgument(f"streams: must be STDOUT or STDERR, got {shown(sorted(streams))}")
        which = request.WhichOneof("start")
        if which == "from_seq":
            start = max(request.from_seq, 1)
            if start > ring.next_seq:
                raise InvalidArgument(
                    f"from_seq: {start} is beyond the newest record (next is {ring.next_seq});"
                    " sequence numbers restart when supd restarts"
                )
            return child, start, streams
        if which == "tail":
            return child, ring.seq_of_tail(request.tail, streams) if request.tail else ring.next_seq, streams
        return child, ring.oldest_seq, streams

    # Yields serialised LineBatch replies too (api/preserialised.py), which the generated stub's type omits.
    async def Stream(self, request: pb.StreamRequest, context: Any) -> AsyncIterator[Reply]:  # type: ignore[override]
        try:
            child, start, streams = self._stream_start(request)
        except Exception as exc:  # noqa: BLE001 - the error boundary: _abort logs it and answers a status
            await _abort(context, "Stream", exc)
        log.debug("stream.opened", child=child.name, start=start, follow=request.follow)
        try:
            async for message in read_stream(child.ring, start, request.follow, streams):
                yield message
        except Exception as exc:  # noqa: BLE001 - the error boundary, as for unary calls
            if context.done():
                # The client went away while a write was blocked (ExecuteBatchError): not a failure of ours.
                log.debug("stream.client_gone", child=child.name, error=repr(exc))
                return
            await _abort(context, "Stream", exc)
        finally:
            # Runs for every ending: done, client cancelled (GeneratorExit or
            # CancelledError at the yield), or a failed write.
            log.debug("stream.closed", child=child.name)

    @_boundary
    async def Health(self, request: pb.HealthRequest, context: Any) -> pb.HealthResponse:
        children = [self._registry.get(request.name)] if request.name else self._registry.all()
        return pb.HealthResponse(
            children=self._infos(children),
            supervisor_uptime_seconds=time.monotonic() - self._started,
            version=__version__,
            log_dropped_events=log_dropped_events(),
        )

    @_boundary
    async def Reload(self, request: pb.ReloadRequest, context: Any) -> pb.ReloadResponse:
        with self._tracer.start_as_current_span("Reload", attributes={"supd.child.name": request.name}):
            child = self._registry.get(request.name)
            left = context.time_remaining()
            deadline = time.monotonic() + left if left is not None else None
            has_expected = request.HasField("expected_revision")
            expected = _revision("expected_revision", request.expected_revision) if has_expected else None
            revision, done = await self._keeper().reload(
                child, request.state, request.content_type, expected, deadline
            )
            return pb.ReloadResponse(revision=revision, attempts=done.attempts, child=self._infos([child])[0])

    @_boundary
    async def GetState(self, request: pb.GetStateRequest, context: Any) -> pb.GetStateResponse:
        self._registry.get(request.name)
        stored, history = await self._keeper().get(request.name, _revision("revision", request.revision))
        response = pb.GetStateResponse(history=[revision_to_proto(r, with_state=False) for r in history])
        if stored is not None:
            response.revision.CopyFrom(revision_to_proto(stored))
        return response

    @_boundary
    async def Stop(self, request: pb.StopRequest, context: Any) -> pb.StopResponse:
        with self._tracer.start_as_current_span("Stop", attributes={"supd.child.name": request.name}):
            child, ended = await self._registry.stop(request.name, request.grace_seconds)
        response = pb.StopResponse(child=self._infos([child])[0])
        _copy_exit(response.exit, ended)
        return response

    @_boundary
    async def Signal(self, request: pb.SignalRequest, context: Any) -> pb.SignalResponse:
        await self._registry.signal(request.name, request.signal, request.group)
        return pb.SignalResponse()

    @_boundary
    async def Restart(self, request: pb.RestartRequest, context: Any) -> pb.RestartResponse:
        with self._tracer.start_as_current_span("Restart", attributes={"supd.child.name": request.name}):
            child, ended = await self._registry.restart(request.name, request.grace_seconds)
        response = pb.RestartResponse(child=self._infos([child])[0])
        _copy_exit(response.exit, ended)
        return response

    @_boundary
    async def Remove(self, request: pb.RemoveRequest, context: Any) -> pb.RemoveResponse:
        _, ended = await self._registry.remove(request.name, request.grace_seconds)
        response = pb.RemoveResponse()
        _copy_exit(response.exit, ended)
        return response

    @_boundary
    async def List(self, request: pb.ListRequest, context: Any) -> pb.ListResponse:
        return pb.ListResponse(children=self._infos(self._registry.all()))

    @_boundary
    async def GetSpec(self, request: pb.GetSpecRequest, context: Any) -> pb.GetSpecResponse:
        spec = spec_to_proto(self._registry.get(request.name).spec)
        if spec.ByteSize() > MAX_SPEC_ANSWER_BYTES:
            raise FailedPrecondition(
                f"the spec of child {request.name!r} is {spec.ByteSize()} bytes, more than the"
                f" {MAX_SPEC_ANSWER_BYTES} a client takes by default; Health shows it abridged"
            )
        return pb.GetSpecResponse(spec=spec)

    @_boundary
    async def Apply(self, request: pb.ApplyRequest, context: Any) -> pb.ApplyResponse:
        with self._tracer.start_as_current_span("Apply"):
            declared = declared_of(request)
            return await self.applier.apply(declared, prune=request.prune, dry_run=request.dry_run)

    @_boundary
    async def Shutdown(self, request: pb.ShutdownRequest, context: Any) -> pb.ShutdownResponse:
        if self._shutdown is None:
            raise Unimplemented("Shutdown: this server was started without a shutdown handler")
        left = self._shutdown()
        log.info("supd.shutdown.requested", deadline=left)
        return pb.ShutdownResponse(pid=os.getpid(), deadline_seconds=left)
