"""The drain's line assembly and pipe reading, on real pipes, small ones included."""

from __future__ import annotations

import asyncio
import fcntl
import os
import random
import subprocess

import pytest

from supervisor._daemon.output.drain import LineAssembler, PipeDrain, _has_long_line


def assemble(chunks: list[bytes], max_line: int) -> list[bytes]:
    asm = LineAssembler(max_line)
    out = [seg for chunk in chunks for seg in asm.feed(chunk)]
    return out + asm.finish()


def lines_of(segments: list[bytes]) -> list[bytes]:
    out = []
    for seg in segments:
        parts = seg.split(b"\n")
        out.extend(p + b"\n" for p in parts[:-1])
        if parts[-1]:
            out.append(parts[-1])
    return out


def test_segments_end_at_line_ends_whatever_the_chunking():
    rng = random.Random(7)
    text = b"".join(b"x" * rng.randrange(0, 300) + b"\n" for _ in range(2000)) + b"tail"
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(text)), 50))
        chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        segments = assemble(chunks, max_line=1000)
        assert b"".join(segments) == text
        assert all(s.endswith(b"\n") for s in segments[:-1])
        assert segments[-1] == b"tail"


def test_long_lines_become_pieces_and_nothing_is_lost():
    text = b"short\n" + b"L" * 2500 + b"\nafter\n" + b"T" * 1200
    segments = assemble([text[:1000], text[1000:]], max_line=1000)
    assert b"".join(segments) == text
    assert lines_of(segments) == [
        b"short\n", b"L" * 1000, b"L" * 1000, b"L" * 500 + b"\n", b"after\n", b"T" * 1000, b"T" * 200,
    ]


def test_exactly_max_line_is_not_split():
    assert lines_of(assemble([b"a" * 100 + b"\n"], max_line=100)) == [b"a" * 100 + b"\n"]
    assert lines_of(assemble([b"a" * 101 + b"\n"], max_line=100)) == [b"a" * 100, b"a\n"]


@pytest.mark.parametrize("max_line", [1, 7, 100, 4096])
def test_long_line_detection_agrees_with_splitting(max_line):
    rng = random.Random(max_line)
    for _ in range(200):
        data = b"".join(b"y" * rng.randrange(0, 2 * max_line + 2) + b"\n" for _ in range(rng.randrange(1, 30)))
        expected = any(len(line) > max_line for line in data.split(b"\n"))
        assert _has_long_line(data, max_line) == expected


def test_drain_is_complete_and_prompt_with_the_smallest_pipes():
    """An unprivileged supd past its pipe quota gets tiny pipes: still every byte, in order."""

    async def main() -> bytes:
        r, w = os.pipe2(os.O_CLOEXEC)
        fcntl.fcntl(r, fcntl.F_SETPIPE_SZ, 4096)
        assert fcntl.fcntl(r, fcntl.F_GETPIPE_SZ) == 4096
        os.set_blocking(r, False)
        got: list[bytes] = []
        drain = PipeDrain(r, 16384, got.append, "test")
        writer = subprocess.Popen(  # noqa: ASYNC220 - starting it is instant; the drain is what is tested
            ["python3", "-c", "import sys; sys.stdout.buffer.write(b''.join(b'%07d\\n' % i for i in range(300000)))"],
            stdout=w,
        )
        os.close(w)
        await asyncio.wait_for(drain.done.wait(), 60)
        assert writer.wait(10) == 0
        return b"".join(got)

    data = asyncio.run(main())
    assert data == b"".join(b"%07d\n" % i for i in range(300000))
