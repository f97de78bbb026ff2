"""Replies already serialised pass through grpcio as they are; messages are serialised as before.

In process, over a real grpc.aio server on a Unix socket: a Stream handler that yields both kinds, behind
every interceptor supd puts in front of it, reaches a client as the same messages.
"""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from supervisor._daemon.api.limits import ApiLimits, RequestGuard
from supervisor._daemon.api.preserialised import PassSerialised, passing_serialised
from supervisor._daemon.api.server import PRESERIALISED
from supervisor.v1 import supervisor_pb2 as pb

METHOD = "/supervisor.v1.Supervisor/Stream"
OTHER = "/supervisor.v1.Supervisor/Other"


def replies() -> list[pb.StreamMessage]:
    out, err = pb.OUTPUT_STREAM_STDOUT, pb.OUTPUT_STREAM_STDERR
    return [
        pb.StreamMessage(lines=pb.LineBatch(first_seq=1, stream=out, data=b"a\nbc\n", lengths=[2, 3])),
        pb.StreamMessage(gap=pb.Gap(first_seq=3, count=2, reason="evicted")),
        pb.StreamMessage(lines=pb.LineBatch(first_seq=5, stream=err, data=b"x" * 70000, lengths=[70000])),
    ]


def test_supd_lets_stream_alone_yield_serialised_replies() -> None:
    assert frozenset({METHOD}) == PRESERIALISED


def test_bytes_pass_and_messages_are_serialised() -> None:
    encode = passing_serialised(pb.StreamMessage.SerializeToString)
    message = replies()[0]
    wire = message.SerializeToString()
    assert encode(wire) is wire
    assert encode(message) == wire


def test_without_a_serializer_a_message_is_a_type_error_naming_it() -> None:
    with pytest.raises(TypeError, match="StreamMessage needs a serializer"):
        passing_serialised(None)(replies()[0])


async def _serve_and_read(tmp_path: pathlib.Path, method: str, mixed: list[Any]) -> list[pb.StreamMessage]:
    async def stream(request: pb.StreamRequest, context: Any) -> AsyncIterator[Any]:
        for reply in mixed:
            yield reply

    handler = grpc.unary_stream_rpc_method_handler(
        stream,
        request_deserializer=pb.StreamRequest.FromString,
        response_serializer=pb.StreamMessage.SerializeToString,
    )
    service, name = method.rsplit("/", 1)
    generic = grpc.method_handlers_generic_handler(service.lstrip("/"), {name: handler})
    server = grpc.aio.server(interceptors=[RequestGuard(ApiLimits()), PassSerialised(frozenset({METHOD}))])
    server.add_generic_rpc_handlers((generic,))
    address = f"unix:{tmp_path / 'p.sock'}"
    server.add_insecure_port(address)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(address) as channel:
            call = channel.unary_stream(
                method,
                request_serializer=pb.StreamRequest.SerializeToString,
                response_deserializer=pb.StreamMessage.FromString,
            )
            return [m async for m in call(pb.StreamRequest(name="c"))]
    finally:
        await server.stop(0)


def test_a_stream_of_bytes_and_messages_arrives_as_the_same_messages(tmp_path: pathlib.Path) -> None:
    want = replies()
    mixed: list[Any] = [want[0].SerializeToString(), want[1], want[2].SerializeToString()]

    async def main() -> list[pb.StreamMessage]:
        async with asyncio.timeout(30):
            return await _serve_and_read(tmp_path, METHOD, mixed)

    assert asyncio.run(main()) == want


def test_another_method_still_refuses_bytes(tmp_path: pathlib.Path) -> None:
    """Only the named methods pass bytes: elsewhere a bytes reply is the serializer's error, as without the layer."""

    async def main() -> grpc.StatusCode:
        async with asyncio.timeout(30):
            try:
                await _serve_and_read(tmp_path, OTHER, [replies()[1].SerializeToString()])
            except grpc.aio.AioRpcError as exc:
                return exc.code()
        raise AssertionError("a bytes reply was sent for a method not named")

    assert asyncio.run(main()) is not grpc.StatusCode.OK
