"""The consumers of drained output: sinks that never block.

Every consumer of output (the ring, the OTLP exporter, test sinks) implements
``LineSink``: ``offer`` must return at once, whatever the consumer's state.
A consumer that cannot keep up drops and counts; it never slows the drain.
"""

from __future__ import annotations

from typing import Protocol

from supervisor._daemon.output.records import STDERR, STDOUT, Origin, Segment, line_count

__all__ = ["STDERR", "STDOUT", "LineSink", "Origin", "Segment", "line_count"]


class LineSink(Protocol):
    """A consumer of drained output. ``offer`` never blocks and never raises for load."""

    def offer(self, origin: Origin, segment: Segment) -> None:
        """Take a line segment (never an event segment) or drop and count it."""

    def forget(self, child: str) -> None:
        """The child was removed: a later child of the same name starts with fresh statistics."""
