"""What no client can make supd do: the gRPC server's options, bounds and the guard every call passes.

One place for every bound of the API surface (README "Limits" lists them with their flags):

- message sizes: a request up to ``MAX_RECEIVE_BYTES`` (the largest Reload: 64 MiB of state and its envelope),
  a reply up to ``MAX_SEND_BYTES`` (the largest GetState);
- HTTP/2 streams open at once on one connection (``--max-streams-per-connection``, gRPC's
  ``grpc.max_concurrent_streams``), and response streams (Stream, grpc.health.v1 Watch) open in all
  (``--max-streams``; beyond: RESOURCE_EXHAUSTED naming the flag);
- keepalive: supd pings an idle connection every ``--keepalive-seconds`` and drops it when the ping is not
  answered within ``--keepalive-timeout-seconds``, so a client that died without closing is noticed; a client
  may ping no more often than every ``MIN_PING_INTERVAL_SECONDS``;
- a server-side deadline on every unary call (``deadline_of``): ``--rpc-deadline-seconds`` (default 60), more
  for the calls that may wait out a stop grace or a state delivery, whatever deadline the client set;
- a request that is not a valid protobuf message of its method's type is answered INVALID_ARGUMENT with the
  parser's reason (grpcio's aio server would answer UNKNOWN: it reports any deserializer failure so).
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from supervisor._daemon.children.registry import MAX_STOP_GRACE_SECONDS
from supervisor.delivery import MAX_MAX_STATE_BYTES

__all__ = [
    "MAX_RECEIVE_BYTES",
    "MAX_SEND_BYTES",
    "MAX_STATUS_BYTES",
    "ApiLimits",
    "RequestGuard",
    "deadline_of",
    "server_options",
    "status_message",
]

MiB = 1024 * 1024
# Largest request: a Reload of the largest state a child may take (max_state_bytes at most 64 MiB) plus its
# envelope, so a state too big for its child gets INVALID_ARGUMENT naming the bound, not a transport error.
MAX_RECEIVE_BYTES = MAX_MAX_STATE_BYTES + MiB
# Largest reply: a GetState carrying the largest state; Stream batches are 256 KiB (output/stream.py).
MAX_SEND_BYTES = MAX_MAX_STATE_BYTES + MiB
# Longest status message, in UTF-8 bytes: gRPC percent-encodes every non-ASCII byte (3 characters each), and a
# client refuses trailers over its metadata limit (8 KiB by default), reporting RESOURCE_EXHAUSTED instead of the
# real code. 2 KiB encodes to 6 KiB at most.
MAX_STATUS_BYTES = 2048
# How often a client may ping without data before supd counts a strike (gRPC closes after two strikes).
MIN_PING_INTERVAL_SECONDS = 10.0
# The longest a Reload waits: the largest delivery budget (retry.budget_seconds at most a day) and the
# largest wait for an http endpoint (ready_timeout_seconds at most an hour).
MAX_DELIVERY_SECONDS = 86400.0 + 3600.0
# Unary methods that may wait out a stop grace (Spawn with replace, or reaping a port holder, stops one; Apply
# stops the children it removes and changes).
_STOPPING = frozenset({"Spawn", "Stop", "Restart", "Remove", "Apply"})


@dataclasses.dataclass(frozen=True)
class ApiLimits:
    """The API's bounds that flags set; the defaults are supd's (see ``supd --help``)."""

    max_children: int = 1024
    max_streams: int = 64
    max_streams_per_connection: int = 32
    rpc_deadline_seconds: float = 60.0
    keepalive_seconds: float = 60.0
    keepalive_timeout_seconds: float = 20.0


def server_options(limits: ApiLimits) -> list[tuple[str, int]]:
    """The options ``grpc.aio.server`` takes for ``limits`` (grpc/include/grpc/impl/channel_arg_names.h)."""
    return [
        ("grpc.max_receive_message_length", MAX_RECEIVE_BYTES),
        ("grpc.max_send_message_length", MAX_SEND_BYTES),
        ("grpc.max_concurrent_streams", limits.max_streams_per_connection),
        ("grpc.keepalive_time_ms", round(limits.keepalive_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", round(limits.keepalive_timeout_seconds * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        # grpcio 1.85 closes a connection whose keepalive ping is unanswered only with this set too.
        ("grpc.http2.ping_timeout_ms", round(limits.keepalive_timeout_seconds * 1000)),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", round(MIN_PING_INTERVAL_SECONDS * 1000)),
        ("grpc.http2.max_ping_strikes", 2),
    ]


def deadline_of(method: str, limits: ApiLimits) -> float:
    """Seconds supd lets the unary call ``method`` (``/package.Service/Name``) run before DEADLINE_EXCEEDED.

    ``--rpc-deadline-seconds``; plus the longest stop grace (an hour) for Spawn, Stop, Restart, Remove and Apply; plus
    the longest state delivery (a day and an hour) for Reload.
    """
    name = method.rpartition("/")[2]
    if name in _STOPPING:
        return limits.rpc_deadline_seconds + MAX_STOP_GRACE_SECONDS
    if name == "Reload":
        return limits.rpc_deadline_seconds + MAX_DELIVERY_SECONDS
    return limits.rpc_deadline_seconds


def status_message(text: str) -> str:
    """``text`` cut to ``MAX_STATUS_BYTES`` of UTF-8 at a character boundary, saying so when it was cut."""
    raw = text.encode()
    if len(raw) <= MAX_STATUS_BYTES:
        return text
    return raw[: MAX_STATUS_BYTES - 40].decode(errors="ignore") + f"... ({len(raw)} bytes, cut)"


@dataclasses.dataclass(frozen=True, slots=True)
class _Undecodable:
    """What the guarded deserializer returns for bytes that are no message of the method's type."""

    reason: str


