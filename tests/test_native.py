"""The C core of the output path against its pure-Python reference, byte for byte, on seeded random inputs.

Each property runs thousands of generated cases under a time budget (``NATIVE_CASES`` scales them: CI runs
the module again under AddressSanitizer with fewer). Inputs mix short and over-long lines, multi-byte UTF-8
split across reads, invalid UTF-8, empty reads and a missing final newline.
"""

from __future__ import annotations

import importlib.util
import os
import random
import shutil
import sys
import time
from array import array
from types import ModuleType

import pytest

from supervisor._daemon.output import native
from supervisor._daemon.output.lines import LineAssembler
from supervisor._daemon.output.records import Segment, py_line_count, py_line_lengths
from supervisor._daemon.output.stream import native_wire, py_message

CASES = int(os.environ.get("NATIVE_CASES", "2000"))
BUDGET_S = float(os.environ.get("NATIVE_BUDGET_S", "10"))


def _load_core() -> ModuleType | None:
    """The core under test: ``SUPD_NATIVE_SO`` (a sanitizer build) when set, else the installed one."""
    path = os.environ.get("SUPD_NATIVE_SO")
    if not path:
        return native.core
    spec = importlib.util.spec_from_file_location("supervisor._daemon.output._native", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


core = _load_core()
needs_core = pytest.mark.skipif(core is None, reason=f"the C core is not built ({native.UNAVAILABLE_REASON})")


@pytest.mark.skipif(os.environ.get("SUPD_PURE_PYTHON") == "1", reason="the pure-Python path was asked for")
def test_the_core_is_active_where_a_compiler_was_there_to_build_it():
    """The build is optional, so a C error would pass unseen (the install falls back to Python).

    Enforced with ``SUPD_REQUIRE_NATIVE=1`` (scripts/asan_native.sh, in CI); a checkout whose venv was
    installed before the C core existed needs ``pip install -e .`` again to build it.
    """
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler here")
    if native.IMPLEMENTATION != "native" and os.environ.get("SUPD_REQUIRE_NATIVE") != "1":
        pytest.skip(f"the C core is not built ({native.UNAVAILABLE_REASON}): pip install -e . builds it")
    assert native.IMPLEMENTATION == "native", native.UNAVAILABLE_REASON


PIECES = [
    b"a",
    b"hello world",
    b"\n",
    b"\n\n",
    "é".encode(),
    "€".encode(),
    "😀".encode(),
    b"\x80",  # a lone continuation byte
    b"\xc3",  # a lead byte without its continuation
    b"\xf0\x9f",  # half an emoji
    b"\xff\xfe",
    b"x" * 300,
    "é".encode() * 200,
]


def random_stream(rng: random.Random) -> bytes:
    """Output a child might write: lines of every length, UTF-8 or not, maybe no final newline."""
    size = rng.choice((0, 1, 10, 200, 2000, 20000, 20000, 150000 if rng.random() < 0.1 else 0))
    out = bytearray()
    while len(out) < size:
        out += rng.choice(PIECES)
        if rng.random() < 0.05:
            out += b"\n"
    if rng.random() < 0.5 and not out.endswith(b"\n"):
        out += b"\n"
    return bytes(out)


def random_chunks(rng: random.Random, data: bytes) -> list[bytes]:
    """``data`` in reads of random sizes, empty reads among them."""
    chunks = []
    pos = 0
    while pos < len(data):
        n = rng.choice((0, 1, 2, 3, 7, 64, 255, 256, 257, 1000, 4096, 70000))
        chunks.append(data[pos : pos + n])
        pos += n
    chunks.insert(rng.randrange(len(chunks) + 1), b"")
    return chunks


def cases(seed: int):
    rng = random.Random(seed)
    deadline = time.monotonic() + BUDGET_S
    for i in range(CASES):
        if i >= 100 and time.monotonic() > deadline:
            return
        yield rng


@needs_core
def test_cut_matches_the_line_assembler_on_random_reads():
    assert core is not None
    for rng in cases(16):
        max_line = rng.choice((1, 2, 3, 4, 5, 256, 300, 1000, 16384))
        data = random_stream(rng)
        ref = LineAssembler(max_line)
        tail = b""
        got_all: list[bytes] = []
        for chunk in random_chunks(rng, data):
            buf = bytearray(chunk + b"JUNK")  # bytes past n must never be read
            want = ref.feed_buffer(buf, len(chunk)) if chunk else []
            if not chunk:
                continue
            parts, counts, tail = core.cut(tail, buf, len(chunk), max_line)
            assert parts == want, (max_line, chunk)
            assert counts == [py_line_count(p) for p in parts]
            assert len(tail) == ref.held and (not tail or data.find(tail) >= 0)
            got_all += parts
        assert b"".join(got_all) + tail == data


@needs_core
def test_read_cut_matches_the_line_assembler_reading_a_pipe():
    assert core is not None
    for rng in cases(17):
        max_line = rng.choice((1, 3, 256, 1000))
        data = random_stream(rng)
        ref, asm = LineAssembler(max_line), LineAssembler(max_line)
        buf = bytearray(rng.choice((1, 5, 300, 4096, 65536)) if len(data) < 1000 else rng.choice((300, 4096, 65536)))
        r, w = os.pipe2(os.O_CLOEXEC)
        try:
            for chunk in random_chunks(rng, data)[:50]:
                if not chunk:
                    continue
                os.write(w, chunk[: 60000])  # below the pipe's default size: never blocks
                sent = chunk[:60000]
                got: list[bytes] = []
                counts: list[int] = []
                want: list[bytes] = []
                read = 0
                while read < len(sent):
                    want += ref.feed_buffer(bytearray(sent[read : read + len(buf)]), min(len(buf), len(sent) - read))
                    n, parts, cnts, asm._tail = core.read_cut(r, buf, len(buf), asm._tail, max_line)
                    assert n == min(len(buf), len(sent) - read)
                    got += parts
                    counts += cnts
                    read += n
                assert got == want
                assert counts == [py_line_count(p) for p in got]
                assert asm._tail == ref._tail
            os.close(w)
            w = -1
            assert core.read_cut(r, buf, len(buf), asm._tail, max_line) == (0, [], [], asm._tail)
        finally:
            os.close(r)
            if w >= 0:
                os.close(w)


@needs_core
def test_read_cut_raises_blocking_io_error_on_an_empty_pipe():
    assert core is not None
    r, w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        with pytest.raises(BlockingIOError):
            core.read_cut(r, bytearray(16), 16, b"", 10)
    finally:
        os.close(r)
        os.close(w)


@needs_core
def test_a_short_record_read_with_a_long_tail_does_not_keep_the_whole_read_alive():
    """The read lands in a bytes object of the pipe's size; a record much shorter than that is copied out."""
    assert core is not None
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        os.write(w, b"a\n" + b"x" * 60000)
        n, parts, counts, tail = core.read_cut(r, bytearray(1 << 16), 1 << 16, b"", 1 << 20)
        assert (n, parts, counts, len(tail)) == (60002, [b"a\n"], [1], 60000)
        assert sys.getsizeof(parts[0]) < 100  # not the 60 KB it was read into
        os.write(w, b"b" * 100 + b"\n" + b"y" * 50)
        n, parts, counts, tail = core.read_cut(r, bytearray(1 << 16), 1 << 16, tail, 1 << 20)
        assert parts == [b"x" * 60000 + b"b" * 100 + b"\n"] and tail == b"y" * 50
    finally:
        os.close(r)
        os.close(w)


@needs_core
def test_read_cut_reads_into_the_buffer_where_the_fd_cannot_say_how_much_it_holds():
    """/dev/zero answers FIONREAD with ENOTTY: the read goes to ``buf`` and is copied out."""
    assert core is not None
    fd = os.open("/dev/zero", os.O_RDONLY | os.O_CLOEXEC)
    try:
        ref = LineAssembler(300)
        tail = b""
        for size in (1, 299, 300, 301, 1000, 70000):
            buf = bytearray(size + 3)
            n, parts, counts, tail = core.read_cut(fd, buf, size, tail, 300)
            assert n == size
            assert parts == ref.feed_buffer(bytearray(size), size)
            assert counts == [1] * len(parts)
            assert tail == ref._tail
    finally:
        os.close(fd)


@needs_core
def test_counts_lengths_and_offsets_match_python():
    assert core is not None
    for rng in cases(18):
        data = random_stream(rng)
        assert core.line_count(data) == py_line_count(data)
        lengths = array("I")
        lengths.frombytes(core.line_lengths(data))
        assert lengths == py_line_lengths(data)
        k = rng.randrange(max(1, data.count(b"\n") + 1))  # any line that begins after a newline
        assert core.line_offset(data, k) == (len(data) - len(data.split(b"\n", k)[-1]) if k else 0)
        if data:
            start = rng.randrange(len(data))
            end = rng.randrange(start, len(data) + 1)
            assert core.line_count(data, start, end) == py_line_count(data[start:end])


def py_take(data: bytes, offset: int, budget: int, at_least_one: bool) -> tuple[int, int]:
    if len(data) - offset <= budget:
        end = len(data)
    else:
        end = data.rfind(b"\n", offset, offset + budget) + 1
        if end <= offset:
            if not at_least_one:
                return offset, 0
            nl = data.find(b"\n", offset)
            end = len(data) if nl < 0 else nl + 1
    return end, py_line_count(data[offset:end])


@needs_core
def test_take_matches_python():
    assert core is not None
    for rng in cases(19):
        data = random_stream(rng)
        offset = rng.randrange(len(data) + 1)
        budget = rng.choice((0, 1, 50, 300, 5000, 1 << 20))
        flag = rng.random() < 0.5
        assert core.take(data, offset, budget, flag) == py_take(data, offset, budget, flag)


def segment_of(rng: random.Random, seq: int, data: bytes) -> Segment:
    """A segment of ``data``: found by newlines, or (sometimes) with explicit lengths as pieces bring."""
    if rng.random() < 0.3 and data:
        cuts = sorted({*rng.sample(range(1, len(data) + 1), min(len(data), rng.randint(1, 20))), len(data)})
        lengths = array("I", [b - a for a, b in zip([0, *cuts], cuts, strict=False)])
        return Segment(seq, len(lengths), 1, 3, 0, data, lengths=lengths)
    return Segment(seq, py_line_count(data), 1, 3, 0, data)


@needs_core
def test_line_batch_serialises_exactly_as_protobuf():
    assert core is not None
    for rng in cases(20):
        parts = []
        seq = rng.choice((0, 1, 1 << 40))
        for _ in range(rng.randint(1, 4)):
            data = random_stream(rng) or b"x"
            seg = segment_of(rng, seq, data)
            if seg.lengths is not None:
                ends = seg.index().ends
                a = rng.choice([0, *ends[:-1]])
                b = rng.choice([e for e in ends if e > a])
            else:
                a, b = 0, len(data)
            parts.append((seg, a, b))
            seq += seg.count
        time_ns = rng.choice((0, 1, 999_999_999, 1_000_000_000, time.time_ns(), -1_500_000_000))
        stream, gen, first = rng.choice((0, 1, 2)), rng.choice((0, 1, 300, 2**32 - 1)), rng.choice((0, 5, 2**63))
        want = py_message(first, stream, gen, time_ns, parts).SerializeToString()
        spec = [(s.data, a, b, None if s.lengths is None else _lengths_of(s, a, b)) for s, a, b in parts]
        assert core.line_batch(first, stream, gen, time_ns, spec) == want
        if native.core is not None:
            assert native_wire(first, stream, gen, time_ns, parts) == want


def _lengths_of(seg: Segment, a: int, b: int) -> array[int]:
    idx = seg.index()
    k = idx.ends.index(a) + 1 if a else 0
    j = idx.ends.index(b) + 1
    return idx.lengths[k:j]


@needs_core
def test_bad_arguments_raise_instead_of_reading_out_of_bounds():
    assert core is not None
    with pytest.raises(ValueError):
        core.cut(b"", b"abc", 4, 10)
    with pytest.raises(ValueError):
        core.cut(b"", b"abc", 2, 0)
    with pytest.raises(ValueError):
        core.take(b"abc", 4, 1, True)
    with pytest.raises(ValueError):
        core.line_batch(1, 1, 1, 0, [(b"abc", 2, 5, None)])
    with pytest.raises(ValueError):
        core.line_batch(1, 1, 1, 0, [(b"abc", 0, 3, b"\x01\x00")])
    with pytest.raises(ValueError):
        core.line_count(b"abc", 3, 1)
