"""What the drain hands its output to: segments of lines, and sinks that never block.

A ``Segment`` is one read from one pipe, kept as the bytes the child wrote:
consecutive lines of one stream, each ending in ``b"\\n"`` except possibly the
last (a piece of an over-long line, or the final unterminated line at EOF).
Lines are numbered by counting, never split on the hot path. A segment can
instead carry one lifecycle event, which takes one sequence number.

Every consumer of output (the ring, the OTLP exporter, test sinks) implements
``LineSink``: ``offer`` must return at once, whatever the consumer's state.
A consumer that cannot keep up drops and counts; it never slows the drain.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

from supervisor.v1 import supervisor_pb2 as pb

__all__ = ["STDERR", "STDOUT", "LineSink", "Origin", "Segment", "line_count"]

STDOUT = pb.OUTPUT_STREAM_STDOUT
STDERR = pb.OUTPUT_STREAM_STDERR


def line_count(data: bytes) -> int:
    """Lines in ``data``: one per newline, plus an unterminated tail."""
    n = data.count(b"\n")
    return n if data.endswith(b"\n") else n + 1


@dataclasses.dataclass(frozen=True, slots=True)
class Origin:
    """Which process produced a segment: fixed for one generation of one child."""

    child: str
    generation: int
    pid: int
    executable: str


@dataclasses.dataclass(frozen=True, slots=True)
class Segment:
    """Consecutive records with sequence numbers ``first_seq .. first_seq + count - 1``.

    For lines, ``stream`` is STDOUT or STDERR, ``data`` the raw bytes and
    ``event`` None. For an event, ``stream`` is 0, ``data`` empty, ``count`` 1.
    ``time_ns`` is the wall-clock time the bytes were read (or the event happened).
    """

    first_seq: int
    count: int
    stream: int
    generation: int
    time_ns: int
    data: bytes = b""
    event: pb.Event | None = None

    @property
    def end_seq(self) -> int:
        """One past the last sequence number."""
        return self.first_seq + self.count


class LineSink(Protocol):
    """A consumer of drained output. ``offer`` never blocks and never raises for load."""

    def offer(self, origin: Origin, segment: Segment) -> None:
        """Take a line segment (never an event segment) or drop and count it."""

    def forget(self, child: str) -> None:
        """The child was removed: a later child of the same name starts with fresh statistics."""
