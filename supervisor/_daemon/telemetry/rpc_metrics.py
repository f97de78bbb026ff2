"""The duration of every RPC supd serves, and the open Stream calls: a gRPC server interceptor.

``rpc.server.call.duration`` (histogram, seconds) follows the OpenTelemetry
RPC semantic conventions as they stand (v1.38 on, release candidate; they
replaced ``rpc.server.duration`` in ms): attributes ``rpc.system.name``
("grpc"), ``rpc.method`` (the full name, ``supervisor.v1.Supervisor/Spawn``)
and ``rpc.response.status_code`` (the gRPC status name, "OK", "NOT_FOUND"),
with ``error.type`` (the same name) when the status is not OK. A method the
server does not know is reported as ``_OTHER``, as the conventions ask.
Source: https://opentelemetry.io/docs/specs/semconv/rpc/rpc-metrics/ and
https://opentelemetry.io/docs/specs/semconv/rpc/grpc/

``supd.stream.subscribers`` counts the Stream calls open now. The status of
a call: OK when its behaviour returned; the code it aborted with
(``context.code()``); CANCELLED when the client went away; UNKNOWN for an
exception that escaped (grpc answers UNKNOWN then).
Imported only when metrics are on.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

import grpc

from supervisor._daemon.api.methods import STREAM

if TYPE_CHECKING:
    _Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]]

__all__ = ["RpcMetrics"]


def _status(context: Any, exc: BaseException | None) -> grpc.StatusCode:
    if isinstance(exc, asyncio.CancelledError | GeneratorExit):  # the client went away
        return grpc.StatusCode.CANCELLED
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    return grpc.StatusCode.OK if exc is None else grpc.StatusCode.UNKNOWN


class RpcMetrics(grpc.aio.ServerInterceptor):
    """Records ``rpc.server.call.duration`` of each call and counts open Stream calls, on ``meter``."""

    def __init__(self, meter: Any, buckets: tuple[float, ...]) -> None:
        self._duration = meter.create_histogram(
            "rpc.server.call.duration", "s", "Duration of the RPCs supd serves",
            explicit_bucket_boundaries_advisory=buckets,
        )
        self._subscribers = meter.create_up_down_counter(
            "supd.stream.subscribers", "{subscriber}", "Stream calls open now"
        )

    async def intercept_service(
        self, continuation: _Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None:
            # Unknown to the server (grpc answers UNIMPLEMENTED without calling anyone): recorded here.
            self._record("_OTHER", grpc.StatusCode.UNIMPLEMENTED, 0.0)
            return None
        return self._wrap(handler, method.lstrip("/"))

    def _record(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        attrs = {"rpc.system.name": "grpc", "rpc.method": method, "rpc.response.status_code": code.name}
        if code is not grpc.StatusCode.OK:
            attrs["error.type"] = code.name
        self._duration.record(seconds, attrs)

    def _wrap(self, handler: grpc.RpcMethodHandler[Any, Any], method: str) -> grpc.RpcMethodHandler[Any, Any]:
        """``handler`` with the same call shape, timed from the call's start to its status."""
        subscribe = "/" + method == STREAM
        kinds = (
            ("unary_unary", grpc.unary_unary_rpc_method_handler),
            ("unary_stream", grpc.unary_stream_rpc_method_handler),
            ("stream_unary", grpc.stream_unary_rpc_method_handler),
            ("stream_stream", grpc.stream_stream_rpc_method_handler),
        )
        for kind, make in kinds:
            inner = getattr(handler, kind)
            if inner is None:
                continue
            timed: Callable[[Any, Any], Any]
            if inspect.isasyncgenfunction(inner):
                timed = self._generator(inner, method, subscribe)
            elif inspect.iscoroutinefunction(inner):
                timed = self._coroutine(inner, method, subscribe)
            else:
                return handler  # a synchronous behaviour (supd serves none): served as it is, untimed
            return make(
                timed, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler

    @contextlib.contextmanager
    def _timed(self, method: str, subscribe: bool, context: Any) -> Iterator[None]:
        """Around one call: counted as a subscriber while open (``subscribe``), timed and recorded with its status."""
        began = time.monotonic()
        failure: BaseException | None = None
        if subscribe:
            self._subscribers.add(1)
        try:
            yield
        except BaseException as exc:
            failure = exc
            raise
        finally:
            if subscribe:
                self._subscribers.add(-1)
            self._record(method, _status(context, failure), time.monotonic() - began)

    def _coroutine(self, inner: Any, method: str, subscribe: bool) -> Callable[[Any, Any], Awaitable[Any]]:
        async def timed(request: Any, context: Any) -> Any:
            with self._timed(method, subscribe, context):
                return await inner(request, context)

        return timed

    def _generator(self, inner: Any, method: str, subscribe: bool) -> Callable[[Any, Any], AsyncIterator[Any]]:
        async def timed(request: Any, context: Any) -> AsyncIterator[Any]:
            with self._timed(method, subscribe, context):
                async for item in inner(request, context):
                    yield item

        return timed
