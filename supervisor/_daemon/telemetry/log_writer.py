"""supd's own log output through a bounded queue: writing a log line never blocks the caller.

supd's stderr may be a pipe that nobody reads (a container runtime that
stopped collecting, a parent that never reads). A synchronous write then
blocks the event loop, and after about 150 Spawns every RPC timed out.
``LogWriter`` is the file-like object structlog and the stdlib logging handler
write to: ``write`` only appends the line to a queue bounded in lines and
bytes, or drops it and counts the drop when the queue is full. One daemon
thread writes the queue to the file descriptor, blocking there instead of
in the caller. When lines were dropped, the thread writes a
``supd.log.dropped`` summary line (how many, since when) as soon as writing
works again, at most once per ``summary_interval`` seconds, and once more at
exit.

Thread safety: a ``threading.Condition`` guards the queue and the counters;
``write`` holds it for O(1) work only.
"""

from __future__ import annotations

import atexit
import collections
import dataclasses
import datetime
import errno
import json
import os
import select
import threading
import time

__all__ = [
    "DEFAULT_MAX_QUEUE_BYTES",
    "DEFAULT_MAX_QUEUE_LINES",
    "LogWriter",
    "LogWriterStatistics",
    "install",
    "installed",
    "log_dropped_events",
]

DEFAULT_MAX_QUEUE_LINES = 2048
DEFAULT_MAX_QUEUE_BYTES = 1024 * 1024
DEFAULT_SUMMARY_INTERVAL = 10.0
# How long the exit handler waits for queued lines to reach a slow reader: a stuck stderr delays exit this long.
EXIT_FLUSH_SECONDS = 1.0
# How long one write waits for a non-blocking descriptor to become writable before trying again.
_WRITABLE_WAIT = 1.0


@dataclasses.dataclass(frozen=True, slots=True)
class LogWriterStatistics:
    """A consistent snapshot of a LogWriter; every count is of log lines (events) since it started."""

    written: int  # lines written to the descriptor
    dropped: int  # lines dropped: the queue was full, or the descriptor failed
    queued: int  # lines waiting for the writer thread
    queued_bytes: int
    write_errors: int  # failed writes (the lines of each counted in ``dropped``)
    last_error: str | None  # the last write error, e.g. "EPIPE: Broken pipe"


