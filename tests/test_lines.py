"""Cutting reads into records: runs of lines, pieces of over-long lines (at UTF-8 boundaries), partial tails."""

from __future__ import annotations

import random

import pytest

from supervisor._daemon.output.lines import LineAssembler, cut_point


def assemble(chunks: list[bytes], max_line: int) -> list[bytes]:
    asm = LineAssembler(max_line)
    out = [part for chunk in chunks for part in asm.feed(chunk)]
    return out + asm.finish()


def records(parts: list[bytes]) -> list[bytes]:
    """Each part is a run of whole lines or exactly one record without a newline."""
    out = []
    for part in parts:
        if not part.endswith(b"\n"):
            assert b"\n" not in part, "a part without a final newline is one record"
            out.append(part)
            continue
        out.extend(line + b"\n" for line in part.split(b"\n")[:-1])
    return out


@pytest.mark.parametrize("split_at", [None, 1, 300, 5000])
def test_a_long_valid_utf8_line_is_cut_at_character_boundaries(split_at):
    """Issue 15 item 10: "a" + "é" * 10000 gave pieces starting and ending with U+FFFD."""
    line = ("a" + "é" * 10000).encode() + b"\n"
    chunks = [line] if split_at is None else [line[:split_at], line[split_at:]]
    recs = records(assemble(chunks, max_line=256))
    assert len(recs) > 1
    assert all(len(r.rstrip(b"\n")) <= 256 for r in recs)
    texts = [r.decode("utf-8") for r in recs]  # raises on a piece cut inside a character
    assert "".join(texts) == line.decode()


def test_a_long_valid_utf8_line_without_newline_is_cut_at_boundaries_too():
    text = ("x" + "€😀é" * 3000).encode()
    recs = records(assemble([text[i : i + 777] for i in range(0, len(text), 777)], max_line=300))
    assert b"".join(recs) == text
    assert "".join(r.decode("utf-8") for r in recs) == text.decode()
    assert all(len(r) <= 300 for r in recs)


def test_bytes_that_are_not_utf8_are_cut_at_max_line_exactly():
    line = b"\x80" * 1000 + b"\n"
    assert records(assemble([line], max_line=256)) == [b"\x80" * 256] * 3 + [b"\x80" * 232 + b"\n"]


def test_random_text_comes_back_whole_whatever_the_chunking():
    rng = random.Random(15)
    alphabet = ["a", "é", "€", "😀", "\n"]
    for max_line in (256, 1000):
        text = "".join(rng.choices(alphabet, weights=[50, 10, 10, 10, 1], k=40000)).encode()
        cuts = sorted(rng.sample(range(1, len(text)), 40))
        chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        recs = records(assemble(chunks, max_line))
        assert b"".join(recs) == text
        assert all(len(r.rstrip(b"\n")) <= max_line for r in recs)
        for r in recs:
            r.decode("utf-8")


def test_cut_point_never_moves_more_than_three_bytes():
    data = "é".encode() * 10
    assert cut_point(data, 5, 0) == 4  # data[5] continues the character that begins at 4
    assert cut_point(b"\x80" * 10, 5, 0) == 5


def test_a_huge_line_becomes_pieces_in_one_pass():
    """20 MB without a newline at max_line 256 was quadratic (a copy of the rest per piece)."""
    asm = LineAssembler(256)
    parts = asm.feed(b"z" * (20 << 20))
    assert len(parts) == (20 << 20) // 256 - 1 and asm.held == 256
    assert all(p == b"z" * 256 for p in parts)


def test_flush_partial_emits_held_bytes_but_keeps_an_incomplete_character():
    asm = LineAssembler(1000)
    assert asm.feed("Enter password: é".encode()[:-1]) == []
    assert asm.flush_partial() == [b"Enter password: "]
    assert asm.held == 1
    assert asm.feed(b"\xa9 ok\n") == ["é ok\n".encode()]


def test_an_incomplete_character_alone_is_emitted_after_another_quiet_period():
    asm = LineAssembler(1000)
    asm.feed(b"xyz\xe2\x82")  # a child that stops in the middle of a character and waits
    assert asm.flush_partial() == [b"xyz"]
    assert asm.flush_partial() == [b"\xe2\x82"]  # never held back for good: the bytes come first
    assert asm.held == 0 and asm.flush_partial() == []
