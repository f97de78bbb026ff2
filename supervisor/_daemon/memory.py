"""Keep big buffers on the heap: glibc's defaults make every large read or message page-fault.

supd allocates many short-lived buffers of 64 KiB to 1 MiB (pipe reads, Stream
messages). Above glibc's mmap threshold each one is a fresh mmap, page-faulted
in and unmapped again; measured here, serialising a fresh 256 KiB message took
370 µs that way and 22 µs from the heap, and 1 MiB took 1.4 ms against 75 µs.
Raising the mmap and trim thresholds keeps those buffers on a reused heap. The
cost is that up to ``TRIM_THRESHOLD`` of freed memory may stay mapped after a
burst, well within what the rings are allowed to hold anyway.

A removed child's ring is another matter: all of it is freed at once, and glibc
kept it in its arenas, so supd's RSS stayed at its peak (ten children with full
8 MiB rings: 141 MB, against 48 MB before them). ``RELEASER`` hands such memory
back with ``malloc_trim(0)`` (glibc 2.8 and later) on a thread of its own: 60 MB
once the ten were removed. A trim takes about a millisecond per 100 MB freed,
without the GIL (ctypes releases it); the next large buffers fault in again once.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import threading
from collections.abc import Callable

import structlog

__all__ = ["MMAP_THRESHOLD", "RELEASER", "TRIM_THRESHOLD", "Releaser", "release_soon", "tune_malloc"]

log = structlog.get_logger("supd.memory")
MMAP_THRESHOLD = 8 * 1024 * 1024
TRIM_THRESHOLD = 64 * 1024 * 1024
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


@functools.cache
def _libc_name() -> str | None:
    """The C library's file name, looked up once: ``find_library`` runs ldconfig (about 30 ms measured here)."""
    return ctypes.util.find_library("c")


def _libc() -> ctypes.CDLL:
    """The C library (already loaded into the process: no file is read); raises OSError."""
    return ctypes.CDLL(_libc_name())


def tune_malloc() -> bool:
    """Raise glibc's thresholds; False (and a log line) where that is not glibc or it refuses."""
    try:
        mallopt = _libc().mallopt
    except (OSError, AttributeError) as exc:
        log.warning("memory.mallopt.unavailable", libc=_libc_name(), error=str(exc))
        return False
    ok: bool = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not ok:
        log.warning("memory.mallopt.refused", mmap_threshold=MMAP_THRESHOLD, trim_threshold=TRIM_THRESHOLD)
    return ok


class Releaser:
    """Hands freed memory back to the system (``malloc_trim(0)``) on a thread of its own, when asked.

    ``arm()`` starts the thread, once, from ordinary code. ``release_soon()`` may
    then be called from anywhere, a finalizer run by the garbage collector
    included: it takes no lock and allocates nothing, one non-blocking write to
    the thread's pipe (requests that come while one is pending are merged).
    Where the C library has no ``malloc_trim`` (musl), ``arm()`` logs that once
    and nothing is ever released.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake_w: int | None = None
        self._unavailable = False
        self.trims = 0  # completed malloc_trim calls (written by the thread alone)

    def arm(self) -> None:
        """Start the releasing thread unless it runs (or cannot run here)."""
        with self._lock:
            if self._wake_w is not None or self._unavailable:
                return
            try:
                trim: Callable[[int], int] = _libc().malloc_trim
            except (OSError, AttributeError) as exc:
                self._unavailable = True
                log.info("memory.trim.unavailable", error=str(exc))
                return
            r, w = os.pipe2(os.O_CLOEXEC)
            os.set_blocking(w, False)
            threading.Thread(target=self._run, args=(r, trim), name="supd-trim", daemon=True).start()
            self._wake_w = w

    def release_soon(self) -> None:
        """Ask the thread to trim (nothing when ``arm`` was never called)."""
        w = self._wake_w
        if w is None:
            return
        with contextlib.suppress(BlockingIOError):  # the pipe is full: a trim is pending, which covers this one
            os.write(w, b"\0")

    def _run(self, r: int, trim: Callable[[int], int]) -> None:
        while True:
            os.read(r, 4096)  # every request made so far: one trim covers them all
            trim(0)
            self.trims += 1


RELEASER = Releaser()


def release_soon() -> None:
    """``RELEASER.release_soon()``: what a removed child's ring calls once it is freed."""
    RELEASER.release_soon()
