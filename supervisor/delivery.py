"""How supd delivers a child's stored state: the ``state_delivery`` part of a child's spec.

A child that keeps state in memory (Caddy's routes, a feature-flag table)
declares how to hand it over, and supd delivers each accepted revision with it:
on Reload, and again after every start of the child and of supd.

- ``http``: a request (default ``POST``) with the state as the body to a URL,
  over TCP or a Unix socket; a success code (default: any 2xx) means accepted,
  another 4xx means rejected, a 5xx or a connection error is retried.
- ``file``: the state written atomically (a temporary file in the same
  directory, fsync, rename) to a path, then an optional signal to the child
  (such as SIGHUP). Before each start the file is written first, so a starting
  child reads the current state.
- ``exec``: a command run with the state on its stdin; exit 0 means accepted,
  another exit code means rejected (its stderr is the reason).

A ``stdin`` method is not offered: a child's stdin belongs to one process, so a
state written there cannot be acknowledged, and a restarted child would read
it mid-stream.

Retries (connection errors, timeouts, 5xx) wait ``backoff.delay(n)`` with ±20 %
jitter before retry n, at most ``retry.retries`` times and within
``retry.budget_seconds`` (and the caller's deadline). The defaults, 3 retries
after 0.5, 1 and 2 s, follow the seed story's rule: retry connection errors and
5xx, never 4xx.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from supervisor._fields import bad, header_problem, take
from supervisor.backoff import Backoff
from supervisor.signals import parse_signal
from supervisor.v1 import supervisor_pb2 as pb

__all__ = [
    "DEFAULT_MAX_STATE_BYTES",
    "MAX_MAX_STATE_BYTES",
    "DeliveryRetry",
    "ExecDelivery",
    "FileDelivery",
    "HttpDelivery",
    "StateDelivery",
    "delivery_from_mapping",
    "delivery_from_proto",
    "delivery_to_proto",
]

MiB = 1024 * 1024
DEFAULT_MAX_STATE_BYTES = 4 * MiB
MAX_MAX_STATE_BYTES = 64 * MiB
_HTTP_METHODS = frozenset({"POST", "PUT", "PATCH"})


@dataclasses.dataclass(frozen=True)
class HttpDelivery:
    """An HTTP request carrying the state as its body, with ``Content-Type`` set to the revision's type."""

    url: str
    method: str = "POST"
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # Status codes that mean accepted; empty: any 2xx.
    success_codes: tuple[int, ...] = ()
    # Seconds one attempt may take, connecting included.
    timeout_seconds: float = 10.0
    # Connect over this Unix socket instead of the URL's host and port (the URL still gives the path).
    unix_socket: str = ""

    def accepts(self, status: int) -> bool:
        """Whether an HTTP status means the child accepted the state."""
        return status in self.success_codes if self.success_codes else 200 <= status < 300


@dataclasses.dataclass(frozen=True)
class FileDelivery:
    """The state written atomically to ``path`` (mode ``mode``), then ``signal`` (0: none) to the child."""

    path: str
    mode: int = 0o600
    signal: int = 0


@dataclasses.dataclass(frozen=True)
class ExecDelivery:
    """``argv`` run with the state on stdin; exit 0 means accepted. Its stderr (4 KiB at most) is the reason."""

    argv: tuple[str, ...]
    timeout_seconds: float = 30.0


@dataclasses.dataclass(frozen=True)
class DeliveryRetry:
    """Retries of connection errors, timeouts and 5xx: at most ``retries``, within ``budget_seconds``.

    The delay before retry n is ``backoff.delay(n)`` (the same rule and type as a
    child's restart backoff; ``reset_after_seconds`` plays no part here) with ±20 % jitter.
    """

    retries: int = 3
    backoff: Backoff = Backoff()
    budget_seconds: float = 30.0


Method = HttpDelivery | FileDelivery | ExecDelivery


