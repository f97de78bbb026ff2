"""Probes: whether a child does its job, with the kubelet's words, meaning and defaults.

A child may declare a ``liveness``, a ``readiness`` and a ``startup`` probe
(``ChildSpec.liveness_probe`` ...), each one action run every ``period_seconds``
(first after ``initial_delay_seconds``), cut at ``timeout_seconds``:

- ``exec``: a command; exit 0 is success (its output is kept, bounded, for the report);
- ``tcp``: a connection to host:port;
- ``http``: a GET of a URL; success is a status in ``success_codes`` (default 200-399);
- ``grpc``: ``grpc.health.v1.Health/Check`` on host:port, optionally for a service name; SERVING is success.

As in Kubernetes (https://kubernetes.io/docs/concepts/configuration/liveness-readiness-startup-probes/):
``failure_threshold`` consecutive failures of the liveness probe restart the
child; the readiness probe decides whether the child is ready (``success_threshold``
consecutive successes make it ready, ``failure_threshold`` failures not ready);
a startup probe holds the other two off until it succeeds once, and its own
``failure_threshold`` failures restart the child. ``success_threshold`` must be 1
for liveness and startup. Unlike the kubelet, periods and timeouts may be
fractions of a second.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from supervisor._fields import bad, header_problem, take
from supervisor.v1 import supervisor_pb2 as pb

__all__ = [
    "PROBE_KEYS",
    "ExecProbe",
    "GrpcProbe",
    "HttpProbe",
    "Probe",
    "TcpProbe",
    "probe_from_mapping",
    "probe_from_proto",
    "probe_to_proto",
]


@dataclasses.dataclass(frozen=True)
class ExecProbe:
    """Run ``argv`` (in the child's environment and working directory); exit 0 is success."""

    argv: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class TcpProbe:
    """Connect to ``host:port``; a connection is success."""

    port: int
    host: str = "127.0.0.1"


@dataclasses.dataclass(frozen=True)
class HttpProbe:
    """GET ``url``; a status in ``success_codes`` (empty: 200-399, the kubelet's rule) is success."""

    url: str
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    success_codes: tuple[int, ...] = ()

    def accepts(self, status: int) -> bool:
        return status in self.success_codes if self.success_codes else 200 <= status < 400


@dataclasses.dataclass(frozen=True)
class GrpcProbe:
    """``grpc.health.v1.Health/Check`` on ``host:port`` for ``service`` ("" : the server as a whole)."""

    port: int
    host: str = "127.0.0.1"
    service: str = ""


Action = ExecProbe | TcpProbe | HttpProbe | GrpcProbe


@dataclasses.dataclass(frozen=True)
class Probe:
    """One probe: its action and the kubelet's timing and thresholds (defaults are the kubelet's)."""

    action: Action
    initial_delay_seconds: float = 0.0
    period_seconds: float = 10.0
    timeout_seconds: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3

    @property
    def kind(self) -> str:
        """``exec``, ``tcp``, ``http`` or ``grpc``."""
        return {ExecProbe: "exec", TcpProbe: "tcp", HttpProbe: "http", GrpcProbe: "grpc"}[type(self.action)]

    def validate(self, field: str) -> Probe:
        """Check every field; return self. ``field`` is the probe's name in the spec (``liveness_probe``).

        Raises InvalidArgument (a FieldError) naming ``spec.<field>.<key>``.
        """
        a = self.action
        if isinstance(a, ExecProbe):
            if not a.argv or any("\0" in arg for arg in a.argv):
                _bad(field, "exec.argv", "must name a program (no NUL bytes)", list(a.argv))
        elif isinstance(a, HttpProbe):
            if not (a.url.startswith("http://") or a.url.startswith("https://")):
                _bad(field, "http.url", "must be an http:// or https:// URL", a.url)
            if (problem := header_problem(a.headers)) is not None:
                _bad(field, *problem)
            if any(not 100 <= c <= 599 for c in a.success_codes):
                _bad(field, "http.success_codes", "must be HTTP status codes (100..599)", list(a.success_codes))
        else:
            kind = "tcp" if isinstance(a, TcpProbe) else "grpc"
            if not 1 <= a.port <= 65535:
                _bad(field, f"{kind}.port", "must be a port number (1..65535)", a.port)
            if not a.host or "\0" in a.host:
                _bad(field, f"{kind}.host", "must be a host name or address", a.host)
        _range(field, "initial_delay_seconds", self.initial_delay_seconds, 0.0, 86400.0, low_open=False)
        _range(field, "period_seconds", self.period_seconds, 0.0, 86400.0)
        _range(field, "timeout_seconds", self.timeout_seconds, 0.0, 3600.0)
        if not 1 <= self.success_threshold <= 1000:
            _bad(field, "success_threshold", "must be between 1 and 1000", self.success_threshold)
        if self.success_threshold != 1 and field != "readiness_probe":
            _bad(field, "success_threshold", "must be 1 for liveness and startup probes (as in Kubernetes)",
                 self.success_threshold)
        if not 1 <= self.failure_threshold <= 1000:
            _bad(field, "failure_threshold", "must be between 1 and 1000", self.failure_threshold)
        return self


def _bad(field: str, key: str, rule: str, got: object) -> None:
    bad(f"{field}.{key}", rule, got)


def _range(field: str, key: str, value: float, low: float, high: float, *, low_open: bool = True) -> None:
    if math.isnan(value) or (value <= low if low_open else value < low) or value > high:
        _bad(field, key, f"must be {'>' if low_open else '>='} {low:g} and at most {high:g}", value)


def _or(value: float, default: float) -> float:
    return value if value else default


def probe_from_proto(msg: pb.Probe, field: str) -> Probe | None:
    """The validated probe of a Spawn request; None when no action is set. Raises InvalidArgument."""
    which = msg.WhichOneof("action")
    if which is None:
        if msg.ByteSize():
            _bad(field, "action", "must set one of exec, tcp, http or grpc", "nothing")
        return None
    action: Action
    if which == "exec":
        action = ExecProbe(tuple(msg.exec.argv))
    elif which == "tcp":
        action = TcpProbe(port=msg.tcp.port, host=msg.tcp.host or "127.0.0.1")
    elif which == "http":
        h = msg.http
        action = HttpProbe(url=h.url, headers=dict(h.headers), success_codes=tuple(h.success_codes))
    else:
        action = GrpcProbe(port=msg.grpc.port, host=msg.grpc.host or "127.0.0.1", service=msg.grpc.service)
    d = Probe(action)
    return Probe(
        action,
        initial_delay_seconds=msg.initial_delay_seconds,
        period_seconds=_or(msg.period_seconds, d.period_seconds),
        timeout_seconds=_or(msg.timeout_seconds, d.timeout_seconds),
        success_threshold=msg.success_threshold or d.success_threshold,
        failure_threshold=msg.failure_threshold or d.failure_threshold,
    ).validate(field)


def probe_to_proto(probe: Probe | None) -> pb.Probe | None:
    """The probe as clients see it, defaults filled in; None for no probe."""
    if probe is None:
        return None
    msg = pb.Probe(
        initial_delay_seconds=probe.initial_delay_seconds,
        period_seconds=probe.period_seconds,
        timeout_seconds=probe.timeout_seconds,
        success_threshold=probe.success_threshold,
        failure_threshold=probe.failure_threshold,
    )
    a = probe.action
    if isinstance(a, ExecProbe):
        msg.exec.argv.extend(a.argv)
    elif isinstance(a, TcpProbe):
        msg.tcp.CopyFrom(pb.TcpAction(host=a.host, port=a.port))
    elif isinstance(a, HttpProbe):
        msg.http.CopyFrom(pb.HttpAction(url=a.url, headers=dict(a.headers), success_codes=list(a.success_codes)))
    else:
        msg.grpc.CopyFrom(pb.GrpcAction(host=a.host, port=a.port, service=a.service))
    return msg


# The keys of a ``[children.NAME.liveness_probe]`` table and of its action tables.
PROBE_KEYS: Mapping[str, frozenset[str]] = {
    "": frozenset(
        {
            "exec", "tcp", "http", "grpc", "initial_delay_seconds", "period_seconds", "timeout_seconds",
            "success_threshold", "failure_threshold",
        }
    ),
    "exec": frozenset({"argv"}),
    "tcp": frozenset({"host", "port"}),
    "http": frozenset({"url", "headers", "success_codes"}),
    "grpc": frozenset({"host", "port", "service"}),
}


def _take(  # noqa: PLR0917 - spec.py's shape, plus where the table sits
    table: Mapping[str, Any], key: str, kind: type, field: str, default: Any, prefix: str = ""
) -> Any:
    return take(table, key, kind, f"{field}.{prefix}{key}", default)


def probe_from_mapping(table: Mapping[str, Any], field: str) -> Probe:
    """The validated probe of a ``[children.NAME.<field>]`` TOML table (exactly one action table).

    Raises InvalidArgument naming the field.
    """
    for key in sorted(set(table) - PROBE_KEYS[""]):
        _bad(field, key, f"unknown key (known: {', '.join(sorted(PROBE_KEYS['']))})", table[key])
    kinds = [k for k in ("exec", "tcp", "http", "grpc") if k in table]
    if len(kinds) != 1:
        _bad(field, "action", "must set exactly one of the tables exec, tcp, http or grpc", kinds)
    kind = kinds[0]
    sub = _take(table, kind, dict, field, {})
    for key in sorted(set(sub) - PROBE_KEYS[kind]):
        _bad(field, f"{kind}.{key}", f"unknown key (known: {', '.join(sorted(PROBE_KEYS[kind]))})", sub[key])
    action: Action
    if kind == "exec":
        argv = _take(sub, "argv", list, field, [], "exec.")
        if not all(isinstance(a, str) for a in argv):
            _bad(field, "exec.argv", "must be a list of strings", argv)
        action = ExecProbe(tuple(argv))
    elif kind == "http":
        codes = _take(sub, "success_codes", list, field, [], "http.")
        if not all(isinstance(c, int) and not isinstance(c, bool) for c in codes):
            _bad(field, "http.success_codes", "must be a list of integers", codes)
        headers = _take(sub, "headers", dict, field, {}, "http.")
        if not all(isinstance(v, str) for v in headers.values()):
            _bad(field, "http.headers", "values must be strings", headers)
        action = HttpProbe(url=_take(sub, "url", str, field, "", "http."), headers=headers, success_codes=tuple(codes))
    elif kind == "tcp":
        action = TcpProbe(
            port=_take(sub, "port", int, field, 0, "tcp."), host=_take(sub, "host", str, field, "127.0.0.1", "tcp.")
        )
    else:
        action = GrpcProbe(
            port=_take(sub, "port", int, field, 0, "grpc."),
            host=_take(sub, "host", str, field, "127.0.0.1", "grpc."),
            service=_take(sub, "service", str, field, "", "grpc."),
        )
    d = Probe(action)
    return Probe(
        action,
        initial_delay_seconds=_take(table, "initial_delay_seconds", float, field, d.initial_delay_seconds),
        period_seconds=_take(table, "period_seconds", float, field, d.period_seconds),
        timeout_seconds=_take(table, "timeout_seconds", float, field, d.timeout_seconds),
        success_threshold=_take(table, "success_threshold", int, field, d.success_threshold),
        failure_threshold=_take(table, "failure_threshold", int, field, d.failure_threshold),
    ).validate(field)
