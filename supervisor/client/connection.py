"""How a client reaches supd: the address, the credentials, and the one channel factory.

Address forms (the same for supctl, the Python client and ``SUPD_ADDR``):

- ``unix:///path/to/supd.sock``, ``unix:/path`` or a bare absolute path: the Unix
  socket; file permissions are its access control, so no TLS is used there.
- ``host:port`` (``[::1]:7070`` for IPv6): a TCP listener of supd. TLS is the
  default, verified against the system's roots or ``ca_file``; plaintext needs
  ``insecure=True`` (supd serves plaintext TCP on loopback only).

A bearer token (read from ``token_file``, never from argv) travels as the
``authorization: Bearer <token>`` metadata of every call (RFC 6750, section 2.1).
A client certificate and key (``cert_file``, ``key_file``) make it mutual TLS.

Every setting may come from the environment, for the CLI and for programs that
want supctl's behaviour: ``SUPD_ADDR``, ``SUPD_TOKEN_FILE``, ``SUPD_CA_FILE``,
``SUPD_CERT_FILE``, ``SUPD_KEY_FILE``, ``SUPD_SERVER_NAME`` and ``SUPD_INSECURE``
(``1``/``true``/``yes``).

Importing this module loads grpcio and nothing of the daemon or OpenTelemetry.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import grpc

from supervisor import paths

__all__ = [
    "CA_FILE_ENV",
    "CERT_FILE_ENV",
    "INSECURE_ENV",
    "KEY_FILE_ENV",
    "SERVER_NAME_ENV",
    "TOKEN_FILE_ENV",
    "Connection",
    "ConnectionConfigError",
    "connection_of",
    "normalise_address",
]

TOKEN_FILE_ENV = "SUPD_TOKEN_FILE"
CA_FILE_ENV = "SUPD_CA_FILE"
CERT_FILE_ENV = "SUPD_CERT_FILE"
KEY_FILE_ENV = "SUPD_KEY_FILE"
SERVER_NAME_ENV = "SUPD_SERVER_NAME"
INSECURE_ENV = "SUPD_INSECURE"
# A token is one line of printable ASCII; anything longer than this is not a token file.
MAX_TOKEN_BYTES = 4096

ChannelOptions = Sequence[tuple[str, Any]]


class ConnectionConfigError(Exception):
    """The connection settings cannot work: a file missing or unreadable, a contradiction. One line, what to do."""


def normalise_address(address: str) -> str:
    """``/path`` becomes ``unix:///path``; every other form is returned as given."""
    return "unix://" + address if address.startswith("/") else address


def _truthy(text: str | None) -> bool:
    return (text or "").strip().lower() in {"1", "true", "yes", "on"}


def _read(path: str, what: str, limit: int | None = None) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read() if limit is None else f.read(limit + 1)
    except OSError as exc:
        raise ConnectionConfigError(f"cannot read the {what} {path}: {exc.strerror or exc}") from exc
    if limit is not None and len(data) > limit:
        raise ConnectionConfigError(f"the {what} {path} is longer than {limit} bytes: is it really a token file?")
    return data