@dataclasses.dataclass(frozen=True)
class StateDelivery:
    """How a child takes its state, and the bounds around it."""

    method: Method
    retry: DeliveryRetry = DeliveryRetry()
    # The largest state a Reload may store, in bytes.
    max_state_bytes: int = DEFAULT_MAX_STATE_BYTES
    # After a start, how long to wait for an http endpoint to accept a connection before delivering anyway.
    ready_timeout_seconds: float = 30.0

    @property
    def kind(self) -> str:
        """``http``, ``file`` or ``exec``."""
        return {HttpDelivery: "http", FileDelivery: "file", ExecDelivery: "exec"}[type(self.method)]

    def validate(self) -> StateDelivery:
        """Check every field; return self. Raises InvalidArgument naming ``spec.state_delivery.<field>``."""
        m = self.method
        if isinstance(m, HttpDelivery):
            if not (m.url.startswith("http://") or m.url.startswith("https://")):
                _bad("http.url", "must be an http:// or https:// URL", m.url)
            if m.method not in _HTTP_METHODS:
                _bad("http.method", f"must be one of {', '.join(sorted(_HTTP_METHODS))}", m.method)
            if (problem := header_problem(m.headers)) is not None:
                _bad(*problem)
            for code in m.success_codes:
                if not 100 <= code <= 599:
                    _bad("http.success_codes", "must be HTTP status codes (100..599)", list(m.success_codes))
            _range("http.timeout_seconds", m.timeout_seconds, 0.0, 3600.0)
            if m.unix_socket and not m.unix_socket.startswith("/"):
                _bad("http.unix_socket", "must be an absolute path", m.unix_socket)
        elif isinstance(m, FileDelivery):
            if not m.path.startswith("/") or "\0" in m.path or m.path.endswith("/"):
                _bad("file.path", "must be an absolute path to a file", m.path)
            if not 0 <= m.mode <= 0o777:
                _bad("file.mode", "must be a permission mode between 0 and 0o777", m.mode)
            if m.signal:
                try:
                    parse_signal(m.signal)
                except ValueError:
                    _bad("file.signal", "must be a valid signal number (0: none)", m.signal)
        else:
            if not m.argv:
                _bad("exec.argv", "must name a program", list(m.argv))
            if any("\0" in arg for arg in m.argv):
                _bad("exec.argv", "must not contain NUL bytes", list(m.argv))
            _range("exec.timeout_seconds", m.timeout_seconds, 0.0, 3600.0)
        r = self.retry
        if not 0 <= r.retries <= 100:
            _bad("retry.retries", "must be between 0 and 100", r.retries)
        b = r.backoff
        _range("retry.initial_seconds", b.initial_seconds, 0.0, 3600.0)
        _range("retry.max_seconds", b.max_seconds, b.initial_seconds, 86400.0, low_open=False)
        if not 1.0 <= b.multiplier <= 100.0:
            _bad("retry.multiplier", "must be between 1 and 100", b.multiplier)
        _range("retry.budget_seconds", r.budget_seconds, 0.0, 86400.0)
        if not 1 <= self.max_state_bytes <= MAX_MAX_STATE_BYTES:
            _bad("max_state_bytes", f"must be between 1 and {MAX_MAX_STATE_BYTES} (64 MiB)", self.max_state_bytes)
        _range("ready_timeout_seconds", self.ready_timeout_seconds, 0.0, 3600.0)
        return self


def _bad(field: str, rule: str, got: object) -> None:
    bad(f"state_delivery.{field}", rule, got)


def _range(field: str, value: float, low: float, high: float, *, low_open: bool = True) -> None:
    if math.isnan(value) or (value <= low if low_open else value < low) or value > high:  # NaN, then the bounds
        _bad(field, f"must be {'>' if low_open else '>='} {low:g} and at most {high:g}", value)


def _or(value: float, default: float) -> float:
    return value if value else default


def delivery_from_proto(msg: pb.StateDelivery) -> StateDelivery | None:
    """The validated delivery of a Spawn request; None when no method is set. Raises InvalidArgument."""
    which = msg.WhichOneof("method")
    if which is None:
        if msg.ByteSize():
            _bad("method", "must set one of http, file or exec", "nothing")
        return None
    method: Method
    if which == "http":
        h = msg.http
        method = HttpDelivery(
            url=h.url,
            method=h.method.upper() or "POST",
            headers=dict(h.headers),
            success_codes=tuple(h.success_codes),
            timeout_seconds=_or(h.timeout_seconds, 10.0),
            unix_socket=h.unix_socket,
        )
    elif which == "file":
        method = FileDelivery(path=msg.file.path, mode=msg.file.mode or 0o600, signal=msg.file.signal)
    else:
        method = ExecDelivery(argv=tuple(msg.exec.argv), timeout_seconds=_or(msg.exec.timeout_seconds, 30.0))
    d, db = DeliveryRetry(), Backoff()
    r = msg.retry
    retry = DeliveryRetry(
        retries=r.retries if r.HasField("retries") else d.retries,
        backoff=Backoff(
            initial_seconds=_or(r.backoff.initial_seconds, db.initial_seconds),
            max_seconds=_or(r.backoff.max_seconds, db.max_seconds),
            multiplier=_or(r.backoff.multiplier, db.multiplier),
        ),
        budget_seconds=_or(r.budget_seconds, d.budget_seconds),
    )
    return StateDelivery(
        method=method,
        retry=retry,
        max_state_bytes=msg.max_state_bytes or DEFAULT_MAX_STATE_BYTES,
        ready_timeout_seconds=_or(msg.ready_timeout_seconds, 30.0),
    ).validate()


def delivery_to_proto(delivery: StateDelivery | None) -> pb.StateDelivery:
    """The delivery as clients see it, defaults filled in; an empty message for None."""
    if delivery is None:
        return pb.StateDelivery()
    r = delivery.retry
    msg = pb.StateDelivery(
        retry=pb.DeliveryRetry(
            retries=r.retries,
            backoff=pb.Backoff(
                initial_seconds=r.backoff.initial_seconds,
                max_seconds=r.backoff.max_seconds,
                multiplier=r.backoff.multiplier,
            ),
            budget_seconds=r.budget_seconds,
        ),
        max_state_bytes=delivery.max_state_bytes,
        ready_timeout_seconds=delivery.ready_timeout_seconds,
    )
    m = delivery.method
    if isinstance(m, HttpDelivery):
        msg.http.CopyFrom(
            pb.HttpDelivery(
                url=m.url, method=m.method, headers=dict(m.headers), success_codes=list(m.success_codes),
                timeout_seconds=m.timeout_seconds, unix_socket=m.unix_socket,
            )
        )
    elif isinstance(m, FileDelivery):
        msg.file.CopyFrom(pb.FileDelivery(path=m.path, mode=m.mode, signal=m.signal))
    else:
        msg.exec.CopyFrom(pb.ExecDelivery(argv=list(m.argv), timeout_seconds=m.timeout_seconds))
    return msg


