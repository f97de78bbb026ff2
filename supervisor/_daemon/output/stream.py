"""Turning a ring into Stream messages for one reader, at pipe speed.

A reader is a cursor into the ring, never a queue the drain must fill: the
drain appends and wakes, and each reader copies out at its own pace. A reader
that falls behind what the ring still holds is told so with a Gap carrying the
exact count, then goes on from the oldest record held. Lines travel as
columnar batches (one bytes blob plus lengths, up to 256 KiB each): one line per
message would cost two hundred times the CPU.

Where lines begin is computed once per segment (``Segment.index``, C-level
passes) and shared by every reader, so a batch is a slice of the segment's
bytes and of its lengths: no per-line Python work, wherever a reader starts.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import AsyncIterator

from google.protobuf.timestamp_pb2 import Timestamp

from supervisor._daemon.api.convert import event_to_proto
from supervisor._daemon.output.records import Segment, line_lengths
from supervisor._daemon.output.ring import Ring
from supervisor.v1 import supervisor_pb2 as pb

__all__ = ["BATCH_BYTES", "batch_lengths", "read_stream"]

BATCH_BYTES = 256 * 1024
EVICTED = "evicted from the ring before this reader got them (ring_bytes too small or reader too slow)"


def batch_lengths(data: bytes) -> list[int]:
    """Byte length of each line in ``data``, terminators included (an unterminated tail is a line)."""
    return list(line_lengths(data))


def _take(seg: Segment, k: int, budget: int, at_least_one: bool) -> tuple[bytes, array[int]]:
    """Whole lines of ``seg`` from line ``k`` on, at most ``budget`` bytes: (data, lengths).

    With ``at_least_one``, one line is taken even when it is longer than the budget.
    """
    if k == 0 and len(seg.data) <= budget:
        idx = seg.index()
        return seg.data, idx.lengths
    idx = seg.index()
    start = idx.offset(k)
    j = bisect.bisect_right(idx.ends, start + budget, lo=k)
    if j == k:
        if not at_least_one:
            return b"", array("I")
        j = k + 1
    return seg.data[start : idx.ends[j - 1]], idx.lengths[k:j]


async def read_stream(
    ring: Ring, start_seq: int, follow: bool, streams: frozenset[int]
) -> AsyncIterator[pb.StreamMessage]:
    """Messages from ``start_seq`` on; with ``follow`` until the ring closes, else until its current end."""
    seq = start_seq
    while True:
        while seq < ring.next_seq:
            oldest = ring.oldest_seq
            if seq < oldest:
                yield pb.StreamMessage(gap=pb.Gap(first_seq=seq, count=oldest - seq, reason=EVICTED))
                seq = oldest
                continue
            seg = ring.find(seq)
            if seg is None:
                break
            if seg.event is not None:
                seq = seg.end_seq
                yield pb.StreamMessage(event=event_to_proto(seg.event, seg.first_seq))
                continue
            if seg.stream not in streams:
                seq = seg.end_seq
                continue
            message, seq = _batch(ring, seq, seg)
            yield message
        if not follow or ring.closed:
            return
        await ring.wait_beyond(seq)


def _batch(ring: Ring, seq: int, seg: Segment) -> tuple[pb.StreamMessage, int]:
    """One LineBatch from ``seq`` on, merging following segments of the same stream and generation.

    Returns the message and the sequence number after its last line.
    """
    first_seq, time_ns = seq, seg.time_ns
    data, lengths = _take(seg, seq - seg.first_seq, BATCH_BYTES, True)
    seq += len(lengths)
    size = len(data)
    parts = [data]
    all_lengths = [lengths]
    while size < BATCH_BYTES and seq == seg.end_seq:
        nxt = ring.find(seq)
        if nxt is None or nxt.event is not None or nxt.stream != seg.stream or nxt.generation != seg.generation:
            break
        if nxt.first_seq != seq:
            break
        data, lengths = _take(nxt, 0, BATCH_BYTES - size, False)
        if not lengths:
            break
        seq += len(lengths)
        parts.append(data)
        all_lengths.append(lengths)
        size += len(data)
        seg = nxt
    if len(parts) == 1:
        blob, lens = parts[0], all_lengths[0]
    else:
        blob = b"".join(parts)
        lens = array("I")
        for chunk in all_lengths:
            lens.extend(chunk)
    ts = Timestamp()
    ts.FromNanoseconds(time_ns)
    message = pb.StreamMessage(
        lines=pb.LineBatch(
            first_seq=first_seq,
            stream=seg.stream,  # type: ignore[arg-type]
            generation=seg.generation,
            time=ts,
            data=blob,
            lengths=lens,
        )
    )
    return message, seq
