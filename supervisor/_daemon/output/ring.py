"""A child's bounded, sequence-numbered ring of output segments and events, shared across threads.

The ring keeps whole segments (one pipe read each) and numbers lines by
counting newlines, so appending costs O(1) Python work per read however many
lines it holds. It is bounded by bytes: each record is charged what it really
costs in memory (a segment's data and its objects, plus 8 bytes a line where
pieces make lines known by their lengths; an event its objects and texts), so a child
writing many tiny reads or a crash loop of events cannot grow the ring past
its bound either. The oldest segments are evicted whole, and counted.

Appends come from the drain's thread (lines) and from the event loop
(events); readers run on the event loop. Every access to the segments holds
one short lock. Readers never block the ring: each keeps a cursor (a sequence
number) and parks in ``wait_beyond``; an append wakes the parked readers with
at most one callback scheduled on their loop at a time, however many appends
happen meanwhile. A reader whose cursor fell behind the oldest record held
learns it as a gap, with the exact count.
"""

from __future__ import annotations

import asyncio
import bisect
import threading
import time
from array import array
from collections.abc import Callable

import structlog

from supervisor._daemon.output.records import ChildEvent, Segment, line_count

__all__ = ["EVENT_OVERHEAD", "INDEX_BYTES_PER_LINE", "INDEX_OVERHEAD", "SEGMENT_OVERHEAD", "Ring", "record_cost"]

log = structlog.get_logger("supd.ring")

# Bytes charged per segment on top of its data: the Segment, the bytes object's header,
# the ring's slots for it and its start number (measured with tracemalloc: about 270 bytes).
SEGMENT_OVERHEAD = 320
# Bytes charged on top for the index of a segment that holds pieces (two arrays and their holder).
INDEX_OVERHEAD = 256
# Bytes charged per line of a segment that holds pieces, whose lines are known by their lengths: those and
# the ends a reader computes from them, 4 bytes each. Other segments' lines are found by their newlines.
INDEX_BYTES_PER_LINE = 8
# Bytes charged per event on top of its texts: Segment, ChildEvent, ExitRecord and their fields
# (measured with tracemalloc: about 720 bytes with short texts).
EVENT_OVERHEAD = 1024
_COMPACT_AT = 1024


def _never() -> bool:
    return False


def record_cost(seg: Segment) -> int:
    """Bytes of memory ``seg`` is charged in a ring: what it really costs, whatever it holds."""
    if seg.event is not None:
        ev = seg.event
        texts = len(ev.message) + (len(ev.exit.description) if ev.exit is not None else 0)
        return EVENT_OVERHEAD + 2 * texts  # a text may be stored twice (str and its UTF-8 form)
    index = INDEX_OVERHEAD + INDEX_BYTES_PER_LINE * seg.count if seg.lengths is not None else 0
    return len(seg.data) + SEGMENT_OVERHEAD + index


