"""What a ring holds: segments of lines as the child wrote them, and lifecycle events.

A ``Segment`` is one read from one pipe, kept as the bytes the child wrote:
consecutive lines of one stream, each ending in ``b"\\n"`` except possibly the
last (a piece of an over-long line, or the final unterminated line at EOF).
Lines are numbered by counting, never split on the hot path. A segment can
instead carry one ``ChildEvent``, which takes one sequence number.

These are domain records: the gRPC surface (api/convert.py) turns them into
protobuf messages in one place.
"""

from __future__ import annotations

import dataclasses
import enum
from array import array
from collections.abc import Callable
from itertools import accumulate

from supervisor._daemon.output import native

__all__ = [
    "STDERR",
    "STDOUT",
    "ChildEvent",
    "EventKind",
    "ExitRecord",
    "LineIndex",
    "Origin",
    "Segment",
    "line_count",
    "line_lengths",
]

# The values of supervisor.v1.OutputStream, kept here so the hot path needs no protobuf import.
STDOUT = 1
STDERR = 2


def py_line_count(data: bytes) -> int:
    """Lines in ``data``: one per newline, plus an unterminated tail (the reference of the C core's)."""
    n = data.count(b"\n")
    return n if data.endswith(b"\n") or not data else n + 1


def py_line_lengths(data: bytes) -> array[int]:
    """Byte length of each line of ``data``, its newline included; an unterminated tail counts as a line.

    One C-level pass (split, then ``len`` of each part): no Python loop per line. The reference of the C core's.
    """
    lengths = array("I", map((1).__add__, map(len, data.split(b"\n"))))
    last = lengths.pop()
    if last > 1:  # an unterminated final line: its length without the newline that is not there
        lengths.append(last - 1)
    return lengths


def _native_line_lengths(data: bytes) -> array[int]:
    lengths = array("I")
    lengths.frombytes(native.core.line_lengths(data))
    return lengths


def _native_line_count(data: bytes) -> int:
    return native.core.line_count(data)


# Lines in ``data``: one per newline, plus an unterminated tail (0 for b"").
line_count: Callable[[bytes], int] = _native_line_count if native.core is not None else py_line_count
# Byte length of each line of ``data`` (newline included; an unterminated tail is a line), as uint32 values.
line_lengths: Callable[[bytes], array[int]] = (
    _native_line_lengths if native.core is not None else py_line_lengths
)


@dataclasses.dataclass(frozen=True, slots=True)
class LineIndex:
    """Where a segment's lines are: ``lengths[i]`` and ``ends[i]`` (one past line i's last byte), in bytes."""

    lengths: array[int]
    ends: array[int]

    def offset(self, k: int) -> int:
        """Byte offset at which line ``k`` (0-based) begins."""
        return self.ends[k - 1] if k else 0


class EventKind(enum.Enum):
    """What happened to a child; the names of ``supervisor.v1.Event.Kind`` without the prefix."""

    STARTED = "started"
    EXITED = "exited"
    RESTARTING = "restarting"
    FATAL = "fatal"
    STOPPED = "stopped"
    START_FAILED = "start_failed"
    REMOVED = "removed"
    SHUTDOWN = "shutdown"
    STATE_APPLIED = "state_applied"
    STATE_FAILED = "state_failed"
    READY = "ready"
    NOT_READY = "not_ready"
    UNHEALTHY = "unhealthy"
    PORT_HOLDER_REAPED = "port_holder_reaped"
    APPLIED = "applied"


@dataclasses.dataclass(frozen=True, slots=True)
class ExitRecord:
    """How one process of a child ended: the one exit type, from waitid to the API.

    ``exited`` with ``code`` for a normal exit, else ``signal`` (a number) ended it.
    ``killed_after_grace`` is set when supd had to SIGKILL the group (the leader
    or only leftovers); ``requested`` when a Stop, Restart, Remove or shutdown
    asked for the exit. ``time_ns`` is wall-clock nanoseconds.
    """

    pid: int
    exited: bool
    code: int
    signal: int
    core_dumped: bool
    time_ns: int
    generation: int = 0
    killed_after_grace: bool = False
    requested: bool = False
    description: str = ""
    collected_elsewhere: bool = False  # another reaper took the status: how it ended is unknown

    @property
    def failed(self) -> bool:
        """Non-zero exit, death by signal or an unknown status: what the on-failure policy restarts."""
        return self.collected_elsewhere or not self.exited or self.code != 0


@dataclasses.dataclass(frozen=True, slots=True)
class ChildEvent:
    """One lifecycle event of a child, as streams and logs report it."""

    kind: EventKind
    time_ns: int
    generation: int
    message: str = ""
    pid: int = 0
    exit: ExitRecord | None = None
    restart_in_seconds: float = 0.0
    revision: int = 0  # STATE_APPLIED and STATE_FAILED: the state revision
    probe: str = ""  # READY, NOT_READY and UNHEALTHY: the probe that decided


@dataclasses.dataclass(frozen=True, slots=True)
class Origin:
    """Which process produced a segment: fixed for one generation of one child."""

    child: str
    generation: int
    pid: int
    executable: str


@dataclasses.dataclass(slots=True, eq=False)
class Segment:
    """Consecutive records with sequence numbers ``first_seq .. first_seq + count - 1``.

    For lines, ``stream`` is STDOUT or STDERR, ``data`` the raw bytes and
    ``event`` None. For an event, ``stream`` is 0, ``data`` empty, ``count`` 1.
    ``time_ns`` is the wall-clock time the bytes were read (or the event happened).

    Lines are found by their newlines, except where ``lengths`` is given: then
    line i is ``lengths[i]`` bytes (a segment that holds pieces of an over-long
    line, which carry no newline). ``index()`` computes where each line is once,
    on first use, and keeps it for every later reader. The fields other than
    that cache are never changed after construction.
    """

    first_seq: int
    count: int
    stream: int
    generation: int
    time_ns: int
    data: bytes = b""
    event: ChildEvent | None = None
    lengths: array[int] | None = None
    _index: LineIndex | None = dataclasses.field(default=None, init=False, repr=False)

    @property
    def end_seq(self) -> int:
        """One past the last sequence number."""
        return self.first_seq + self.count

    def index(self) -> LineIndex:
        """Lengths and end offsets of every line, computed on first use (C-level passes only)."""
        idx = self._index
        if idx is None:
            lengths = self.lengths if self.lengths is not None else line_lengths(self.data)
            idx = self._index = LineIndex(lengths, array("I", accumulate(lengths)))
        return idx
