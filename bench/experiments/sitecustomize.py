"""Out-of-tree experiments on supd's export path, for the drain benchmark only.

Nothing in ``supervisor/`` is changed: with this directory on PYTHONPATH and
``SUPD_BENCH_PATCH`` set, supd processes (and only they: the check is on the
command line) patch themselves when ``supervisor._daemon.telemetry.otlp.export`` is imported::

    SUPD_BENCH_PATCH=varint,regex PYTHONPATH=bench/experiments \\
        /work/venv/bin/python bench/drain.py --export on --scenarios burst

supd's stderr then says ``supd bench patch applied: [...]`` (``--keep`` keeps
it). ``SUPD_BENCH_PATCH`` is a comma-separated list of:

``varint``
    ``otlp_encode._varint`` by table for n >= 16384 (the sequence numbers of a
    long-lived child): the first byte from a 128-entry table, the rest from
    ``_SMALL``. Same bytes.
``regex``
    possessive quantifiers in ``severity._PREFIX_LEVEL``: same matches (a
    shorter letter or timestamp run is always followed by a character the
    pattern cannot take next), no backtracking.
``nice``
    the exporter's worker thread at nice +``SUPD_BENCH_NICE`` (default 10),
    per-thread ``setpriority``.
``backoff``
    the worker encodes nothing while offers are being refused for a full
    queue (it sleeps ``SUPD_BENCH_BACKOFF_S``, default 2 ms, until no refusal
    came in that time). Starves export under sustained overload: an
    experiment to locate the cost, not a fix.
``duty``
    the same idea, bounded: while offers are refused, after each 256-line
    slice the worker sleeps so that it runs ``SUPD_BENCH_DUTY`` (default 0.5)
    of the time.
``sendtime``
    logs, every 25 requests, the seconds spent in ``Transport.export`` (the
    worker blocked on the receiver).
"""

from __future__ import annotations

import os
import sys
from typing import Any

_PATCHES = set(filter(None, os.environ.get("SUPD_BENCH_PATCH", "").split(",")))


def _varint() -> None:
    import supervisor._daemon.telemetry.otlp.encode as oe

    orig, small = oe._varint, oe._SMALL
    first = tuple(bytes((i | 0x80,)) for i in range(128))

    def varint(n: int) -> bytes:
        if n < 16384:
            return small[n]
        return first[n & 0x7F] + (small[n >> 7] if n < (1 << 21) else orig(n >> 7))

    oe._varint = varint


def _regex() -> None:
    import re

    import supervisor._daemon.telemetry.severity as sv

    sv._PREFIX_LEVEL = re.compile(
        rb"[\[(<]?(?:\d[\d\-:./,+TZ]*+[\])>]?[\s|]++){0,2}[\[(<]?([A-Za-z]{3,9}+)([\s:\])>|]|$)"
    )


def _nice() -> None:
    import threading

    import supervisor._daemon.telemetry.otlp.export as otlp

    run = otlp.LineExporter._run
    niceness = int(os.environ.get("SUPD_BENCH_NICE", "10"))

    def _run(self: Any) -> None:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
        run(self)

    otlp.LineExporter._run = _run  # type: ignore[method-assign]


def _backoff() -> None:
    import time

    import supervisor._daemon.telemetry.otlp.export as otlp

    build = otlp.LineExporter._build_batch
    pause = float(os.environ.get("SUPD_BENCH_BACKOFF_S", "0.002"))

    def _build_batch(self: Any) -> Any:
        while True:
            with self._lock:
                refused = self._by_reason.get("queue_full", 0)
            time.sleep(pause)
            with self._lock:
                if self._by_reason.get("queue_full", 0) == refused:
                    break
        return build(self)

    otlp.LineExporter._build_batch = _build_batch  # type: ignore[method-assign]


def _duty() -> None:
    import time
    import types

    import supervisor._daemon.telemetry.otlp.export as otlp

    exporters: list[Any] = []
    init = otlp.LineExporter.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        exporters.append(self)

    otlp.LineExporter.__init__ = __init__  # type: ignore[method-assign]
    share = float(os.environ.get("SUPD_BENCH_DUTY", "0.5"))
    state = {"last": time.monotonic(), "refused": 0}

    def sleep(secs: float) -> None:
        # otlp.py calls time.sleep(0) after every slice of lines: that is where the worker gives way.
        if secs == 0 and exporters:
            refused = exporters[0]._by_reason.get("queue_full", 0)  # a racy read is fine for a heuristic
            now = time.monotonic()
            if refused != state["refused"]:
                state["refused"] = refused
                time.sleep((now - state["last"]) * (1 - share) / share)
            else:
                time.sleep(0)
            state["last"] = time.monotonic()
            return
        time.sleep(secs)

    otlp.time = types.SimpleNamespace(monotonic=time.monotonic, sleep=sleep)  # type: ignore[assignment]


def _sendtime() -> None:
    import time

    import supervisor._daemon.telemetry.otlp.transport as tr

    for cls in (tr.GrpcTransport, tr.HttpTransport):

        def export(self: Any, body: bytes, timeout: float, _orig: Any = cls.export) -> Any:
            t0 = time.monotonic()
            try:
                return _orig(self, body, timeout)
            finally:
                st = self.__dict__.setdefault("_bench_sendtime", [0, 0.0, 0])
                st[0] += 1
                st[1] += time.monotonic() - t0
                st[2] += len(body)
                if st[0] % 25 == 0:
                    print(
                        f"bench sendtime: {st[0]} requests, {st[1]:.3f} s in export(), {st[2] / 1e6:.0f} MB",
                        file=sys.stderr,
                        flush=True,
                    )

        cls.export = export  # type: ignore[method-assign]


_APPLY = {
    "varint": _varint,
    "regex": _regex,
    "nice": _nice,
    "backoff": _backoff,
    "duty": _duty,
    "sendtime": _sendtime,
}


def _apply() -> None:
    unknown = _PATCHES - set(_APPLY)
    if unknown:
        print(f"supd bench patch: unknown {sorted(unknown)}", file=sys.stderr, flush=True)
    for name in sorted(_PATCHES & set(_APPLY)):
        _APPLY[name]()
    print(f"supd bench patch applied: {sorted(_PATCHES & set(_APPLY))}", file=sys.stderr, flush=True)


if _PATCHES and any(arg.startswith("supervisor._daemon") or arg.endswith("/supd") for arg in sys.orig_argv):
    import importlib.abc
    import importlib.machinery
    import importlib.util

    class _Hook(importlib.abc.MetaPathFinder):
        """Patches right after ``supervisor._daemon.telemetry.otlp.export`` (and so encode and severity) is loaded."""

        done = False

        def find_spec(self, name: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
            if name != "supervisor._daemon.telemetry.otlp.export" or _Hook.done:
                return None
            _Hook.done = True
            spec = importlib.util.find_spec(name)
            if spec is None or spec.loader is None:
                return spec
            loader = spec.loader
            exec_module = loader.exec_module

            def exec_and_patch(module: Any) -> None:
                exec_module(module)
                _apply()

            loader.exec_module = exec_and_patch  # type: ignore[method-assign]
            return spec

    sys.meta_path.insert(0, _Hook())