@dataclasses.dataclass(frozen=True)
class Connection:
    """Where supd is and how to prove who we are.

    ``address``: see the module docstring. ``token_file``: a file holding one
    bearer token (surrounding whitespace ignored). ``ca_file``: PEM roots to
    verify supd's certificate (default: the system's). ``cert_file`` and
    ``key_file``: PEM client certificate chain and key, for mutual TLS (both or
    neither). ``server_name``: the name to verify in supd's certificate when it
    differs from the host dialled. ``insecure``: plaintext TCP.
    """

    address: str
    token_file: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    insecure: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", normalise_address(self.address))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **given: Any) -> Connection:
        """Settings given as keyword arguments (None means not given) over the ``SUPD_*`` variables over defaults."""
        env = os.environ if env is None else env

        def pick(field: str, variable: str) -> Any:
            value = given.get(field)
            return value if value is not None else (env.get(variable) or None)

        insecure = given.get("insecure")
        return cls(
            address=pick("address", paths.ADDR_ENV) or "unix://" + paths.default_socket_path(),
            token_file=pick("token_file", TOKEN_FILE_ENV),
            ca_file=pick("ca_file", CA_FILE_ENV),
            cert_file=pick("cert_file", CERT_FILE_ENV),
            key_file=pick("key_file", KEY_FILE_ENV),
            server_name=pick("server_name", SERVER_NAME_ENV),
            insecure=bool(insecure) if insecure is not None else _truthy(env.get(INSECURE_ENV)),
        )

    @property
    def is_unix(self) -> bool:
        return paths.socket_path_of(self.address) is not None

    @property
    def uses_tls(self) -> bool:
        return not self.is_unix and not self.insecure

    def token(self) -> str | None:
        """The bearer token, read now, so a rotated file counts from the next channel on.

        Raises ConnectionConfigError when the file is missing, unreadable, or not one word of ASCII.
        """
        if self.token_file is None:
            return None
        text = _read(self.token_file, "token file", MAX_TOKEN_BYTES).decode("ascii", errors="replace").strip()
        if not text or not text.isprintable() or any(c.isspace() for c in text):
            raise ConnectionConfigError(f"the token file {self.token_file} must hold one token: a single word of ASCII")
        return text

    def _check(self) -> None:
        if (self.cert_file is None) != (self.key_file is None):
            raise ConnectionConfigError(
                "a client certificate needs its key and a key its certificate: give both or neither"
            )
        tls_files = self.ca_file or self.cert_file or self.server_name
        if tls_files and not self.uses_tls:
            where = "a Unix socket" if self.is_unix else "a plaintext (--insecure) address"
            raise ConnectionConfigError(f"TLS settings were given but {self.address} is {where}, where TLS is not used")

    def _tls(self) -> grpc.ChannelCredentials:
        roots = _read(self.ca_file, "CA file") if self.ca_file else None
        key = _read(self.key_file, "client key") if self.key_file else None
        chain = _read(self.cert_file, "client certificate") if self.cert_file else None
        credentials = grpc.ssl_channel_credentials(root_certificates=roots, private_key=key, certificate_chain=chain)
        token = self.token()
        if token is not None:
            credentials = grpc.composite_channel_credentials(credentials, grpc.access_token_call_credentials(token))
        return credentials

    def _options(self, options: ChannelOptions) -> list[tuple[str, Any]]:
        merged = list(options)
        if self.server_name and self.uses_tls:
            merged.append(("grpc.ssl_target_name_override", self.server_name))
        return merged

    def channel(self, options: ChannelOptions = ()) -> grpc.Channel:
        """A blocking channel with these settings. ConnectionConfigError when the settings cannot work."""
        self._check()
        opts = self._options(options)
        if self.uses_tls:
            return grpc.secure_channel(self.address, self._tls(), options=opts)
        channel = grpc.insecure_channel(self.address, options=opts)
        token = self.token()
        if token is None:
            return channel
        return grpc.intercept_channel(channel, *_bearer_interceptors(token))

    def aio_channel(self, options: ChannelOptions = ()) -> grpc.aio.Channel:
        """An asyncio channel with these settings. ConnectionConfigError when the settings cannot work."""
        self._check()
        opts = self._options(options)
        if self.uses_tls:
            return grpc.aio.secure_channel(self.address, self._tls(), options=opts)
        token = self.token()
        interceptors = _aio_bearer_interceptors(token) if token is not None else None
        return grpc.aio.insecure_channel(self.address, options=opts, interceptors=interceptors)


def connection_of(where: Connection | str | None) -> Connection:
    """A Connection as given, from an address (other settings from ``SUPD_*``), or wholly from ``SUPD_*``."""
    if isinstance(where, Connection):
        return where
    return Connection.from_env(address=where)


# Plaintext channels refuse call credentials, so the token is added to each call's metadata by interceptors.


def _with_token(details: Any, token: str) -> Any:
    return _Details(details, (*(details.metadata or ()), ("authorization", f"Bearer {token}")))


class _Details(grpc.ClientCallDetails):
    def __init__(self, base: Any, metadata: tuple[tuple[str, str | bytes], ...]) -> None:
        self.method = base.method
        self.timeout = base.timeout
        self.metadata = metadata
        self.credentials = base.credentials
        self.wait_for_ready = getattr(base, "wait_for_ready", None)
        self.compression = getattr(base, "compression", None)


class _Bearer(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds the token to unary and server-streaming calls, the only kinds supd's API has."""

    def __init__(self, token: str) -> None:
        self._token = token

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return continuation(_with_token(client_call_details, self._token), request)

    def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return continuation(_with_token(client_call_details, self._token), request)


def _bearer_interceptors(token: str) -> list[Any]:
    return [_Bearer(token)]


class _AioDetails(grpc.aio.ClientCallDetails):
    pass


def _aio_details(details: Any, token: str) -> Any:
    metadata = grpc.aio.Metadata(*(details.metadata or ()))
    metadata.add("authorization", f"Bearer {token}")
    return _AioDetails(details.method, details.timeout, metadata, details.credentials, details.wait_for_ready)


class _AioBearerUnaryUnary(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(_aio_details(client_call_details, self._token), request)


class _AioBearerUnaryStream(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, token: str) -> None:
        self._token = token

    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(_aio_details(client_call_details, self._token), request)


def _aio_bearer_interceptors(token: str) -> list[Any]:
    return [_AioBearerUnaryUnary(token), _AioBearerUnaryStream(token)]
