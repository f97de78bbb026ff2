"""Handing the memory of a removed child's ring back to the system, so supd's resident set shrinks again.

A ring's records are allocated by the drain threads from glibc's per-thread arenas. When a child is removed
its ring is freed, but glibc keeps freed memory in the arena for reuse (it returns only the top of the main
heap on its own), so supd's RSS stayed at its peak: measured, ten children with 8 MiB rings flooded and
removed left supd at 128 MB against 48 MB before them. ``malloc_trim(0)`` (glibc 2.8 and later) releases
every free page of every arena; after the same removal it brought supd back to 58 MB.

``release_soon()`` is called when a removed child's ring is freed (``ChildOutput.close`` arranges it). It
trims on a short-lived thread of its own, one at a time: the call takes milliseconds, without the GIL (ctypes
releases it), and holds each arena's lock only while it walks that arena. Where the C library has no
``malloc_trim`` (musl), nothing is released and this is logged once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import structlog

__all__ = ["RELEASER", "Releaser", "release_soon"]

log = structlog.get_logger("supervisor")


class Releaser:
    """Calls ``malloc_trim(0)`` on a thread of its own when asked; at most one call waits at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending = False
        self._trim: Callable[[int], int] | None = None
        self._unavailable = False
        self.trims = 0  # completed malloc_trim calls

    def release_soon(self) -> None:
        """Return the memory freed so far to the system, on a thread of its own."""
        with self._lock:
            if self._pending or self._unavailable:
                return
            self._pending = True
        threading.Thread(target=self._release, name="supd-trim", daemon=True).start()

    def _release(self) -> None:
        with self._lock:
            self._pending = False  # memory freed from now on is trimmed by the next call
        trim = self._malloc_trim()
        if trim is None:
            return
        trim(0)
        with self._lock:
            self.trims += 1

    def _malloc_trim(self) -> Callable[[int], int] | None:
        if self._trim is None and not self._unavailable:
            import ctypes  # only once a child is removed: an idle supd does not load it

            try:
                self._trim = ctypes.CDLL(None).malloc_trim
            except AttributeError:
                self._unavailable = True
                log.info("supd.memory.trim_unavailable", reason="the C library has no malloc_trim")
        return self._trim


RELEASER = Releaser()


def release_soon() -> None:
    """``RELEASER.release_soon()``: what a removed child's ring calls once it is freed."""
    RELEASER.release_soon()
