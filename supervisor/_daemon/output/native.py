"""Which implementation of the output path's hot loops runs: the C core (``_native``) or the pure-Python one.

The C core is built by ``pip install`` where a C compiler exists (setup.py; the build succeeds without it).
It cuts each pipe read into records, counts and measures lines, and serialises Stream batches, without the
GIL while it scans. The pure-Python code (lines.py, records.py, stream.py) is the reference it is tested
against byte for byte, and runs when the core is missing or ``SUPD_PURE_PYTHON=1`` is set.

Why C, measured on a shared 2-core machine (bench/README.md, "The native core of the output path"): in
Python every read of up to 1 MiB was counted and cut, and every 256 KiB Stream batch split into lines, while
holding the GIL. Side by side in one session, a 200 MB flood with ``supctl logs -f`` attached cost supd 0.84
CPU s per 100 MB with 0.83 M lines/s reaching the follower (Python) against 0.30 and 2.2 M (C); with nobody
reading, supd took 2.3-2.7x the time of ``cat`` (supervisord's level) against 0.9-1.6x (well ahead of it).
"""

from __future__ import annotations

import os
from typing import Final

__all__ = ["IMPLEMENTATION", "UNAVAILABLE_REASON", "core"]

UNAVAILABLE_REASON = ""
try:
    from supervisor._daemon.output import _native as core
except ImportError as exc:  # not built (no compiler at install time): the pure-Python path runs
    core = None  # type: ignore[assignment]
    UNAVAILABLE_REASON = f"not built: {exc}"

if core is not None and os.environ.get("SUPD_PURE_PYTHON") == "1":
    core = None  # type: ignore[assignment]
    UNAVAILABLE_REASON = "SUPD_PURE_PYTHON=1"

IMPLEMENTATION: Final = "native" if core is not None else "python"
