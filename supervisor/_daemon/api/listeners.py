"""TCP listeners: which addresses, with which TLS credentials, and who may call (flags and ``[supervisor]`` keys).

``--listen HOST:PORT`` (repeatable) serves the API over TLS with ``--tls-cert`` and ``--tls-key``;
``--tls-client-ca`` makes it mutual TLS (a client certificate signed by that CA is required).
``--listen-insecure HOST:PORT`` serves plaintext, on a loopback address only. Every TCP listener
authenticates every call (see ``auth``), so each needs a way to: ``--tokens-file``, or client
certificates for a TLS listener. Settings that cannot work stop supd at start-up with one line
(ConfigError, exit 2); a port that cannot be bound, ListenError (exit 3).

``--listen-health HOST:PORT`` is the probe port: plaintext on any address, grpc.health.v1 Check and
nothing else, without credentials. kubelet's gRPC probe dials the pod's IP in plaintext and sends no
credentials (Kubernetes, "Configure Liveness, Readiness and Startup Probes": gRPC probes take no TLS or
authentication settings), so it can use neither a TLS listener nor a loopback one. Only the unary Check
is served there (no Watch, whose streams nobody would bound on an open port), by supd's one health
servicer, so the port says NOT_SERVING from the first moment of a shutdown as every listener does; any
other method is UNIMPLEMENTED.

The same settings in the config file's ``[supervisor]`` table (a flag wins over its key)::

    listen = ["0.0.0.0:7443"]
    listen_insecure = ["127.0.0.1:7070"]
    listen_health = ["0.0.0.0:7071"]
    tls_cert = "/etc/supd/tls.crt"
    tls_key = "/etc/supd/tls.key"
    tls_client_ca = "/etc/supd/clients-ca.crt"
    tls_client_roles = { "deployer" = "admin", "dashboard" = "read" }
    tokens_file = "/etc/supd/tokens"
    health_unauthenticated = false
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import ipaddress
import socket
import ssl
from collections.abc import Callable, Mapping
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2

from supervisor._daemon.api.auth import AuthInterceptor
from supervisor._daemon.api.tokens import Role, TokenError, Tokens
from supervisor._daemon.config_file import ConfigError

__all__ = ["ListenError", "ListenSettings", "add_listen_arguments", "listen_settings"]

_ROLES = {role.value: role for role in Role}


class ListenError(Exception):
    """A TCP listener cannot be served: its port is in use or its address is not this host's."""


@dataclasses.dataclass(frozen=True)
class ListenSettings:
    """TCP listeners (``(host:port, tls)`` pairs) and everything they check callers against; the probe port."""

    endpoints: tuple[tuple[str, bool], ...]
    cert_chain: bytes | None
    key: bytes | None
    client_ca: bytes | None
    interceptor: AuthInterceptor | None
    probe_endpoints: tuple[str, ...] = ()
    _probe: list[grpc.aio.Server] = dataclasses.field(default_factory=list, compare=False, repr=False)

    def summary(self) -> list[str]:
        """Every TCP address served and how, for supd's start-up event: ``127.0.0.1:7443 tls``."""
        kinds = [f"{target} {'tls' if tls else 'plaintext'}" for target, tls in self.endpoints]
        return kinds + [f"{target} health-only" for target in self.probe_endpoints]

    def interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        return [self.interceptor] if self.interceptor is not None else []

    async def serve(self, server: grpc.aio.Server, servicer: health.aio.HealthServicer) -> None:
        """Bind the listeners on ``server`` (not started yet) and start the probe port. Raises ListenError."""
        self.add_ports(server)
        if not self.probe_endpoints:
            return
        probe = grpc.aio.server(options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", 4096)])
        check = grpc.unary_unary_rpc_method_handler(
            servicer.Check, request_deserializer=health_pb2.HealthCheckRequest.FromString,
            response_serializer=health_pb2.HealthCheckResponse.SerializeToString,
        )
        probe.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(_HEALTH, {"Check": check})])
        for target in self.probe_endpoints:
            _bind(target, probe.add_insecure_port, target)
        await probe.start()
        self._probe.append(probe)

    async def stop(self, grace: float | None = None) -> None:
        """Stop the probe port (the listeners stop with their server)."""
        while self._probe:
            await self._probe.pop().stop(grace)

    def check_ports(self) -> None:
        """Bind and release every listener's addresses now, before anything starts: ListenError naming the one in use.

        gRPC binds later, inside the running server, and says only "Failed to bind"; this names the errno. An
        address the host lacks (``localhost`` without IPv6) is skipped as gRPC skips it, if another one binds.
        """
        for target in [*(target for target, _ in self.endpoints), *self.probe_endpoints]:
            host, _, port = target.rpartition(":")
            try:
                found = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
            except socket.gaierror as exc:
                raise ListenError(f"cannot listen on {target}: {exc.strerror}") from exc
            errors = []
            for family, kind, proto, _, address in found:
                with socket.socket(family, kind, proto) as probe:
                    probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC does
                    try:
                        probe.bind(address)
                    except OSError as exc:
                        if exc.errno == errno.EADDRINUSE:
                            raise ListenError(
                                f"cannot listen on {target}: the port is in use (another supd, or another"
                                " program); stop it or choose another port"
                            ) from exc
                        errors.append(exc)
            if len(errors) == len(found):
                raise ListenError(f"cannot listen on {target}: {errors[0].strerror}")

    def add_ports(self, server: grpc.aio.Server) -> None:
        """Bind every listener on ``server`` (before it starts); ListenError naming the address if one cannot be."""
        credentials = None
        if self.cert_chain is not None and self.key is not None:
            credentials = grpc.ssl_server_credentials(
                [(self.key, self.cert_chain)], root_certificates=self.client_ca,
                require_client_auth=self.client_ca is not None,
            )
        for target, tls in self.endpoints:
            if tls:
                assert credentials is not None
                _bind(target, server.add_secure_port, target, credentials)
            else:
                _bind(target, server.add_insecure_port, target)