def _decode(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any]:
    def decode(raw: bytes) -> Any:
        if deserializer is None:
            return raw
        try:
            return deserializer(raw)
        except DecodeError as exc:
            return _Undecodable(str(exc) or type(exc).__name__)

    return decode


async def _refuse_undecodable(request: object, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    if isinstance(request, _Undecodable):
        await context.abort(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"{method}: the request is not a valid protobuf message of this method's type: {request.reason}",
        )


Behaviour = Callable[..., Any]


class RequestGuard(grpc.aio.ServerInterceptor):
    """Wraps every method's handler: undecodable requests, the unary deadline and the count of open streams."""

    def __init__(self, limits: ApiLimits) -> None:
        self.limits = limits
        self.open_streams = 0

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(details)
        if handler is None:
            return None
        method: str = details.method
        decode, encode = _decode(handler.request_deserializer), handler.response_serializer
        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(self._unary(handler.unary_unary, method), decode, encode)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(self._stream(handler.unary_stream, method), decode, encode)
        if handler.stream_unary is not None:
            checked = _requests_checked(handler.stream_unary, method)
            return grpc.stream_unary_rpc_method_handler(checked, decode, encode)
        if handler.stream_stream is not None:
            checked = _requests_checked(handler.stream_stream, method)
            return grpc.stream_stream_rpc_method_handler(checked, decode, encode)
        return handler

    def _unary(self, behaviour: Behaviour, method: str) -> Behaviour:
        bound = deadline_of(method, self.limits)

        async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await _refuse_undecodable(request, method, context)
            try:
                async with asyncio.timeout(bound):
                    return await behaviour(request, context)
            except TimeoutError:
                await context.abort(
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    f"{method}: supd ends a call of this method after {bound:g} s (--rpc-deadline-seconds"
                    f" {self.limits.rpc_deadline_seconds:g}, plus what the method may wait out)",
                )

        return unary

    def _stream(self, behaviour: Behaviour, method: str) -> Behaviour:
        """A response-streaming handler counted in ``open_streams``, of the same kind as ``behaviour``.

        grpcio's aio server takes either an async generator or a coroutine that calls ``context.write``
        (grpc.health.v1's Watch is one).
        """

        async def admit(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            await _refuse_undecodable(request, method, context)
            if self.open_streams >= self.limits.max_streams:
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"supd has {self.open_streams} Stream and Watch calls open, its limit: end one, or start supd"
                    f" with a higher --max-streams (now {self.limits.max_streams})",
                )
            self.open_streams += 1

        if inspect.isasyncgenfunction(behaviour):

            async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                await admit(request, context)
                try:
                    async for message in behaviour(request, context):
                        yield message
                finally:
                    self.open_streams -= 1

            return stream

        async def writing(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await admit(request, context)
            try:
                return await behaviour(request, context)
            finally:
                self.open_streams -= 1

        return writing


def _requests_checked(behaviour: Behaviour, method: str) -> Behaviour:
    """A client-streaming handler, of the same kind, whose requests abort INVALID_ARGUMENT at an undecodable one."""

    async def decoded(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
        async for request in requests:
            await _refuse_undecodable(request, method, context)
            yield request

    if inspect.isasyncgenfunction(behaviour):

        async def responses(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            async for response in behaviour(decoded(requests, context), context):
                yield response

        return responses

    async def answer(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        return await behaviour(decoded(requests, context), context)

    return answer
