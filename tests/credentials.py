"""Throwaway credentials for supd's TCP listeners: CAs and certificates (trustme), tokens files, clients.

Every client is a real ``supervisor.client.Connection`` channel, the one supctl uses.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import secrets

import grpc
import trustme

from supervisor.client import Connection
from supervisor.v1 import supervisor_pb2 as pb
from supervisor.v1 import supervisor_pb2_grpc as pb_grpc


@dataclasses.dataclass
class Pki:
    """A server CA with supd's certificate for localhost, and a CA for client certificates, as files."""

    directory: pathlib.Path
    server_ca: trustme.CA = dataclasses.field(default_factory=trustme.CA)
    client_ca: trustme.CA = dataclasses.field(default_factory=trustme.CA)

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        server = self.server_ca.issue_cert("localhost", "127.0.0.1")
        self.ca_file = self._write("ca.pem", self.server_ca.cert_pem.bytes())
        self.cert_file = self._write("server.pem", b"".join(p.bytes() for p in server.cert_chain_pems))
        self.key_file = self._write("server.key", server.private_key_pem.bytes())
        self.client_ca_file = self._write("client-ca.pem", self.client_ca.cert_pem.bytes())

    def _write(self, name: str, data: bytes) -> str:
        path = self.directory / name
        path.write_bytes(data)
        return str(path)

    def client_cert(self, name: str, ca: trustme.CA | None = None) -> tuple[str, str]:
        """Files of a client certificate whose common name is ``name`` (signed by the client CA unless ``ca``)."""
        issued = (ca or self.client_ca).issue_cert(f"{name}.clients.test", common_name=name)
        cert = self._write(f"{name}.pem", b"".join(p.bytes() for p in issued.cert_chain_pems))
        return cert, self._write(f"{name}.key", issued.private_key_pem.bytes())

    def server_args(self) -> list[str]:
        return ["--tls-cert", self.cert_file, "--tls-key", self.key_file]


def new_token() -> str:
    return secrets.token_hex(24)


def write_tokens(path: pathlib.Path, lines: list[str]) -> None:
    """Replace the tokens file as an operator would rotate it: a new file renamed over the old one."""
    staging = path.with_suffix(".new")
    staging.write_text("".join(f"{line}\n" for line in lines))
    os.replace(staging, path)


def token_file(directory: pathlib.Path, token: str) -> str:
    path = directory / f"token-{secrets.token_hex(4)}"
    path.write_text(token + "\n")
    return str(path)


def stub(channel: grpc.Channel) -> pb_grpc.SupervisorStub:
    return pb_grpc.SupervisorStub(channel)


def call_code(call: object) -> tuple[grpc.StatusCode, str]:
    """Run ``call`` (a zero-argument callable making one RPC); its status code and details."""
    try:
        call()  # type: ignore[operator]
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""  # type: ignore[attr-defined]
    return grpc.StatusCode.OK, ""


def list_request(channel: grpc.Channel) -> tuple[grpc.StatusCode, str]:
    return call_code(lambda: stub(channel).List(pb.ListRequest(), timeout=10))


def connection(address: str, **given: str | bool | None) -> Connection:
    """A Connection that ignores the SUPD_* variables of the environment running the tests."""
    return Connection.from_env({}, address=address, **given)