_HEALTH = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


def _bind(target: str, add: Callable[..., int], *args: Any) -> None:
    try:
        add(*args)
    except RuntimeError as exc:  # grpcio's words for any bind failure; check_ports named the cause before
        raise ListenError(f"cannot listen on {target}: the port was taken since start-up ({exc})") from exc


def add_listen_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("TCP listeners (README \"Security: TCP listeners\")")
    group.add_argument("--listen", action="append", metavar="HOST:PORT",
                       help="serve the API over TLS on HOST:PORT too (repeatable; needs --tls-cert and --tls-key)")
    group.add_argument("--listen-insecure", action="append", metavar="HOST:PORT",
                       help="serve the API over plaintext TCP on a loopback HOST:PORT (repeatable; needs "
                       "--tokens-file)")
    group.add_argument("--listen-health", action="append", metavar="HOST:PORT",
                       help="serve grpc.health.v1 Check alone, plaintext, without credentials, on HOST:PORT "
                       "(repeatable; for kubelet's grpc probe)")
    group.add_argument("--tls-cert", metavar="FILE", help="PEM certificate chain of the TLS listeners")
    group.add_argument("--tls-key", metavar="FILE", help="PEM private key of --tls-cert")
    group.add_argument("--tls-client-ca", metavar="FILE",
                       help="PEM CA: TLS clients must present a certificate it signed (mutual TLS)")
    group.add_argument("--tls-client-role", action="append", metavar="NAME=ROLE",
                       help="role (read or admin) of client certificates whose common name or a subject "
                       "alternative name is NAME (repeatable; without any, every certificate the CA signed is admin)")
    group.add_argument("--tokens-file", metavar="FILE",
                       help="bearer tokens, one 'ROLE TOKEN' a line (ROLE read or admin); re-read when it changes")
    group.add_argument("--health-unauthenticated", action="store_true", default=None,
                       help="serve grpc.health.v1 on the TCP listeners without credentials (for probes)")


