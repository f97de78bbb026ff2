"""Turning a ring into Stream messages for one reader, at pipe speed.

A reader is a cursor into the ring, never a queue the drain must fill: the
drain appends and wakes, and each reader copies out at its own pace. A reader
that falls behind what the ring still holds is told so with a Gap carrying the
exact count, then goes on from the oldest record held. Lines travel as
columnar batches (one bytes blob plus lengths, up to 256 KiB each): one line per
message would cost two hundred times the CPU.

A batch is built from whole segments where it can (their bytes as they are).
With the C core (native.py) the batch is serialised in one pass, its lines'
lengths found with the GIL released, and sent as those bytes (``read_stream``
yields them as they are; api/preserialised.py lets them through grpcio); the
Python path (``py_message``, the reference) builds the message and computes the
lengths in one C-level split of the whole batch. A segment holding pieces of an
over-long line brings its own lengths. The cursor keeps its byte offset in the current
segment, so a batch that ends inside a segment costs one backwards search,
and a Stream that starts in the middle of a segment finds its offset
without a Python loop over lines.
"""

from __future__ import annotations

import asyncio
import bisect
from array import array
from collections.abc import AsyncIterator

from google.protobuf.timestamp_pb2 import Timestamp

from supervisor._daemon.api.convert import event_to_proto
from supervisor._daemon.output import native
from supervisor._daemon.output.records import Segment
from supervisor._daemon.output.ring import Ring
from supervisor.v1 import supervisor_pb2 as pb

__all__ = ["BATCH_BYTES", "Reply", "as_message", "batch_lengths", "read_stream"]

# Bytes of lines per batch at most. Measured with one follower of a 200 MB flood, 6 interleaved runs each, 1 MiB
# batches cost supd 0.245 CPU s per 100 MB against 0.28 and the follower got 2.7 M lines/s against 2.4 M (within
# the noise), but a reader that stopped reading then held 3.3 MiB of supd's memory against 0.5 MiB
# (bench/stalled_readers.py, 40 readers): 256 KiB keeps --max-streams' bound on memory.
BATCH_BYTES = 256 * 1024
# Reads merged into one batch were made within this of the batch's time, the time of its first read: a
# flood still travels in full batches, while lines written seconds apart keep their own times.
BATCH_TIME_SPREAD_NS = 10_000_000
STEP_ASIDE = 0.001  # s: one step of a reader stepping aside for a drain that is behind
STEP_ASIDE_MAX = 0.01  # s: at most this long per batch, so readers always progress
EVICTED = "evicted from the ring before this reader got them (ring_bytes too small or reader too slow)"


# What read_stream yields: a StreamMessage, or one already serialised (a LineBatch built by the C core).
Reply = pb.StreamMessage | bytes


def as_message(reply: Reply) -> pb.StreamMessage:
    """``reply`` as a StreamMessage, parsing it when it came serialised."""
    return pb.StreamMessage.FromString(reply) if isinstance(reply, bytes) else reply


def batch_lengths(data: bytes) -> list[int]:
    """Byte length of each line in ``data``, terminators included (an unterminated tail is a line)."""
    lengths = [len(part) + 1 for part in data.split(b"\n")]
    last = lengths.pop()
    if last > 1:  # an unterminated final line
        lengths.append(last - 1)
    return lengths


def _line_offset(seg: Segment, k: int) -> int:
    """Byte offset of line ``k`` (0-based) of ``seg``: C-level work only."""
    if k == 0:
        return 0
    if seg.lengths is not None:
        return seg.index().offset(k)
    if native.core is not None:
        return native.core.line_offset(seg.data, k)
    return len(seg.data) - len(seg.data.split(b"\n", k)[-1])


