"""Replies that come already serialised: the bytes of a message pass to grpcio as they are.

Stream's LineBatch messages are serialised by the C core in one pass (output/stream.py). grpcio calls a
method's response serializer on every reply; the generated one (``StreamMessage.SerializeToString``) needs a
message, so without this layer each batch would be parsed into a StreamMessage only to be serialised again:
two copies and a parse of every byte sent (measured: 0.03-0.06 supd CPU s per 100 MB followed).

``PassSerialised`` is a server interceptor that gives the named methods a serializer which passes ``bytes``
through and serialises anything else as before, so a handler may yield either. A ``bytes`` reply must be a
complete serialised message of the method's reply type; nothing checks that it is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

__all__ = ["PassSerialised", "passing_serialised"]

Serializer = Callable[[Any], bytes]


def passing_serialised(serialize: Serializer | None) -> Serializer:
    """A serializer that returns ``bytes`` replies as they are and hands anything else to ``serialize``."""

    def encode(reply: Any) -> bytes:
        if type(reply) is bytes:
            return reply
        if serialize is None:
            raise TypeError(f"a reply of {type(reply).__name__} needs a serializer")
        return serialize(reply)

    return encode


class PassSerialised(grpc.aio.ServerInterceptor):
    """Lets the response-streaming ``methods`` (full names, ``/package.Service/Method``) yield serialised bytes."""

    def __init__(self, methods: frozenset[str]) -> None:
        self._methods = methods

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(details)
        if handler is None or handler.unary_stream is None or details.method not in self._methods:
            return handler
        return grpc.unary_stream_rpc_method_handler(
            handler.unary_stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=passing_serialised(handler.response_serializer),
        )
