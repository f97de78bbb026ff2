"""The ring: numbering by counting, eviction by bytes, lookups and waking readers."""

from __future__ import annotations

import asyncio
import sys

from supervisor._daemon.output.records import ChildEvent, EventKind
from supervisor._daemon.output.ring import SEGMENT_OVERHEAD, Ring
from supervisor._daemon.output.sinks import STDOUT


def test_lines_are_numbered_by_counting_with_unterminated_tail():
    ring = Ring(1 << 20)
    a = ring.append_lines(STDOUT, 1, b"a\nb\nc\n")
    b = ring.append_lines(STDOUT, 1, b"partial")
    assert (a.first_seq, a.count, b.first_seq, b.count) == (1, 3, 4, 1)
    ev = ring.append_event(ChildEvent(EventKind.EXITED, time_ns=0, generation=1))
    assert ev.first_seq == 5 and ev.event is not None and ev.event.kind is EventKind.EXITED and ring.next_seq == 6


def test_eviction_keeps_within_bytes_and_counts_records():
    ring = Ring(10 * (100 + SEGMENT_OVERHEAD))
    for _ in range(50):
        ring.append_lines(STDOUT, 1, b"x" * 99 + b"\n")
    assert ring.bytes_used <= ring.max_bytes
    assert ring.oldest_seq == 41 and ring.evicted_records == 40
    assert ring.find(10) is ring.find(41)  # evicted: the oldest held
    found = ring.find(45)
    assert found is not None and found.first_seq == 45


def test_find_inside_a_segment_and_tail():
    ring = Ring(1 << 20)
    ring.append_lines(STDOUT, 1, b"1\n2\n3\n")
    ring.append_event(ChildEvent(EventKind.STARTED, time_ns=0, generation=1))
    ring.append_lines(STDOUT, 1, b"4\n5\n")
    seg = ring.find(2)
    assert seg is not None and seg.first_seq == 1
    assert ring.find(7) is None
    assert ring.seq_of_tail(3, frozenset({STDOUT})) == 3  # line 3, then 5 and 6 after the event
    assert ring.seq_of_tail(100, frozenset({STDOUT})) == 1


def test_many_segments_compact_without_losing_order():
    ring = Ring(64 * (2 + SEGMENT_OVERHEAD))
    for i in range(5000):
        ring.append_lines(STDOUT, 1, b"%d\n" % (i % 10))
    seg = ring.find(ring.oldest_seq)
    assert seg is not None and seg.first_seq == ring.oldest_seq == 5000 - 64 + 1


def test_readers_wake_on_append_and_on_close():
    async def main() -> None:
        ring = Ring(1 << 20)
        waiter = asyncio.create_task(ring.wait_beyond(1))
        await asyncio.sleep(0)  # one scheduling step, so the waiter is parked: not a wait for time
        assert not waiter.done()
        ring.append_lines(STDOUT, 1, b"x\n")
        await asyncio.wait_for(waiter, 5)
        closing = asyncio.create_task(ring.wait_beyond(100))
        await asyncio.sleep(0)  # one scheduling step, so the waiter is parked: not a wait for time
        ring.close()
        await asyncio.wait_for(closing, 5)

    asyncio.run(main())


def test_evicted_segments_are_released_at_once():
    ring = Ring(4 * (1000 + SEGMENT_OVERHEAD))
    first = b"y" * 999 + b"\n"
    baseline = sys.getrefcount(first)
    ring.append_lines(STDOUT, 1, first)
    assert sys.getrefcount(first) > baseline
    for _ in range(10):
        ring.append_lines(STDOUT, 1, b"z" * 999 + b"\n")
    assert sys.getrefcount(first) == baseline, "evicted data must not stay referenced until compaction"