def listen_settings(args: argparse.Namespace, sup: Mapping[str, Any], config: str | None) -> ListenSettings | None:
    """The TCP listener settings from flags over ``[supervisor]`` keys; None when there are none. Raises ConfigError."""

    def pick(name: str, kind: type) -> Any:
        value = getattr(args, name)
        if value is not None:
            return value
        value = sup.get(name)
        strings = not isinstance(value, list) or all(isinstance(v, str) for v in value)
        if value is not None and not (isinstance(value, kind) and strings):
            raise ConfigError(f"{config}: supervisor.{name}: must be {_KINDS[kind]}, got {value!r}")
        return value

    secure = [_endpoint(a, "--listen") for a in pick("listen", list) or ()]
    plain = [_endpoint(a, "--listen-insecure", loopback=True) for a in pick("listen_insecure", list) or ()]
    cert, key, ca = pick("tls_cert", str), pick("tls_key", str), pick("tls_client_ca", str)
    tokens_file, health = pick("tokens_file", str), pick("health_unauthenticated", bool)
    roles = _client_roles(args.tls_client_role, sup.get("tls_client_roles"), config)
    probes = tuple(_endpoint(a, "--listen-health") for a in pick("listen_health", list) or ())
    if not secure and not plain:
        given = [flag for flag, value in (("--tls-cert", cert), ("--tls-key", key), ("--tls-client-ca", ca),
                 ("--tokens-file", tokens_file), ("--health-unauthenticated", health), ("--tls-client-role", roles))
                 if value]
        if given:
            raise ConfigError(f"{given[0]}: applies to TCP listeners only; add --listen HOST:PORT (the Unix socket"
                              " is guarded by its file permissions)")
        return ListenSettings((), None, None, None, None, probes) if probes else None
    if secure and not (cert and key):
        raise ConfigError("--listen: a TLS listener needs --tls-cert FILE and --tls-key FILE")
    if (cert or key or ca) and not secure:
        raise ConfigError("--tls-cert, --tls-key and --tls-client-ca apply to --listen only (--listen-insecure is"
                          " plaintext)")
    if roles and not ca:
        raise ConfigError("--tls-client-role: client certificates are checked only with --tls-client-ca FILE")
    if plain and not tokens_file:
        raise ConfigError("--listen-insecure: plaintext listeners authenticate callers by bearer token only: "
                          "give --tokens-file FILE")
    if secure and not (tokens_file or ca):
        raise ConfigError("--listen: callers must be authenticated: give --tokens-file FILE, --tls-client-ca FILE, "
                          "or both")
    cert_chain = key_bytes = ca_bytes = None
    if cert and key:
        cert_chain, key_bytes = _read(cert, "--tls-cert"), _read(key, "--tls-key")
        _check_pair(cert, key, ca)
        ca_bytes = _read(ca, "--tls-client-ca") if ca else None
    try:
        tokens = Tokens(tokens_file) if tokens_file else None
    except TokenError as exc:
        raise ConfigError(f"--tokens-file: {exc}") from exc
    interceptor = AuthInterceptor(tokens, (roles or {}) if ca else None, health_unauthenticated=bool(health))
    endpoints = tuple([(target, True) for target in secure] + [(target, False) for target in plain])
    return ListenSettings(endpoints, cert_chain, key_bytes, ca_bytes, interceptor, probes)


_KINDS = {list: "a list of 'HOST:PORT' strings", str: "a string", bool: "true or false"}


def _endpoint(address: str, flag: str, *, loopback: bool = False) -> str:
    """``address`` as gRPC takes it (IPv6 in brackets); ConfigError when it is not HOST:PORT (or not loopback)."""
    host, sep, port = address.rpartition(":")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not bare or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{flag} {address}: must be HOST:PORT with a port from 1 to 65535 ([::1]:7070 for IPv6;"
                          " 0.0.0.0:PORT for every IPv4 address)")
    if loopback and not _is_loopback(bare):
        raise ConfigError(
            f"{flag} {address}: plaintext TCP is served on a loopback address only (127.0.0.1, [::1] or localhost);"
            " for other addresses use --listen with --tls-cert and --tls-key"
        )
    return f"[{bare}]:{port}" if ":" in bare else f"{bare}:{port}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _client_roles(flags: list[str] | None, table: Any, config: str | None) -> dict[str, Role]:
    """NAME -> role from ``--tls-client-role NAME=ROLE`` flags, else the ``tls_client_roles`` table."""
    if flags:
        pairs = []
        for item in flags:
            name, sep, role = item.rpartition("=")
            pairs.append((name, role, f"--tls-client-role {item}", sep))
    elif table is not None:
        if not isinstance(table, Mapping):
            raise ConfigError(f"{config}: supervisor.tls_client_roles: must be a table of NAME = \"read\"|\"admin\"")
        pairs = [(str(k), v, f"{config}: supervisor.tls_client_roles.{k}", "=") for k, v in table.items()]
    else:
        return {}
    roles = {}
    for name, role, where, sep in pairs:
        if not sep or not name or role not in _ROLES:
            raise ConfigError(f"{where}: must be NAME=ROLE with ROLE read or admin")
        roles[name] = _ROLES[role]
    return roles


def _read(path: str, flag: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ConfigError(f"{flag} {path}: cannot read it: {exc.strerror}") from exc


def _check_pair(cert: str, key: str, ca: str | None) -> None:
    """Parse the certificate, its key and the client CA now, so a bad file stops supd instead of every handshake."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"--tls-cert {cert} / --tls-key {key}: not a PEM certificate chain and its key ({exc})"
        ) from exc
    if ca:
        try:
            context.load_verify_locations(cafile=ca)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"--tls-client-ca {ca}: not a PEM CA certificate ({exc})") from exc