class LogWriter:
    """A never-blocking text sink for log lines, written to ``fd`` by its own thread.

    ``write(text)`` takes whole lines (structlog and ``logging.StreamHandler``
    write each record in one call). ``max_lines``/``max_bytes`` bound the
    queue; ``summary_interval`` (s) spaces the ``supd.log.dropped`` summaries.
    The descriptor is not closed by the writer.
    """

    def __init__(
        self,
        fd: int,
        *,
        max_lines: int = DEFAULT_MAX_QUEUE_LINES,
        max_bytes: int = DEFAULT_MAX_QUEUE_BYTES,
        summary_interval: float = DEFAULT_SUMMARY_INTERVAL,
    ) -> None:
        if max_lines < 1 or max_bytes < 1 or not summary_interval > 0:
            raise ValueError("max_lines and max_bytes must be >= 1 and summary_interval > 0")
        self._fd = fd
        self._max_lines = max_lines
        self._max_bytes = max_bytes
        self._interval = summary_interval
        self._cond = threading.Condition(threading.Lock())
        self._queue: collections.deque[str] = collections.deque()
        self._queued_bytes = 0
        self._queued_lines = 0
        self._busy = False  # the thread holds lines taken from the queue and not yet written
        self._written = 0
        self._dropped = 0
        self._write_errors = 0
        self._last_error: str | None = None
        # Drops not yet reported in a summary line, and when the first of them happened (wall clock).
        self._unreported = 0
        self._unreported_since: float | None = None
        self._last_summary = 0.0
        self._thread = threading.Thread(target=self._run, name="supd-log-writer", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        s = self.statistics()
        return f"<LogWriter fd={self._fd} written={s.written} dropped={s.dropped} queued={s.queued}>"

    # -- the caller's side: never blocks on I/O

    def write(self, text: str) -> int:
        """Queue ``text`` (one or more whole lines) or drop and count it; returns ``len(text)`` either way."""
        size = len(text)
        lines = text.count("\n") or 1
        with self._cond:
            if len(self._queue) >= self._max_lines or self._queued_bytes + size > self._max_bytes:
                self._drop_locked(lines)
                return size
            self._queue.append(text)
            self._queued_bytes += size
            self._queued_lines += lines
            self._cond.notify()
        return size

    def flush(self) -> None:
        """Nothing to do: the writer thread writes as soon as it can (file-like API)."""

    def statistics(self) -> LogWriterStatistics:
        """A consistent snapshot of the counts."""
        with self._cond:
            return LogWriterStatistics(
                written=self._written,
                dropped=self._dropped,
                queued=self._queued_lines,
                queued_bytes=self._queued_bytes,
                write_errors=self._write_errors,
                last_error=self._last_error,
            )

    def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s until everything queued, and a summary of drops, is written.

        True when nothing is left; False when the descriptor did not take it in
        time (the thread goes on trying; being a daemon thread, it never holds up exit).
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            self._last_summary = 0.0  # a final summary is due now, whatever the interval
            self._cond.notify()
            while self._queue or self._busy or self._unreported:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    # -- the writer thread

    def _drop_locked(self, lines: int) -> None:
        self._dropped += lines
        if not self._unreported:
            self._unreported_since = time.time()
        self._unreported += lines

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._summary_due_locked():
                    self._cond.wait(self._interval if self._unreported else None)
                batch = list(self._queue)
                lines = self._queued_lines
                self._queue.clear()
                self._queued_bytes = 0
                self._queued_lines = 0
                summary = self._summary_locked() if self._summary_due_locked() else None
                self._busy = True
            try:
                if batch and self._write_all("".join(batch).encode("utf-8", "backslashreplace")):
                    with self._cond:
                        self._written += lines
                elif batch:
                    with self._cond:
                        self._drop_locked(lines)
                if summary is not None:
                    self._write_all(summary.encode())
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _summary_due_locked(self) -> bool:
        return bool(self._unreported) and time.monotonic() - self._last_summary >= self._interval

    def _summary_locked(self) -> str:
        """The ``supd.log.dropped`` line for the drops not yet reported (which it then counts as reported)."""
        since = datetime.datetime.fromtimestamp(self._unreported_since or time.time(), datetime.UTC)
        line = json.dumps(
            {
                "dropped": self._unreported,
                "dropped_total": self._dropped,
                "since": since.isoformat().replace("+00:00", "Z"),
                "detail": "supd's log output could not be written fast enough; these events were lost",
                "event": "supd.log.dropped",
                "level": "warning",
                "timestamp": datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z"),
            }
        )
        self._unreported = 0
        self._unreported_since = None
        self._last_summary = time.monotonic()
        return line + "\n"

    def _write_all(self, data: bytes) -> bool:
        """Write every byte, blocking this thread as long as the reader is slow; False on a failed descriptor."""
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._fd, view) :]
            except InterruptedError:
                continue
            except BlockingIOError:
                # A descriptor inherited in non-blocking mode: wait for room instead of spinning.
                select.select([], [self._fd], [], _WRITABLE_WAIT)
            except OSError as exc:
                with self._cond:
                    self._write_errors += 1
                    name = errno.errorcode.get(exc.errno or 0, "E?")
                    self._last_error = f"{name}: {exc.strerror}"
                return False
        return True


_installed: LogWriter | None = None
_install_lock = threading.Lock()


def install(fd: int, **options: float) -> LogWriter:
    """The process's log writer on ``fd`` (made once; later calls return the same one).

    Registers an exit handler that drains it for up to ``EXIT_FLUSH_SECONDS``.
    ``options`` are LogWriter's keyword arguments.
    """
    global _installed  # noqa: PLW0603 - one stderr per process, so one writer per process
    with _install_lock:
        if _installed is None:
            _installed = LogWriter(
                fd,
                max_lines=int(options.get("max_lines", DEFAULT_MAX_QUEUE_LINES)),
                max_bytes=int(options.get("max_bytes", DEFAULT_MAX_QUEUE_BYTES)),
                summary_interval=float(options.get("summary_interval", DEFAULT_SUMMARY_INTERVAL)),
            )
            atexit.register(_installed.drain, EXIT_FLUSH_SECONDS)
        return _installed


def installed() -> LogWriter | None:
    """The process's log writer, if ``install`` made one."""
    return _installed


def log_dropped_events() -> int:
    """supd's own log events dropped since start (0 when no writer is installed): for Health."""
    writer = _installed
    return writer.statistics().dropped if writer is not None else 0
