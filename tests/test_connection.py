"""supervisor.client.connection: address forms, credentials from flags and environment, real channels.

The peer is a real gRPC server (grpc.health.v1) on a real Unix socket or TCP
port, over real TLS with certificates from a throwaway CA (trustme); an
interceptor records the metadata each call carried.
"""

from __future__ import annotations

import asyncio
import pathlib
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
import trustme
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from supervisor.client import Connection, ConnectionConfigError
from supervisor.testing import free_port


class _Recorder(grpc.ServerInterceptor):
    def __init__(self) -> None:
        self.authorization: list[str | None] = []

    def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        metadata = dict(handler_call_details.invocation_metadata or ())
        self.authorization.append(metadata.get("authorization"))
        return continuation(handler_call_details)


def _server(recorder: _Recorder) -> grpc.Server:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), interceptors=[recorder])
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    return server


def _check(channel: grpc.Channel) -> int:
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    return int(reply.status)


@pytest.fixture
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def unix_server(tmp_path: pathlib.Path) -> Iterator[tuple[str, _Recorder]]:
    recorder = _Recorder()
    server = _server(recorder)
    path = tmp_path / "s.sock"
    server.add_insecure_port(f"unix://{path}")
    server.start()
    yield str(path), recorder
    server.stop(None)


@pytest.fixture
def tls_server(ca: trustme.CA, tmp_path: pathlib.Path) -> Iterator[tuple[str, _Recorder]]:
    """A TLS server on localhost that asks for, and verifies, client certificates from ``ca``."""
    recorder = _Recorder()
    server = _server(recorder)
    cert = ca.issue_cert("localhost")
    credentials = grpc.ssl_server_credentials(
        [(cert.private_key_pem.bytes(), cert.cert_chain_pems[0].bytes())],
        root_certificates=ca.cert_pem.bytes(),
        require_client_auth=False,
    )
    port = free_port()
    server.add_secure_port(f"localhost:{port}", credentials)
    server.start()
    yield f"localhost:{port}", recorder
    server.stop(None)


def _write(tmp_path: pathlib.Path, name: str, data: bytes | str) -> str:
    path = tmp_path / name
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return str(path)


def test_a_bare_path_is_a_unix_address_and_the_token_travels_as_bearer_metadata(
    unix_server: tuple[str, _Recorder], tmp_path: pathlib.Path
) -> None:
    path, recorder = unix_server
    token_file = _write(tmp_path, "token", "s3cret-token\n")
    conn = Connection.from_env({}, address=path, token_file=token_file)
    assert conn.address == f"unix://{path}" and conn.is_unix and not conn.uses_tls
    with conn.channel() as channel:
        assert _check(channel) == health_pb2.HealthCheckResponse.SERVING
    assert recorder.authorization == ["Bearer s3cret-token"]


def test_the_asyncio_channel_carries_the_token_too(unix_server: tuple[str, _Recorder], tmp_path: pathlib.Path) -> None:
    path, recorder = unix_server
    conn = Connection(address=f"unix://{path}", token_file=_write(tmp_path, "token", "abc"))

    async def main() -> int:
        async with conn.aio_channel() as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            watched = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=10)
            first = await watched.read()
            watched.cancel()
            return int(reply.status) + int(first.status)

    assert asyncio.run(asyncio.wait_for(main(), 20)) == 2 * health_pb2.HealthCheckResponse.SERVING
    assert recorder.authorization == ["Bearer abc", "Bearer abc"]


def test_no_token_file_sends_no_authorization(unix_server: tuple[str, _Recorder]) -> None:
    path, recorder = unix_server
    with Connection(address=path).channel() as channel:
        _check(channel)
    assert recorder.authorization == [None]


def test_tls_with_a_client_certificate_and_a_token(
    tls_server: tuple[str, _Recorder], ca: trustme.CA, tmp_path: pathlib.Path
) -> None:
    address, recorder = tls_server
    client = ca.issue_cert("supctl@example")
    conn = Connection.from_env(
        {
            "SUPD_ADDR": address,
            "SUPD_CA_FILE": _write(tmp_path, "ca.pem", ca.cert_pem.bytes()),
            "SUPD_CERT_FILE": _write(tmp_path, "c.pem", client.cert_chain_pems[0].bytes()),
            "SUPD_KEY_FILE": _write(tmp_path, "k.pem", client.private_key_pem.bytes()),
            "SUPD_TOKEN_FILE": _write(tmp_path, "token", "tls-token"),
        }
    )
    assert conn.uses_tls
    with conn.channel() as channel:
        assert _check(channel) == health_pb2.HealthCheckResponse.SERVING
    assert recorder.authorization == ["Bearer tls-token"]


