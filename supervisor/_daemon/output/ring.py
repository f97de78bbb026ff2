"""A child's bounded, sequence-numbered ring of output segments and events.

The ring keeps whole segments (one pipe read each) and numbers lines by
counting newlines, so appending costs O(1) Python work per read however many
lines it holds. It is bounded by bytes: each segment costs its data plus a
fixed overhead, so a child writing many tiny reads cannot grow the ring past
its bound either. The oldest segments are evicted whole, and counted.

Readers never block the ring: each keeps a cursor (a sequence number) and is
woken through ``wait_beyond``. A reader whose cursor fell behind the oldest
record held learns it as a gap, with the exact count.
"""

from __future__ import annotations

import asyncio
import bisect
import time

from supervisor._daemon.output.records import ChildEvent, Segment, line_count

__all__ = ["SEGMENT_OVERHEAD", "Ring"]

# Bytes charged per segment on top of its data: the Python objects around it.
SEGMENT_OVERHEAD = 160
_COMPACT_AT = 1024


class Ring:
    """Segments in sequence order, at most ``max_bytes`` of them (at least the newest one)."""

    def __init__(self, max_bytes: int, first_seq: int = 1) -> None:
        self.max_bytes = max_bytes
        # Evicted entries become None at once, so their data is freed now, not at compaction.
        self._segs: list[Segment | None] = []
        self._starts: list[int] = []  # first_seq of each segment, for bisect
        self._head = 0  # index of the oldest live segment in _segs
        self._bytes = 0
        self._next_seq = first_seq
        self._evicted_records = 0
        self._closed = False
        self._changed = asyncio.Event()

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
        return self._starts[self._head] if self._head < len(self._segs) else self._next_seq

    @property
    def bytes_used(self) -> int:
        return self._bytes

    @property
    def evicted_records(self) -> int:
        return self._evicted_records

    @property
    def closed(self) -> bool:
        """True once the child is removed: no record will be appended any more."""
        return self._closed

    def append_lines(self, stream: int, generation: int, data: bytes, time_ns: int | None = None) -> Segment:
        """Store a read's worth of lines and return the segment with its numbers."""
        seg = Segment(
            first_seq=self._next_seq,
            count=line_count(data),
            stream=stream,
            generation=generation,
            time_ns=time.time_ns() if time_ns is None else time_ns,
            data=data,
        )
        self._append(seg)
        return seg

    def append_event(self, event: ChildEvent) -> Segment:
        """Store a lifecycle event; the segment's ``first_seq`` is the number it gets."""
        seg = Segment(
            first_seq=self._next_seq,
            count=1,
            stream=0,
            generation=event.generation,
            time_ns=event.time_ns,
            event=event,
        )
        self._append(seg)
        return seg

    def close(self) -> None:
        """No more records: wake readers so they deliver what is left and end."""
        self._closed = True
        self._wake()

    def _append(self, seg: Segment) -> None:
        if self._closed:
            raise RuntimeError("append to a closed ring")
        self._segs.append(seg)
        self._starts.append(seg.first_seq)
        self._next_seq = seg.end_seq
        self._bytes += len(seg.data) + SEGMENT_OVERHEAD
        self._evict()
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _evict(self) -> None:
        segs = self._segs
        while self._bytes > self.max_bytes and len(segs) - self._head > 1:
            old = segs[self._head]
            assert old is not None
            segs[self._head] = None
            self._bytes -= len(old.data) + SEGMENT_OVERHEAD
            self._evicted_records += old.count
            self._head += 1
        if self._head >= _COMPACT_AT and self._head * 2 >= len(segs):
            del segs[: self._head]
            del self._starts[: self._head]
            self._head = 0

    def find(self, seq: int) -> Segment | None:
        """The segment holding ``seq``, or the first one after it; None when past the end."""
        if seq >= self._next_seq:
            return None
        i = bisect.bisect_right(self._starts, seq, lo=self._head) - 1
        i = max(i, self._head)
        return self._segs[i] if i < len(self._segs) else None  # never None at or after _head

    def seq_of_tail(self, lines: int, streams: frozenset[int]) -> int:
        """The sequence number at which the last ``lines`` lines of ``streams`` begin."""
        remaining = lines
        for i in range(len(self._segs) - 1, self._head - 1, -1):
            seg = self._segs[i]
            if seg is None or seg.event is not None or seg.stream not in streams:
                continue
            if seg.count >= remaining:
                return seg.first_seq + seg.count - remaining
            remaining -= seg.count
        return self.oldest_seq

    async def wait_beyond(self, seq: int) -> None:
        """Return once a record with number >= ``seq`` exists or the ring is closed."""
        while self._next_seq <= seq and not self._closed:
            await self._changed.wait()
