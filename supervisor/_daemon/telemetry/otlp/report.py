"""Logging export events so a dead endpoint is visible but does not flood the log.

The first failure of a kind (reason and the endpoint's words) is logged in
full as ``otlp.export.failed``; identical ones after it are counted and logged
as one ``otlp.export.failed.repeated`` per interval (and when the kind
changes); the first success after failures logs ``otlp.export.recovered`` with
how many attempts failed and for how long. Used by the exporter's worker thread
only, so it needs no lock.
"""

from __future__ import annotations

import time
from typing import Any

import structlog

from supervisor._daemon.telemetry.otlp.transport import ExportError

__all__ = ["ContextLog", "ErrorReporter"]

_log = structlog.get_logger()


class ContextLog:
    """structlog events with fixed fields (such as ``endpoint=``), configured at each call.

    Not ``log.bind()``: a bound logger freezes the configuration of the moment
    it is made, and an exporter is built before structlog is configured (and
    before a test's ``capture_logs``).
    """

    def __init__(self, **context: Any) -> None:
        self._context = context

    def info(self, event: str, **fields: Any) -> None:
        _log.info(event, **self._context, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        _log.warning(event, **self._context, **fields)

    def error(self, event: str, **fields: Any) -> None:
        _log.error(event, **self._context, **fields)

    def exception(self, event: str, **fields: Any) -> None:
        _log.exception(event, **self._context, **fields)


class ErrorReporter:
    """Rate-limits failure events: the first in full, then one count per ``interval`` s."""

    def __init__(self, log: ContextLog, interval: float = 30.0) -> None:
        self._log = log
        self._interval = interval
        self._key: tuple[str, str, bool] | None = None
        self._repeats = 0  # identical failures not yet logged
        self._repeat_lines = 0  # lines in batches dropped by those failures
        self._last_logged = 0.0
        self._first_failure: float | None = None
        self._failures = 0

    def failed(self, exc: ExportError, *, attempt: int, lines: int, retry_in: float | None) -> None:
        """One failed attempt at sending ``lines`` lines; ``retry_in`` None: the batch is dropped."""
        now = time.monotonic()
        self._failures += 1
        if self._first_failure is None:
            self._first_failure = now
        key = (exc.reason, exc.detail, exc.retryable)
        if key != self._key:
            self._flush()
            self._key = key
            self._last_logged = now
            self._log.error(
                "otlp.export.failed",
                reason=exc.reason,
                detail=exc.detail,
                retryable=exc.retryable,
                attempt=attempt,
                lines=lines,
                retry_in_s=None if retry_in is None else round(retry_in, 3),
                batch_dropped=retry_in is None,
            )
            return
        self._repeats += 1
        if retry_in is None:
            self._repeat_lines += lines
        if now - self._last_logged >= self._interval:
            self._flush()
            self._last_logged = now

    def succeeded(self) -> None:
        """A batch was accepted: if failures came before, say that export recovered."""
        if self._first_failure is None:
            return
        self._flush()
        self._log.info(
            "otlp.export.recovered",
            failed_attempts=self._failures,
            down_s=round(time.monotonic() - self._first_failure, 3),
        )
        self._key = None
        self._first_failure = None
        self._failures = 0

    def flush(self) -> None:
        """Log the count of identical failures not yet reported (the worker calls this when it stops)."""
        self._flush()

    def _flush(self) -> None:
        """Log the count of identical failures since the last event, if any."""
        if self._key is None or not self._repeats:
            return
        reason, detail, retryable = self._key
        self._log.error(
            "otlp.export.failed.repeated",
            reason=reason,
            detail=detail,
            retryable=retryable,
            times=self._repeats,
            lines_dropped=self._repeat_lines,
        )
        self._repeats = 0
        self._repeat_lines = 0