def test_tls_refuses_a_server_the_ca_did_not_sign(tls_server: tuple[str, _Recorder], tmp_path: pathlib.Path) -> None:
    address, recorder = tls_server
    stranger = trustme.CA()
    conn = Connection(address=address, ca_file=_write(tmp_path, "other.pem", stranger.cert_pem.bytes()))
    with conn.channel() as channel, pytest.raises(grpc.RpcError) as caught:
        _check(channel)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE  # type: ignore[attr-defined]
    assert recorder.authorization == []


def test_server_name_overrides_the_name_checked(
    ca: trustme.CA, tls_server: tuple[str, _Recorder], tmp_path: pathlib.Path
) -> None:
    address, _ = tls_server
    port = address.rpartition(":")[2]
    conn = Connection(address=f"127.0.0.1:{port}", ca_file=_write(tmp_path, "ca.pem", ca.cert_pem.bytes()))
    with conn.channel() as channel, pytest.raises(grpc.RpcError):
        _check(channel)  # the certificate names localhost, not 127.0.0.1
    named = Connection(address=f"127.0.0.1:{port}", ca_file=conn.ca_file, server_name="localhost")
    with named.channel() as channel:
        assert _check(channel) == health_pb2.HealthCheckResponse.SERVING


def test_plaintext_tcp_only_when_asked(tmp_path: pathlib.Path) -> None:
    recorder = _Recorder()
    server = _server(recorder)
    port = free_port()
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    try:
        conn = Connection.from_env({"SUPD_INSECURE": "yes"}, address=f"127.0.0.1:{port}")
        assert conn.insecure and not conn.uses_tls
        with conn.channel() as channel:
            assert _check(channel) == health_pb2.HealthCheckResponse.SERVING
        with Connection(address=f"127.0.0.1:{port}").channel() as channel, pytest.raises(grpc.RpcError):
            _check(channel)  # TLS is the default for host:port, and this server speaks plaintext
    finally:
        server.stop(None)


def test_flags_win_over_the_environment(tmp_path: pathlib.Path) -> None:
    env = {"SUPD_ADDR": "unix:///env.sock", "SUPD_TOKEN_FILE": "/env-token", "SUPD_INSECURE": "1"}
    conn = Connection.from_env(env, address="/flag.sock", token_file=None, insecure=False)
    assert (conn.address, conn.token_file, conn.insecure) == ("unix:///flag.sock", "/env-token", False)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"address": "h:1", "cert_file": "/c.pem"}, "give both or neither"),
        ({"address": "unix:///s.sock", "ca_file": "/ca.pem"}, "is a Unix socket, where TLS is not used"),
        ({"address": "h:1", "insecure": True, "ca_file": "/ca.pem"}, "plaintext (--insecure) address"),
        ({"address": "h:1", "ca_file": "/no/such/ca.pem"}, "cannot read the CA file /no/such/ca.pem"),
        ({"address": "unix:///s.sock", "token_file": "/no/such/token"}, "cannot read the token file /no/such/token"),
    ],
)
def test_settings_that_cannot_work_say_why(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ConnectionConfigError, match=None) as caught:
        Connection(**settings).channel().close()
    assert message in str(caught.value)


@pytest.mark.parametrize("content", [b"", b"two words", b"x" * 5000, b"\x00bin"])
def test_a_token_file_must_hold_one_token(tmp_path: pathlib.Path, content: bytes) -> None:
    conn = Connection(address="unix:///s.sock", token_file=_write(tmp_path, "token", content))
    with pytest.raises(ConnectionConfigError):
        conn.token()


def test_supctl_says_in_one_line_why_its_connection_settings_cannot_work(
    capsys: pytest.CaptureFixture[str], tmp_path: pathlib.Path
) -> None:
    from supervisor import cli

    code = cli.main(["--addr", str(tmp_path / "s.sock"), "--ca-file", str(tmp_path / "ca.pem"), "ls"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_USAGE
    assert err.count("\n") == 1 and "is a Unix socket, where TLS is not used" in err and err.startswith("supctl: ")
