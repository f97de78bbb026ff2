"""The ring: numbering by counting, eviction by bytes, lookups and waking readers."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import sys
import threading
import time
import tracemalloc
from array import array

import pytest

from supervisor._daemon.output.records import ChildEvent, EventKind, ExitRecord
from supervisor._daemon.output.ring import EVENT_OVERHEAD, SEGMENT_OVERHEAD, Ring
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


def _exit_event(i: int) -> ChildEvent:
    ex = ExitRecord(pid=1000 + i, exited=True, code=1, signal=0, core_dumped=False, time_ns=time.time_ns(),
                    generation=i, description=f"exited with code 1 (run {i})")
    return ChildEvent(EventKind.EXITED, time.time_ns(), i, message=f"exited with code 1 (pid {1000 + i})",
                      pid=1000 + i, exit=ex)


@pytest.mark.parametrize("kind", ["events", "tiny lines", "lines", "pieces"])
def test_every_record_is_charged_at_least_what_it_costs_in_memory(kind):
    """Issue 16: a crash loop filled an 8 MiB ring with events costing 2.3 KB each, charged 160 B."""
    ring = Ring(1 << 40)
    n = 5000
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(n):
            if kind == "events":
                ring.append_event(_exit_event(i))
            elif kind == "pieces":
                ring.append_lines(STDOUT, 1, b"%0300d" % i * 4, lengths=array("I", [300] * 4)).index()
            else:
                ring.append_lines(STDOUT, 1, b"%d\n" % i if kind == "tiny lines" else b"%099d\n" % i * 40)
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert used <= ring.bytes_used, f"{kind}: {used / n:.0f} B each in memory, charged {ring.bytes_used / n:.0f} B"


def test_a_ring_of_events_stays_within_its_bytes():
    ring = Ring(64 * 1024)
    for i in range(10000):
        ring.append_event(_exit_event(i))
    assert ring.bytes_used <= ring.max_bytes
    assert ring.evicted_records == 10000 - (ring.next_seq - ring.oldest_seq)
    assert ring.next_seq - ring.oldest_seq <= 64 * 1024 // EVENT_OVERHEAD


def test_appends_from_another_thread_wake_readers_and_wakes_are_coalesced():
    async def main() -> None:
        ring = Ring(1 << 30)
        loop = asyncio.get_running_loop()
        scheduled = 0
        real = loop.call_soon_threadsafe

        def counting(*args: object, **kw: object) -> object:
            nonlocal scheduled
            scheduled += 1
            return real(*args, **kw)  # type: ignore[arg-type]

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        waiters = [asyncio.create_task(ring.wait_beyond(1)) for _ in range(20)]
        await asyncio.sleep(0)  # one scheduling step, so the waiters are parked: not a wait for time
        writer = threading.Thread(target=lambda: [ring.append_lines(STDOUT, 1, b"x\n") for _ in range(1000)])
        writer.start()
        await asyncio.wait_for(asyncio.gather(*waiters), 10)
        await asyncio.to_thread(writer.join)
        assert ring.next_seq == 1001
        assert 1 <= scheduled < 1000, "one wake-up per turn of the loop, not one per append"

    asyncio.run(main())


def test_a_cancelled_reader_is_not_kept_parked():
    async def main() -> None:
        ring = Ring(1 << 20)
        for _ in range(100):
            task = asyncio.create_task(ring.wait_beyond(5))
            await asyncio.sleep(0)  # one scheduling step, so the waiter is parked: not a wait for time
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert not ring._waiters

    asyncio.run(main())