class _Cursor:
    """Where a reader is: the next sequence number, and its byte offset in the segment that holds it.

    The segment is known by its first sequence number, not held: a reader that stopped reading must not
    keep a record (up to a pipe's worth) alive after the ring evicted it.
    """

    __slots__ = ("_offset", "_seg_seq", "seq")

    def __init__(self, seq: int) -> None:
        self.seq = seq
        self._seg_seq = -1  # first_seq of the segment _offset is in (sequence numbers start at 1)
        self._offset = 0

    def offset_in(self, seg: Segment) -> int:
        if self._seg_seq != seg.first_seq:
            self._seg_seq = seg.first_seq
            self._offset = _line_offset(seg, self.seq - seg.first_seq)
        return self._offset

    def advance(self, seg: Segment, lines: int, end_offset: int) -> None:
        self.seq += lines
        self._seg_seq, self._offset = seg.first_seq, end_offset


def _take(seg: Segment, offset: int, budget: int, at_least_one: bool) -> tuple[int, int]:
    """Whole lines of ``seg`` from byte ``offset``, at most ``budget`` bytes: (end offset, lines).

    With ``at_least_one``, one line is taken even when it is longer than the budget.
    """
    data = seg.data
    if offset == 0 and len(data) <= budget:
        return len(data), seg.count
    if seg.lengths is not None:  # pieces: their boundaries are in the index, not in newlines
        ends = seg.index().ends
        k = bisect.bisect_right(ends, offset)
        j = bisect.bisect_right(ends, offset + budget, lo=k)
        if j == k:
            if not at_least_one:
                return offset, 0
            j = k + 1
        return ends[j - 1], j - k
    if native.core is not None:
        return native.core.take(data, offset, budget, at_least_one)
    if len(data) - offset <= budget:
        end = len(data)
    else:
        end = data.rfind(b"\n", offset, offset + budget) + 1
        if end <= offset:  # the next line is longer than the budget
            if not at_least_one:
                return offset, 0
            nl = data.find(b"\n", offset)
            end = len(data) if nl < 0 else nl + 1
    lines = data.count(b"\n", offset, end)
    if end > offset and data[end - 1] != 0x0A:
        lines += 1
    return end, lines


async def read_stream(ring: Ring, start_seq: int, follow: bool, streams: frozenset[int]) -> AsyncIterator[Reply]:
    """Messages from ``start_seq`` on; with ``follow`` until the ring closes, else until its current end.

    A LineBatch built by the C core comes as its serialised bytes, to be sent as they are (``as_message``
    parses one); everything else comes as a StreamMessage.
    """
    cur = _Cursor(start_seq)
    stepped_aside = False
    while True:
        while cur.seq < ring.next_seq:
            oldest = ring.oldest_seq
            if cur.seq < oldest:
                yield pb.StreamMessage(gap=pb.Gap(first_seq=cur.seq, count=oldest - cur.seq, reason=EVICTED))
                cur = _Cursor(oldest)
                continue
            seg = ring.find(cur.seq)
            if seg is None:
                break
            if seg.first_seq > cur.seq:
                continue  # evicted since oldest_seq was read (a drain thread appended): the Gap comes next turn
            if seg.event is not None:
                cur.advance(seg, 1, 0)
                yield pb.StreamMessage(event=event_to_proto(seg.event, seg.first_seq))
                continue
            if seg.stream not in streams:
                cur = _Cursor(seg.end_seq)
                del seg
                continue
            if not stepped_aside and ring.drain_behind():
                await _step_aside(ring)
                stepped_aside = True
                continue  # the ring may have moved on meanwhile: look again, then send a batch
            stepped_aside = False
            batch = _batch(ring, cur, seg)
            del seg  # nor does the frame hold a record while the reader takes its time
            yield batch
        if not follow or ring.closed:
            return
        await ring.wait_beyond(cur.seq)


async def _step_aside(ring: Ring) -> None:
    """Let the drain have the GIL while it is behind: idle the loop up to ``STEP_ASIDE_MAX`` s in small steps.

    Readers never slow a child: when a pipe was filling up, a reader waits a
    moment (the event loop sleeps in epoll and releases the GIL meanwhile), and
    if the ring evicts what it had not read, it gets a Gap as always.
    """
    for _ in range(round(STEP_ASIDE_MAX / STEP_ASIDE)):
        await asyncio.sleep(STEP_ASIDE)
        if not ring.drain_behind():
            return


