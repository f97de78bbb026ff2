"""What ``supctl top`` shows, computed from Health snapshots: pure, no I/O, no clock of its own.

A row per child in name order. LINES/S is the change of the child's drained
line counters (``stdout_lines + stderr_lines``, counted since the child was
spawned) between two snapshots, divided by the monotonic seconds between them;
``-`` when there is no earlier snapshot, the child is new, or its counters went
back (removed and spawned again under the same name). DROPS is
``export_dropped_lines``: lines the OpenTelemetry export gave up on (a full
queue, a failing endpoint); 0 while export is off.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Iterable, Mapping, Sequence

from supervisor import _cli_format as fmt
from supervisor.v1 import supervisor_pb2 as pb

__all__ = [
    "COLUMNS",
    "Cursor",
    "Row",
    "Sample",
    "header_line",
    "line_rates",
    "rate_text",
    "rows_of",
    "short_exit",
    "window",
]

COLUMNS = ("NAME", "STATE", "HEALTH", "PID", "GEN", "RESTARTS", "UPTIME", "LINES/S", "DROPS", "LAST-EXIT")


@dataclasses.dataclass(frozen=True, slots=True)
class Sample:
    """The line counters of every child at one moment: ``at`` in monotonic seconds, ``lines`` by child name."""

    at: float
    lines: Mapping[str, int]

    @classmethod
    def of(cls, at: float, children: Iterable[pb.ChildInfo]) -> Sample:
        return cls(at, {c.spec.name: c.stdout_lines + c.stderr_lines for c in children})


def line_rates(before: Sample | None, now: Sample) -> dict[str, float | None]:
    """Lines per second of each child in ``now`` since ``before``; None where it cannot be known."""
    elapsed = now.at - before.at if before is not None else 0.0
    rates: dict[str, float | None] = {}
    for name, count in now.lines.items():
        earlier = before.lines.get(name) if before is not None else None
        if earlier is None or elapsed <= 0 or count < earlier:
            rates[name] = None
        else:
            rates[name] = (count - earlier) / elapsed
    return rates


def rate_text(rate: float | None) -> str:
    """``-`` for unknown, one decimal below 10 (``0.5``, ``9.9``), whole numbers above (``12``, ``4210``)."""
    if rate is None:
        return "-"
    return f"{rate:.1f}" if round(rate, 1) < 10 else f"{rate:.0f}"


def short_exit(child: pb.ChildInfo) -> str:
    """How the previous process ended, short: ``exit 3``, ``SIGKILL (after grace)``, ``SIGTERM (requested)``,
    ``SIGSEGV (core)``; ``-`` when none ended yet."""
    if not child.HasField("last_exit"):
        return "-"
    e = child.last_exit
    text = f"exit {e.code}" if e.exited else e.signal_name or f"signal {e.signal}"
    flags = (("core", e.core_dumped), ("after grace", e.killed_after_grace), ("requested", e.requested))
    notes = [note for note, present in flags if present]
    return f"{text} ({', '.join(notes)})" if notes else text


@dataclasses.dataclass(frozen=True, slots=True)
class Row:
    """One child's line in the view; ``cells()`` gives the texts in ``COLUMNS`` order."""

    name: str
    state: str
    health: str
    pid: int
    generation: int
    restarts: int
    uptime_seconds: float
    lines_per_second: float | None
    drops: int
    last_exit: str

    def cells(self) -> tuple[str, ...]:
        return (
            self.name,
            self.state,
            self.health,
            str(self.pid) if self.pid else "-",
            str(self.generation),
            str(self.restarts),
            fmt.duration(self.uptime_seconds),
            rate_text(self.lines_per_second),
            str(self.drops),
            self.last_exit,
        )


def rows_of(children: Iterable[pb.ChildInfo], rates: Mapping[str, float | None]) -> list[Row]:
    """One row per child, sorted by name."""
    return sorted(
        (
            Row(
                name=c.spec.name,
                state=fmt.state_name(c.state),
                health=fmt.health_name(c.health),
                pid=c.pid,
                generation=c.generation,
                restarts=c.restart_count,
                uptime_seconds=c.uptime_seconds,
                lines_per_second=rates.get(c.spec.name),
                drops=c.export_dropped_lines,
                last_exit=short_exit(c),
            )
            for c in children
        ),
        key=lambda row: row.name,
    )


def header_line(address: str, health: pb.HealthResponse, when: datetime.datetime) -> str:
    """``supd 0.1.0, up 3m04s: 3 children, refreshed 09:41:07, at unix:///run/supd/supd.sock`` (``when``: local
    time); the address last, as the part a narrow screen can best do without."""
    n = len(health.children)
    count = f"{n} child" if n == 1 else f"{n} children"
    up = fmt.duration(health.supervisor_uptime_seconds)
    log = f", {health.log_dropped_events} own log events dropped" if health.log_dropped_events else ""
    version = health.version or "(unknown version)"
    return f"supd {version}, up {up}: {count}{log}, refreshed {when:%H:%M:%S}, at {address}"


@dataclasses.dataclass(frozen=True, slots=True)
class Cursor:
    """The selected child, kept by name across refreshes; ``index`` is where it was, for when it goes away."""

    name: str | None = None
    index: int = 0

    def settle(self, names: Sequence[str]) -> Cursor:
        """The same child if it is still there, else the one now at its place (or the last); None if no child."""
        if not names:
            return Cursor(None, 0)
        if self.name in names:
            return Cursor(self.name, names.index(self.name))
        i = min(self.index, len(names) - 1)
        return Cursor(names[i], i)

    def move(self, names: Sequence[str], step: int) -> Cursor:
        """``step`` rows down (negative: up), stopping at the first and the last."""
        here = self.settle(names)
        if here.name is None:
            return here
        i = max(0, min(len(names) - 1, here.index + step))
        return Cursor(names[i], i)


def window(count: int, index: int, room: int) -> range:
    """The rows to show when ``count`` rows may not fit in ``room``: all when they fit, else ``room`` rows that
    hold ``index``, scrolled no further than needed to keep it in the middle."""
    room = max(1, room)
    if count <= room:
        return range(count)
    start = max(0, min(index - room // 2, count - room))
    return range(start, start + room)