class Ring:
    """Segments in sequence order, at most ``max_bytes`` of them charged (at least the newest one).

    Thread-safe: appends from any thread; ``wait_beyond`` from one event loop.
    Raises RuntimeError on an append after ``close``.
    """

    def __init__(self, max_bytes: int, first_seq: int = 1) -> None:
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        # Evicted entries become None at once, so their data is freed now, not at compaction.
        self._segs: list[Segment | None] = []
        self._costs: list[int] = []  # what each segment was charged
        self._starts: list[int] = []  # first_seq of each segment, for bisect
        self._head = 0  # index of the oldest live segment in _segs
        self._bytes = 0
        self._next_seq = first_seq
        self._evicted_records = 0
        self._closed = False
        self._waiters: list[asyncio.Future[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._wake_pending = False
        self.wake_failures = 0
        # True while whoever appends lines is falling behind (set by ChildOutput to its poller's ``behind``).
        self.drain_behind: Callable[[], bool] = _never

    def __repr__(self) -> str:
        return (
            f"<Ring seq={self.oldest_seq}..{self._next_seq} bytes={self._bytes}/{self.max_bytes}"
            f" evicted={self._evicted_records}{' closed' if self._closed else ''}>"
        )

    @property
    def next_seq(self) -> int:
        """The sequence number the next record will get."""
        return self._next_seq

    @property
    def oldest_seq(self) -> int:
        """The oldest sequence number still held (== next_seq when empty)."""
        with self._lock:
            return self._starts[self._head] if self._head < len(self._segs) else self._next_seq

    @property
    def bytes_used(self) -> int:
        """Bytes charged for the records held (see ``record_cost``)."""
        return self._bytes

    @property
    def evicted_records(self) -> int:
        return self._evicted_records

    @property
    def closed(self) -> bool:
        """True once the child is removed: no record will be appended any more."""
        return self._closed

    def append_lines(
        self,
        stream: int,
        generation: int,
        data: bytes,
        time_ns: int | None = None,
        lengths: array[int] | None = None,
        *,
        count: int | None = None,
    ) -> Segment:
        """Store a read's worth of lines and return the segment with its numbers.

        ``lengths`` gives each line's length where lines are not all found by
        their newlines (pieces of an over-long line); they must sum to ``len(data)``.
        ``count``, when the caller knows it, is the number of lines (else they are counted).
        """
        if count is None:
            count = line_count(data) if lengths is None else len(lengths)
        with self._lock:
            seg = Segment(
                first_seq=self._next_seq,
                count=count,
                stream=stream,
                generation=generation,
                time_ns=time.time_ns() if time_ns is None else time_ns,
                data=data,
                lengths=lengths,
            )
            self._append(seg)
            loop = self._wake_loop()
        if loop is not None:
            self._schedule_wake(loop)
        return seg

    def append_event(self, event: ChildEvent) -> Segment:
        """Store a lifecycle event; the segment's ``first_seq`` is the number it gets."""
        with self._lock:
            seg = Segment(
                first_seq=self._next_seq,
                count=1,
                stream=0,
                generation=event.generation,
                time_ns=event.time_ns,
                event=event,
            )
            self._append(seg)
            loop = self._wake_loop()
        if loop is not None:
            self._schedule_wake(loop)
        return seg

    def close(self) -> None:
        """No more records: wake readers so they deliver what is left and end."""
        with self._lock:
            self._closed = True
            loop = self._wake_loop()
        if loop is not None:
            self._schedule_wake(loop)

    def _append(self, seg: Segment) -> None:
        """Lock held."""
        if self._closed:
            raise RuntimeError("append to a closed ring")
        cost = record_cost(seg)
        self._segs.append(seg)
        self._costs.append(cost)
        self._starts.append(seg.first_seq)
        self._next_seq = seg.end_seq
        self._bytes += cost
        self._evict()

    def _evict(self) -> None:
        """Lock held."""
        segs, costs = self._segs, self._costs
        while self._bytes > self.max_bytes and len(segs) - self._head > 1:
            old = segs[self._head]
            assert old is not None
            segs[self._head] = None
            self._bytes -= costs[self._head]
            self._evicted_records += old.count
            self._head += 1
        if self._head >= _COMPACT_AT and self._head * 2 >= len(segs):
            del segs[: self._head]
            del costs[: self._head]
            del self._starts[: self._head]
            self._head = 0

    # -- waking readers -------------------------------------------------------------------------

    def _wake_loop(self) -> asyncio.AbstractEventLoop | None:
        """Lock held: the loop to wake readers on, unless none waits or a wake is already on its way."""
        if not self._waiters or self._wake_pending:
            return None
        self._wake_pending = True
        return self._loop

    def _schedule_wake(self, loop: asyncio.AbstractEventLoop) -> None:
        if threading.get_ident() == self._loop_thread:
            self._wake()
            return
        try:
            loop.call_soon_threadsafe(self._wake)
        except RuntimeError as exc:  # the loop is closed: supd is exiting, nobody is left to wake
            self.wake_failures += 1
            log.debug("ring.wake.failed", error=str(exc), failures=self.wake_failures)

    def _wake(self) -> None:
        """On the readers' loop: resolve every parked reader."""
        with self._lock:
            waiters, self._waiters = self._waiters, []
            self._wake_pending = False
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def wait_beyond(self, seq: int) -> None:
        """Return once a record with number >= ``seq`` exists or the ring is closed."""
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                if self._next_seq > seq or self._closed:
                    return
                fut: asyncio.Future[None] = loop.create_future()
                self._waiters.append(fut)
                self._loop, self._loop_thread = loop, threading.get_ident()
            try:
                await fut
            finally:
                if fut.cancelled() or not fut.done():  # cancelled: do not keep it parked
                    with self._lock:
                        if fut in self._waiters:
                            self._waiters.remove(fut)

    # -- lookups ---------------------------------------------------------------------------------

    def find(self, seq: int) -> Segment | None:
        """The segment holding ``seq``, or the first one after it; None when past the end."""
        with self._lock:
            if seq >= self._next_seq:
                return None
            i = bisect.bisect_right(self._starts, seq, lo=self._head) - 1
            i = max(i, self._head)
            return self._segs[i] if i < len(self._segs) else None  # never None at or after _head

    def seq_of_tail(self, lines: int, streams: frozenset[int]) -> int:
        """The sequence number at which the last ``lines`` lines of ``streams`` begin."""
        remaining = lines
        with self._lock:
            for i in range(len(self._segs) - 1, self._head - 1, -1):
                seg = self._segs[i]
                if seg is None or seg.event is not None or seg.stream not in streams:
                    continue
                if seg.count >= remaining:
                    return seg.first_seq + seg.count - remaining
                remaining -= seg.count
            return self._starts[self._head] if self._head < len(self._segs) else self._next_seq