# Where a batch's bytes come from: (segment, start offset, end offset), consecutive lines in order.
_Part = tuple[Segment, int, int]


def _batch(ring: Ring, cur: _Cursor, seg: Segment) -> Reply:
    """One LineBatch from the cursor on, merging following segments of the same stream and generation."""
    first_seq, time_ns = cur.seq, seg.time_ns
    offset = cur.offset_in(seg)
    end, lines = _take(seg, offset, BATCH_BYTES, True)
    cur.advance(seg, lines, end)
    parts = [(seg, offset, end)]
    size = end - offset
    while size < BATCH_BYTES and end == len(seg.data):
        nxt = ring.find(cur.seq)
        if nxt is None or nxt.event is not None or nxt.stream != seg.stream or nxt.generation != seg.generation:
            break
        if nxt.first_seq != cur.seq or nxt.time_ns - time_ns > BATCH_TIME_SPREAD_NS:
            break  # a batch carries one read time: later reads start a batch of their own
        end, lines = _take(nxt, 0, BATCH_BYTES - size, False)
        if not lines:
            break
        cur.advance(nxt, lines, end)
        parts.append((nxt, 0, end))
        size += end
        seg = nxt
    if native.core is not None:
        return native_wire(first_seq, seg.stream, seg.generation, time_ns, parts)
    return py_message(first_seq, seg.stream, seg.generation, time_ns, parts)


def native_wire(first_seq: int, stream: int, generation: int, time_ns: int, parts: list[_Part]) -> bytes:
    """The serialised StreamMessage of a LineBatch of ``parts``, built by the C core in one pass.

    Sent as it is: parsing it into a StreamMessage for grpcio to serialise again (two copies and a parse of
    every byte) cost supd 0.03-0.06 CPU s per 100 MB followed, in interleaved runs.
    """
    assert native.core is not None
    spec = [(s.data, a, b, None if s.lengths is None else _piece_lengths(s, a, b)) for s, a, b in parts]
    return native.core.line_batch(first_seq, stream, generation, time_ns, spec)


def py_message(first_seq: int, stream: int, generation: int, time_ns: int, parts: list[_Part]) -> pb.StreamMessage:
    """The StreamMessage of a LineBatch of ``parts``: the pure-Python reference of ``native_message``."""
    datas = [s.data if a == 0 and b == len(s.data) else s.data[a:b] for s, a, b in parts]
    blob = datas[0] if len(datas) == 1 else b"".join(datas)
    ts = Timestamp()
    ts.FromNanoseconds(time_ns)
    return pb.StreamMessage(
        lines=pb.LineBatch(
            first_seq=first_seq,
            stream=stream,  # type: ignore[arg-type]
            generation=generation,
            time=ts,
            data=blob,
            lengths=_lengths(parts, datas, blob),
        )
    )


def _piece_lengths(seg: Segment, start: int, end: int) -> array[int]:
    """The lengths of a pieced segment's lines between byte offsets ``start`` and ``end`` (line boundaries)."""
    idx = seg.index()
    k = bisect.bisect_right(idx.ends, start)
    return idx.lengths[k : k + _count(idx.ends, start, end - start)]


def _lengths(parts: list[_Part], datas: list[bytes], blob: bytes) -> list[int]:
    """The lengths of a batch's lines: one split of the whole blob when newlines alone delimit them."""
    if all(s.lengths is None for s, _, _ in parts) and all(d.endswith(b"\n") for d in datas[:-1]):
        return batch_lengths(blob)
    lengths: list[int] = []
    for (seg, start, end), data in zip(parts, datas, strict=True):
        if seg.lengths is None:
            lengths += batch_lengths(data)
        else:
            lengths += _piece_lengths(seg, start, end)
    return lengths


def _count(ends: array[int], offset: int, size: int) -> int:
    """Lines of a pieced segment between byte ``offset`` and ``offset + size`` (both line boundaries)."""
    return bisect.bisect_right(ends, offset + size) - bisect.bisect_right(ends, offset)