# The keys of a ``[children.NAME.state_delivery]`` table and of its nested tables.
DELIVERY_KEYS: Mapping[str, frozenset[str]] = {
    "": frozenset({"http", "file", "exec", "retry", "max_state_bytes", "ready_timeout_seconds"}),
    "http": frozenset({"url", "method", "headers", "success_codes", "timeout_seconds", "unix_socket"}),
    "file": frozenset({"path", "mode", "signal"}),
    "exec": frozenset({"argv", "timeout_seconds"}),
    "retry": frozenset({"retries", "initial_seconds", "max_seconds", "multiplier", "budget_seconds"}),
}


def _take(table: Mapping[str, Any], key: str, kind: type, field: str, default: Any) -> Any:
    return take(table, key, kind, f"state_delivery.{field}", default)


def delivery_from_mapping(table: Mapping[str, Any]) -> StateDelivery:
    """The validated delivery of a ``[children.NAME.state_delivery]`` TOML table. Raises InvalidArgument.

    Exactly one of the tables ``http``, ``file`` or ``exec``; ``retry`` optional.
    Every key at every level must be known.
    """
    for key in sorted(set(table) - DELIVERY_KEYS[""]):
        _bad(key, f"unknown key (known: {', '.join(sorted(DELIVERY_KEYS['']))})", table[key])
    for nested in ("http", "file", "exec", "retry"):
        sub = _take(table, nested, dict, nested, {})
        for key in sorted(set(sub) - DELIVERY_KEYS[nested]):
            _bad(f"{nested}.{key}", f"unknown key (known: {', '.join(sorted(DELIVERY_KEYS[nested]))})", sub[key])
    methods = [m for m in ("http", "file", "exec") if m in table]
    if len(methods) != 1:
        _bad("method", "must set exactly one of the tables http, file or exec", methods)
    method: Method
    if "http" in table:
        h = table["http"]
        codes = _take(h, "success_codes", list, "http.success_codes", [])
        if not all(isinstance(c, int) and not isinstance(c, bool) for c in codes):
            _bad("http.success_codes", "must be a list of integers", codes)
        headers = _take(h, "headers", dict, "http.headers", {})
        if not all(isinstance(v, str) for v in headers.values()):
            _bad("http.headers", "values must be strings", headers)
        method = HttpDelivery(
            url=_take(h, "url", str, "http.url", ""),
            method=_take(h, "method", str, "http.method", "POST").upper(),
            headers=headers,
            success_codes=tuple(codes),
            timeout_seconds=_take(h, "timeout_seconds", float, "http.timeout_seconds", 10.0),
            unix_socket=_take(h, "unix_socket", str, "http.unix_socket", ""),
        )
    elif "file" in table:
        f = table["file"]
        raw_signal = f.get("signal", 0)
        sig = 0
        if raw_signal not in (0, "", None):
            try:
                sig = parse_signal(raw_signal)
            except ValueError:
                _bad("file.signal", "must be a signal name like SIGHUP or a number", raw_signal)
        method = FileDelivery(
            path=_take(f, "path", str, "file.path", ""), mode=_take(f, "mode", int, "file.mode", 0o600), signal=sig
        )
    else:
        e = table["exec"]
        argv = _take(e, "argv", list, "exec.argv", [])
        if not all(isinstance(a, str) for a in argv):
            _bad("exec.argv", "must be a list of strings", argv)
        timeout = _take(e, "timeout_seconds", float, "exec.timeout_seconds", 30.0)
        method = ExecDelivery(argv=tuple(argv), timeout_seconds=timeout)
    r = table.get("retry", {})
    d, db = DeliveryRetry(), Backoff()
    retry = DeliveryRetry(
        retries=_take(r, "retries", int, "retry.retries", d.retries),
        backoff=Backoff(
            initial_seconds=_take(r, "initial_seconds", float, "retry.initial_seconds", db.initial_seconds),
            max_seconds=_take(r, "max_seconds", float, "retry.max_seconds", db.max_seconds),
            multiplier=_take(r, "multiplier", float, "retry.multiplier", db.multiplier),
        ),
        budget_seconds=_take(r, "budget_seconds", float, "retry.budget_seconds", d.budget_seconds),
    )
    return StateDelivery(
        method=method,
        retry=retry,
        max_state_bytes=_take(table, "max_state_bytes", int, "max_state_bytes", DEFAULT_MAX_STATE_BYTES),
        ready_timeout_seconds=_take(table, "ready_timeout_seconds", float, "ready_timeout_seconds", 30.0),
    ).validate()
