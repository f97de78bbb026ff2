"""Sending one encoded OTLP logs request: gRPC or HTTP/protobuf, and what may be retried.

A transport turns every failure into an ``ExportError`` that says whether a
retry can help and carries the endpoint's own words (gRPC status details, HTTP
body), so the exporter can log them instead of a bare "failed". The retry rule
is one immutable ``RetryPolicy``: connection errors, timeouts, gRPC UNAVAILABLE
/ DEADLINE_EXCEEDED / RESOURCE_EXHAUSTED / ABORTED and HTTP 429 / 5xx are
retried; anything else (INVALID_ARGUMENT, other 4xx) never is, since sending the
same bytes again cannot succeed.

Transports block; they run on the exporter's worker thread only. ``close()``
may be called from another thread and aborts a call in progress.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import random
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Sequence
from typing import Protocol

import grpc
import structlog
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

from supervisor._daemon.telemetry.otlp.target import GRPC, HTTP_PROTOBUF, ExportTarget

__all__ = [
    "EXPORT_METHOD",
    "GRPC",
    "HTTP_PROTOBUF",
    "ExportError",
    "ExportResult",
    "ExportTarget",
    "GrpcTransport",
    "HttpTransport",
    "RetryPolicy",
    "Transport",
    "make_transport",
]

_log = structlog.get_logger("supd.otlp")

# LogsServiceStub.Export's method path, called with an identity serializer: the request is bytes already.
EXPORT_METHOD = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
_RETRYABLE_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
    }
)
_DETAIL_MAX = 1000


@dataclasses.dataclass(frozen=True, slots=True)
class ExportResult:
    """An accepted request; ``rejected`` records were refused by the receiver (partial success)."""

    rejected: int = 0
    message: str = ""


class ExportError(Exception):
    """One failed attempt: ``reason`` is short and stable (repeats group on it); ``detail`` says why."""

    def __init__(self, reason: str, detail: str, *, retryable: bool, retry_after: float | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail[:_DETAIL_MAX]
        self.retryable = retryable
        self.retry_after = retry_after


@dataclasses.dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter; a batch is given up (dropped, counted) after ``give_up_after`` s.

    ``maximum`` is small on purpose: it bounds how long export stays idle after
    the endpoint comes back. A server's Retry-After is honoured up to 30 s.
    """

    initial: float = 0.1
    multiplier: float = 2.0
    maximum: float = 2.0
    give_up_after: float = 60.0
    jitter: float = 0.2

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt`` (0 for the first retry)."""
        base = min(self.maximum, self.initial * self.multiplier ** min(attempt, 32))
        base *= 1.0 + self.jitter * (2.0 * random.random() - 1.0)
        return max(base, min(retry_after, 30.0)) if retry_after is not None else base


class Transport(Protocol):
    """Sends one encoded ExportLogsServiceRequest."""

    endpoint: str

    def export(self, body: bytes, timeout: float) -> ExportResult:
        """Send and wait for the answer, at most ``timeout`` s; raise ExportError on failure."""

    def close(self) -> None:
        """Release connections; a call in progress fails promptly."""


def _result(response: ExportLogsServiceResponse) -> ExportResult:
    if response.HasField("partial_success"):
        ps = response.partial_success
        return ExportResult(rejected=ps.rejected_log_records, message=ps.error_message)
    return ExportResult()


def _identity(body: bytes) -> bytes:
    return body


class GrpcTransport:
    """OTLP/gRPC over one channel, reconnecting by itself (backoff capped at 2 s)."""

    def __init__(self, target: ExportTarget) -> None:
        parsed = urllib.parse.urlsplit(target.endpoint if "://" in target.endpoint else "//" + target.endpoint)
        if not parsed.hostname:
            raise ValueError(f"no host in OTLP gRPC endpoint {target.endpoint!r}")
        address = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
        address = f"{address}:{parsed.port or 4317}"
        secure = parsed.scheme == "https" or (parsed.scheme != "http" and not target.insecure)
        options: Sequence[tuple[str, int]] = (
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 2000),
        )
        self.endpoint = target.endpoint
        self._metadata = target.metadata()
        self._channel = (
            grpc.secure_channel(address, grpc.ssl_channel_credentials(), options=options)
            if secure
            else grpc.insecure_channel(address, options=options)
        )
        self._call = self._channel.unary_unary(
            EXPORT_METHOD,
            request_serializer=_identity,
            response_deserializer=ExportLogsServiceResponse.FromString,
        )

    def export(self, body: bytes, timeout: float) -> ExportResult:
        try:
            response = self._call(body, timeout=timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
            detail = (exc.details() if isinstance(exc, grpc.Call) else None) or str(exc)
            raise ExportError(code.name, detail, retryable=code in _RETRYABLE_CODES) from exc
        return _result(response)

    def close(self) -> None:
        self._channel.close()


class HttpTransport:
    """OTLP/HTTP with protobuf bodies over one kept-alive http.client connection."""

    def __init__(self, target: ExportTarget) -> None:
        parsed = urllib.parse.urlsplit(target.endpoint)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError(f"OTLP HTTP endpoint must be an http:// or https:// URL, got {target.endpoint!r}")
        self.endpoint = target.endpoint
        self._https = parsed.scheme == "https"
        self._host = parsed.hostname
        self._port = parsed.port or (443 if self._https else 80)
        self._path = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
        self._headers = {
            **dict(target.headers),
            "Content-Type": "application/x-protobuf",
            "Accept": "application/x-protobuf",
        }
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()  # guards _conn and _closed against close() from another thread
        self._closed = False

    def _connection(self, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            if self._closed:
                raise ExportError("closed", "the exporter is closed", retryable=False)
            reused = self._conn is not None
            if self._conn is None:
                self._conn = (
                    http.client.HTTPSConnection(
                        self._host, self._port, timeout=timeout, context=ssl.create_default_context()
                    )
                    if self._https
                    else http.client.HTTPConnection(self._host, self._port, timeout=timeout)
                )
            conn = self._conn
        conn.timeout = timeout
        if conn.sock is not None:
            conn.sock.settimeout(timeout)
        return conn, reused

    def _drop_connection(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if self._conn is conn:
                self._conn = None
        conn.close()

    def export(self, body: bytes, timeout: float) -> ExportResult:
        for _ in range(2):
            conn, reused = self._connection(timeout)
            try:
                conn.request("POST", self._path, body, self._headers)
                response = conn.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self._drop_connection(conn)
                if reused:
                    continue  # the server closed an idle kept-alive connection: one fresh try, no backoff
                raise ExportError(type(exc).__name__, str(exc) or "connection lost", retryable=True) from exc
            except (OSError, http.client.HTTPException) as exc:
                self._drop_connection(conn)
                raise ExportError(type(exc).__name__, str(exc) or repr(exc), retryable=True) from exc
            if response.will_close:
                self._drop_connection(conn)
            return self._answer(response, data)
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _answer(response: http.client.HTTPResponse, data: bytes) -> ExportResult:
        status = response.status
        if 200 <= status < 300:
            try:
                return _result(ExportLogsServiceResponse.FromString(data))
            except DecodeError as exc:
                # 2xx means accepted (OTLP/HTTP); only a partial-success detail could be lost: say so.
                _log.warning(
                    "otlp.export.response.undecodable", status=status, bytes=len(data), error=str(exc),
                    detail="records counted as exported; a partial-success report, if any, was unreadable",
                )
                return ExportResult()
        detail = _error_detail(response, data)
        retry_after = None
        header = response.getheader("Retry-After")
        if header is not None and header.strip().isdigit():
            retry_after = float(header.strip())
        retryable = status == 429 or status >= 500
        raise ExportError(f"HTTP {status}", detail, retryable=retryable, retry_after=retry_after)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
        if conn is not None and conn.sock is not None:
            with contextlib.suppress(OSError):  # ENOTCONN: already disconnected, nobody to wake
                conn.sock.shutdown(socket.SHUT_RDWR)  # wakes a worker blocked in recv
        if conn is not None:
            conn.close()


def _error_detail(response: http.client.HTTPResponse, data: bytes) -> str:
    """The receiver's explanation: google.rpc.Status.message for protobuf bodies, else the text."""
    if "protobuf" in (response.getheader("Content-Type") or ""):
        message = _status_message(data)
        if message:
            return message
    text = data.decode("utf-8", "replace").strip()
    return text or (response.reason or f"HTTP {response.status}")


def _status_message(data: bytes) -> str:
    """Field 2 (message) of a serialised google.rpc.Status, or "" if ``data`` is not one.

    Read by hand so as not to depend on googleapis-common-protos for one string.
    """
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        wire = key & 7
        if wire == 0:
            _, pos = _read_varint(data, pos)
        elif wire == 2:
            length, pos = _read_varint(data, pos)
            if key >> 3 == 2:
                return data[pos : pos + length].decode("utf-8", "replace")
            pos += length
        else:
            return ""
    return ""


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while pos < len(data):
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
    return result, len(data) + 1  # truncated: the caller's loop ends


def make_transport(target: ExportTarget) -> Transport:
    """A transport for ``target.protocol`` ("grpc" or "http/protobuf")."""
    if target.protocol == GRPC:
        return GrpcTransport(target)
    if target.protocol == HTTP_PROTOBUF:
        return HttpTransport(target)
    raise ValueError(f"unsupported OTLP protocol {target.protocol!r}")
