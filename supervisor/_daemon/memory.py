"""Keep big buffers on the heap: glibc's defaults make every large read or message page-fault.

supd allocates many short-lived buffers of 64 KiB to 1 MiB (pipe reads, Stream
messages). Above glibc's mmap threshold each one is a fresh mmap, page-faulted
in and unmapped again; measured here, serialising a fresh 256 KiB message took
370 µs that way and 22 µs from the heap, and 1 MiB took 1.4 ms against 75 µs.
Raising the mmap and trim thresholds keeps those buffers on a reused heap. The
cost is that up to ``TRIM_THRESHOLD`` of freed memory may stay mapped after a
burst, well within what the rings are allowed to hold anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util

import structlog

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "tune_malloc"]

log = structlog.get_logger("supd.memory")
MMAP_THRESHOLD = 8 * 1024 * 1024
TRIM_THRESHOLD = 64 * 1024 * 1024
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def tune_malloc() -> bool:
    """Raise glibc's thresholds; False (and a log line) where that is not glibc or it refuses."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError) as exc:
        log.warning("memory.mallopt.unavailable", libc=name, error=str(exc))
        return False
    ok: bool = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if not ok:
        log.warning("memory.mallopt.refused", mmap_threshold=MMAP_THRESHOLD, trim_threshold=TRIM_THRESHOLD)
    return ok
