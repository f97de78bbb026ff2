"""read_stream over a ring, in process: batches of pieces, starts in mid-segment, exact gaps."""

from __future__ import annotations

import asyncio
import gc
import os

from supervisor._daemon.output.child_output import ChildOutput, Pipes
from supervisor._daemon.output.drain import Poller
from supervisor._daemon.output.records import ChildEvent, EventKind, Origin, Segment
from supervisor._daemon.output.ring import Ring
from supervisor._daemon.output.sinks import STDERR, STDOUT
from supervisor._daemon.output.stream import BATCH_BYTES, as_message, read_stream
from supervisor.v1 import supervisor_pb2 as pb

BOTH = frozenset({STDOUT, STDERR})


def collect(ring: Ring, start: int) -> list[pb.StreamMessage]:
    async def main() -> list[pb.StreamMessage]:
        return [as_message(m) async for m in read_stream(ring, start, False, BOTH)]

    return asyncio.run(main())


def lines_of(messages: list[pb.StreamMessage]) -> list[tuple[int, bytes]]:
    out = []
    for m in messages:
        if m.HasField("lines"):
            pos = 0
            for i, n in enumerate(m.lines.lengths):
                out.append((m.lines.first_seq + i, m.lines.data[pos : pos + n]))
                pos += n
            assert pos == len(m.lines.data)
    return out


def test_pieces_of_a_huge_line_travel_many_to_a_batch():
    """Issue 16: 100 MB of pieces took 409,600 messages (one per piece)."""

    async def main() -> Ring:
        poller = Poller()
        out = ChildOutput("c", 64 << 20, 256, poller=poller)
        pipes = Pipes()
        w = os.dup(pipes.stdout_write)
        gen = out.start(pipes, Origin("c", 1, os.getpid(), "t"))
        out.append_event(ChildEvent(EventKind.STARTED, time_ns=0, generation=1))
        data = b"p" * (4 << 20) + b"\n"
        await asyncio.to_thread(os.write, w, data)  # may block until the drain reads: not on the loop
        os.close(w)
        assert await gen.wait_eof(30) == []
        poller.stop()
        return out.ring

    ring = asyncio.run(main())
    messages = collect(ring, 1)
    got = lines_of(messages)
    assert b"".join(text for _, text in got) == b"p" * (4 << 20) + b"\n"
    assert all(len(text) <= 256 for _, text in got[:-1])
    batches = [m for m in messages if m.HasField("lines")]
    assert len(batches) <= (4 << 20) // BATCH_BYTES + 2
    assert all(len(b.lines.data) <= BATCH_BYTES for b in batches)


def test_a_stream_starting_inside_a_segment_gets_exactly_the_lines_from_there():
    ring = Ring(1 << 30)
    ring.append_lines(STDOUT, 1, b"".join(b"line %d\n" % i for i in range(10000)))
    ring.append_lines(STDOUT, 1, b"tail without newline")
    ring.append_event(ChildEvent(EventKind.EXITED, time_ns=0, generation=1))
    for start in (1, 2, 5000, 9999, 10000, 10001):
        got = lines_of(collect(ring, start))
        expected = [(i + 1, b"line %d\n" % i) for i in range(start - 1, 10000)] + [(10001, b"tail without newline")]
        assert got == expected


def test_a_reader_behind_the_ring_gets_an_exact_gap_then_the_rest():
    ring = Ring(64 * 1024)
    for i in range(1000):
        ring.append_lines(STDOUT, 1, b"%099d\n" % i)
    messages = collect(ring, 1)
    assert messages[0].HasField("gap")
    assert messages[0].gap.first_seq == 1 and messages[0].gap.count == ring.oldest_seq - 1
    assert [seq for seq, _ in lines_of(messages)] == list(range(ring.oldest_seq, 1001))


def test_a_reader_that_stopped_reading_does_not_keep_an_evicted_record_alive():
    """A record is up to a pipe's worth: twenty stopped readers held 1.4x the rings' bytes in supd."""
    ring = Ring(2 << 20)
    record = b"%099d\n" % 0 * 10_000  # 1 MB: the first batch ends inside it
    ring.append_lines(STDOUT, 1, record)

    async def main() -> None:
        reader = read_stream(ring, 1, True, BOTH)
        first = as_message(await reader.__anext__())
        assert 0 < len(first.lines.data) < len(record)
        for i in range(1, 4):  # the reader takes its time; the ring evicts the record it is inside
            ring.append_lines(STDOUT, 1, b"%099d\n" % i * 10_000)
        assert ring.oldest_seq > 10_000
        # Its segment is gone: neither the cursor nor a frame of the stopped reader kept it.
        assert not [r for r in gc.get_referrers(record) if isinstance(r, Segment)]
        gap = as_message(await reader.__anext__())
        assert gap.HasField("gap") and gap.gap.first_seq == 1 + len(first.lines.lengths)
        await reader.aclose()

    asyncio.run(main())


def test_a_record_evicted_between_two_looks_at_the_ring_is_a_gap_never_lines_numbered_wrongly():
    """The drain thread appends (and evicts) between the reader's oldest_seq and its find: staged here."""
    ring = Ring(64 * 1024)
    for i in range(10):
        ring.append_lines(STDOUT, 1, b"".join(b"%d-%d\n" % (i, j) for j in range(1000)))
    find = ring.find
    appended: list[int] = []

    def find_after_a_drain_turn(seq: int) -> Segment | None:
        if not appended:
            for k in range(3):
                appended.append(ring.next_seq)
                ring.append_lines(STDOUT, 1, b"".join(b"x%d-%d\n" % (k, j) for j in range(2000)))
        return find(seq)

    ring.find = find_after_a_drain_turn  # type: ignore[method-assign]
    start = ring.oldest_seq + 5
    messages = collect(ring, start)
    assert messages[0].HasField("gap"), messages[0]
    assert messages[0].gap.first_seq == start and messages[0].gap.count == ring.oldest_seq - start
    got = lines_of(messages)
    assert got[0][0] == ring.oldest_seq
    assert [text for seq, text in got if seq == appended[2]] == [b"x2-0\n"], "every line under its own number"


def test_a_reader_steps_aside_while_the_drain_is_behind_but_always_progresses():
    ring = Ring(1 << 30)
    for i in range(20):
        ring.append_lines(STDOUT, 1, b"%099d\n" % i * 3000)  # 300 KB each: more than one batch
    asked = 0

    def behind() -> bool:
        nonlocal asked
        asked += 1
        return True  # the drain never catches up

    ring.drain_behind = behind
    got = lines_of(collect(ring, 1))
    assert len(got) == 20 * 3000, "every line arrives although the drain stays behind"
    assert asked > 20, "the reader asked before its batches"
