"""Properties of line framing and the ring, for any bytes and any chunking (hypothesis).

- Whatever the reads and quiet periods (partial records flushed), the pieces the assembler emits (and then
  ``finish``) concatenate to the input, each is a run of whole lines or one record without a newline, and no
  record is longer than ``max_line`` (plus its newline).
- Over-long lines of valid UTF-8 are never cut inside a character.
- The C core (``native.core.cut``) emits exactly what the Python reference emits, with the same line counts.
- Through the ring and a Stream reader: what the reader gets is the input less an evicted prefix, and the Gaps
  count exactly the records evicted.

The default run is short (profile ``default``: 60 examples each); ``SUPD_HYPOTHESIS_PROFILE=long`` runs 2000.
"""

from __future__ import annotations

import asyncio
import itertools
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from supervisor._daemon.output import native
from supervisor._daemon.output.child_output import _joined
from supervisor._daemon.output.lines import LineAssembler
from supervisor._daemon.output.records import STDOUT, py_line_count
from supervisor._daemon.output.ring import Ring
from supervisor._daemon.output.stream import as_message, read_stream

settings.register_profile("default", max_examples=60, deadline=None, database=None)
settings.register_profile(
    "long", max_examples=2000, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("SUPD_HYPOTHESIS_PROFILE", "default"))

# Bytes that make framing interesting: newlines, multi-byte characters, stray continuation and invalid bytes.
_ATOMS = [b"a", b"xyz", b"\n", b"\n\n", "é".encode(), "€".encode(), "😀".encode(), b"\x80", b"\xff", b"\xe2\x82"]
any_bytes = st.one_of(
    st.binary(max_size=2000),
    st.lists(st.sampled_from(_ATOMS), max_size=800).map(b"".join),
)
utf8_text = st.text(alphabet=st.sampled_from(["a", "é", "€", "😀", "\U0010fffd", "\n", " "]), max_size=1500).map(
    str.encode
)
max_lines = st.integers(min_value=4, max_value=300)
cut_points = st.lists(st.integers(min_value=0, max_value=4000), max_size=30)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` split at ``cuts`` (taken modulo its length), in order; empty chunks dropped."""
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


def feed_all(
    chunks: list[bytes], max_line: int, *, buffered: bool, flushes: frozenset[int] = frozenset()
) -> list[list[bytes]]:
    """The parts each read emits (``feed`` or ``feed_buffer`` on a reused buffer), then ``finish``'s.

    After the reads numbered in ``flushes``, a quiet period: ``flush_partial``'s parts come as a read of their own.
    """
    asm = LineAssembler(max_line)
    out = []
    buf = bytearray(4096)
    for i, chunk in enumerate(chunks):
        if buffered:
            buf[: len(chunk)] = chunk
            out.append(asm.feed_buffer(buf, len(chunk)))
        else:
            out.append(asm.feed(chunk))
        if i in flushes:
            out.append(asm.flush_partial())
    out.append(asm.finish())
    return out


def records(part: bytes) -> list[bytes]:
    """A part's records: its lines with their newlines, or the part itself when it has none at its end."""
    if not part.endswith(b"\n"):
        assert b"\n" not in part, "a part without a final newline is exactly one record"
        return [part]
    return [line + b"\n" for line in part.split(b"\n")[:-1]]


flush_points = st.frozensets(st.integers(min_value=0, max_value=30), max_size=10)


@given(data=any_bytes, cuts=cut_points, max_line=max_lines, buffered=st.booleans(), flushes=flush_points)
def test_pieces_concatenate_to_the_input_and_no_record_is_over_max_line(
    data: bytes, cuts: list[int], max_line: int, buffered: bool, flushes: frozenset[int]
) -> None:
    reads = feed_all(chunked(data, cuts), max_line, buffered=buffered, flushes=flushes)
    parts = [p for read in reads for p in read]
    assert b"".join(parts) == data
    assert all(parts), "no empty part"
    for part in parts:
        for record in records(part):
            assert len(record.rstrip(b"\n")) <= max_line


@given(text=utf8_text, cuts=cut_points, max_line=max_lines)
def test_cuts_of_over_long_lines_never_split_a_utf8_character(text: bytes, cuts: list[int], max_line: int) -> None:
    parts = [p for read in feed_all(chunked(text, cuts), max_line, buffered=False) for p in read]
    pieces = [r for p in parts for r in records(p)]
    assert "".join(r.decode("utf-8") for r in pieces) == text.decode()  # decode raises on a split character


@pytest.mark.skipif(native.core is None, reason=f"the C core is not built: {native.UNAVAILABLE_REASON}")
@given(data=any_bytes, cuts=cut_points, max_line=max_lines)
def test_the_c_core_cuts_exactly_as_the_python_reference(data: bytes, cuts: list[int], max_line: int) -> None:
    assert native.core is not None
    chunks = chunked(data, cuts)
    expected = feed_all(chunks, max_line, buffered=False)[:-1]
    tail = b""
    for chunk, want in zip(chunks, expected, strict=True):
        parts, counts, tail = native.core.cut(tail, chunk, len(chunk), max_line)
        assert parts == want
        assert counts == [py_line_count(p) for p in parts]
    assert b"".join(p for read in expected for p in read) + tail == data


def _through_ring(reads: list[list[bytes]], max_bytes: int) -> tuple[Ring, list[tuple[int, int]], list[bytes]]:
    """Append ``reads`` as the drain does; read a Stream from seq 1: the ring, the gaps, the records received."""
    ring = Ring(max_bytes)
    for parts in reads:
        counts = [py_line_count(p) for p in parts]
        if len(parts) == 1:
            ring.append_lines(STDOUT, 1, parts[0], count=counts[0])
        elif parts:
            _joined(ring, STDOUT, 1, parts, counts)

    async def read() -> tuple[list[tuple[int, int]], list[bytes]]:
        gaps, got = [], []
        async for reply in read_stream(ring, 1, False, frozenset({STDOUT})):
            message = as_message(reply)
            if message.HasField("gap"):
                gaps.append((message.gap.first_seq, message.gap.count))
                continue
            batch, offset = message.lines, 0
            for length in batch.lengths:
                got.append(batch.data[offset : offset + length])
                offset += length
            assert offset == len(batch.data)
        return gaps, got

    gaps, got = asyncio.run(read())
    return ring, gaps, got


@given(
    data=any_bytes, cuts=cut_points, max_line=max_lines, max_bytes=st.integers(min_value=1, max_value=6000),
    flushes=flush_points,
)
def test_a_reader_gets_the_input_less_what_was_evicted_and_the_gap_counts_it_exactly(
    data: bytes, cuts: list[int], max_line: int, max_bytes: int, flushes: frozenset[int]
) -> None:
    reads = feed_all(chunked(data, cuts), max_line, buffered=True, flushes=flushes)
    sent = [r for parts in reads for p in parts for r in records(p)]
    ring, gaps, got = _through_ring(reads, max_bytes)
    evicted = ring.evicted_records
    assert ring.next_seq == 1 + len(sent)
    assert gaps == ([(1, evicted)] if evicted else [])
    assert got == sent[evicted:]
    assert data.endswith(b"".join(got))
