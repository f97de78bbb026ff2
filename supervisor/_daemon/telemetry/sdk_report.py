"""The OpenTelemetry SDK's failures told in supd's own events, once per cause, with the SDK's words as a field.

Left alone, the SDK logs through stdlib ``logging``, and each failed span or
event export became a supd log event whose name was the SDK's sentence
(``Failed to export traces to ..., error code: StatusCode.UNIMPLEMENTED``),
repeated for every batch. Here:

* ``ReportingSpanExporter``, ``ReportingLogExporter`` (and metrics.py's
  ``ReportingMetricExporter``) wrap the SDK's OTLP exporters. A failed export becomes ``otlp.spans.export.failed``
  (spans), ``otlp.events.export.failed`` (supd's own events) or
  ``otlp.metrics.export.failed`` with ``detail`` (what the
  SDK and the endpoint said) and ``endpoint``; identical failures after it are
  counted and logged as one ``....failed.repeated`` per interval; the first
  success after failures logs ``....recovered``.
* ``SdkLogBridge`` is the only handler of the ``opentelemetry`` logger (which
  stops propagating to the root): what the SDK logs during an export becomes
  that export's ``detail``; anything else becomes ``otel.sdk.warning`` (or
  ``otel.sdk.error``) with ``detail`` and ``logger``, once per message per interval.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Sequence
from typing import Any

import structlog
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

__all__ = [
    "DEFAULT_INTERVAL",
    "CauseReporter",
    "ReportingLogExporter",
    "ReportingSpanExporter",
    "SdkLogBridge",
    "install_bridge",
    "run_export",
]

_log = structlog.get_logger("supd.telemetry")
DEFAULT_INTERVAL = 30.0
_NUMBER = re.compile(r"\d+(\.\d+)?")
_capture = threading.local()


def _cause(detail: str) -> str:
    """The cause behind a message: numbers (retry delays, counts) do not make a new one."""
    return _NUMBER.sub("N", detail)


class CauseReporter:
    """Rate-limited events for one pipeline: the first failure of a cause in full, then a count per interval.

    ``prefix`` is the event family (``otlp.spans.export``). Thread-safe: the
    SDK exports from its own worker thread and may shut down from another.
    """

    def __init__(self, prefix: str, endpoint: str, interval: float = DEFAULT_INTERVAL) -> None:
        self._prefix = prefix
        self._endpoint = endpoint
        self._interval = interval
        self._lock = threading.Lock()
        self._cause: str | None = None
        self._detail = ""
        self._repeats = 0
        self._last_logged = 0.0
        self._failures = 0
        self._first_failure: float | None = None

    def failed(self, detail: str | None, items: int) -> None:
        """One failed export of ``items`` spans or events, and what was said about it.

        ``detail`` None (the SDK said nothing this time: it silences its own
        repeats) counts as a repeat of the cause in hand.
        """
        now = time.monotonic()
        with self._lock:
            self._failures += 1
            if self._first_failure is None:
                self._first_failure = now
            if detail is None:
                detail = self._detail if self._cause is not None else "the exporter failed without saying why"
            cause = _cause(detail)
            if cause != self._cause:
                self._flush_locked()
                self._cause, self._detail, self._last_logged = cause, detail, now
                _log.error(f"{self._prefix}.failed", endpoint=self._endpoint, detail=detail, items=items)
                return
            self._repeats += 1
            if now - self._last_logged >= self._interval:
                self._flush_locked()
                self._last_logged = now

    def succeeded(self) -> None:
        """An export went through: after failures, say so once."""
        with self._lock:
            if self._first_failure is None:
                return
            self._flush_locked()
            _log.info(
                f"{self._prefix}.recovered",
                endpoint=self._endpoint,
                failed_exports=self._failures,
                down_s=round(time.monotonic() - self._first_failure, 3),
            )
            self._cause, self._first_failure, self._failures = None, None, 0

    def flush(self) -> None:
        """Log the count of repeats not yet reported (at shutdown)."""
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if self._cause is None or not self._repeats:
            return
        _log.error(f"{self._prefix}.failed.repeated", endpoint=self._endpoint, detail=self._detail, times=self._repeats)
        self._repeats = 0


def run_export(reporter: CauseReporter, items: int, export: Any) -> bool:
    """Call ``export()`` capturing what the SDK logs meanwhile; report the outcome; True on success."""
    said: list[str] = []
    _capture.said = said
    try:
        ok = bool(export())
    except Exception as exc:  # noqa: BLE001 - reported and counted below; the SDK would only log it again
        said.append(f"{type(exc).__name__}: {exc}")
        ok = False
    finally:
        _capture.said = None
    if ok:
        reporter.succeeded()
    else:
        reporter.failed("; ".join(said) or None, items)
    return ok


class ReportingSpanExporter(SpanExporter):
    """An SDK span exporter whose failures are reported as ``otlp.spans.export.*`` events."""

    def __init__(self, inner: SpanExporter, endpoint: str, interval: float = DEFAULT_INTERVAL) -> None:
        self._inner = inner
        self.reporter = CauseReporter("otlp.spans.export", endpoint, interval)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        ok = run_export(self.reporter, len(spans), lambda: self._inner.export(spans) == SpanExportResult.SUCCESS)
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        self.reporter.flush()
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class ReportingLogExporter(LogRecordExporter):
    """An SDK log record exporter (supd's own events) whose failures are ``otlp.events.export.*`` events."""

    def __init__(self, inner: LogRecordExporter, endpoint: str, interval: float = DEFAULT_INTERVAL) -> None:
        self._inner = inner
        self.reporter = CauseReporter("otlp.events.export", endpoint, interval)

    def export(self, batch: Sequence[ReadableLogRecord]) -> LogRecordExportResult:
        ok = run_export(
            self.reporter, len(batch), lambda: self._inner.export(batch) == LogRecordExportResult.SUCCESS
        )
        return LogRecordExportResult.SUCCESS if ok else LogRecordExportResult.FAILURE

    def shutdown(self) -> None:
        self.reporter.flush()
        self._inner.shutdown()  # type: ignore[no-untyped-call]  # the SDK leaves this one unannotated

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._inner.force_flush(timeout_millis)


class SdkLogBridge(logging.Handler):
    """The ``opentelemetry`` logger's handler: the SDK's words become a field of supd's own events."""

    def __init__(self, interval: float = DEFAULT_INTERVAL) -> None:
        super().__init__(logging.WARNING)
        self._interval = interval
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}
        self._seen_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            detail = record.getMessage()
        except (TypeError, ValueError) as exc:  # a malformed format string in a library's call
            detail = f"{record.msg!r} (unformattable: {exc})"
        if record.exc_info and record.exc_info[1] is not None:
            detail += f": {type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        said: list[str] | None = getattr(_capture, "said", None)
        if said is not None:  # during an export: its reporter tells it
            said.append(detail)
            return
        key = (record.name, _cause(str(record.msg)))
        now = time.monotonic()
        with self._seen_lock:
            last, repeats = self._seen.get(key, (0.0, 0))
            if last and now - last < self._interval:
                self._seen[key] = (last, repeats + 1)
                return
            if len(self._seen) > 1000:
                self._seen.clear()
            self._seen[key] = (now, 0)
        event = "otel.sdk.error" if record.levelno >= logging.ERROR else "otel.sdk.warning"
        fields: dict[str, Any] = {"detail": detail, "logger": record.name}
        if repeats:
            fields["repeats"] = repeats
        _log.log(record.levelno, event, **fields)


def install_bridge(interval: float = DEFAULT_INTERVAL) -> SdkLogBridge:
    """Make an ``SdkLogBridge`` the only handler of the ``opentelemetry`` logger, which no longer propagates.

    Call it once the exporters are built: it also removes the SDK's own
    ``DuplicateFilter`` from the ``opentelemetry.*`` loggers that exist then.
    That filter drops a message whose template was logged in the last 20 s,
    which would hide the words of a new cause; the reporters here rate-limit
    by cause instead.
    """
    for name, existing in list(logging.root.manager.loggerDict.items()):
        if name.startswith("opentelemetry") and isinstance(existing, logging.Logger):
            for f in list(existing.filters):
                if type(f).__name__ == "DuplicateFilter":
                    existing.removeFilter(f)
    logger = logging.getLogger("opentelemetry")
    for handler in list(logger.handlers):
        if isinstance(handler, SdkLogBridge):
            logger.removeHandler(handler)
    bridge = SdkLogBridge(interval)
    logger.addHandler(bridge)
    logger.propagate = False
    return bridge
