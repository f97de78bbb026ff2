"""Cutting a pipe's bytes into records: runs of whole lines, pieces of over-long lines, partial tails.

The assembler keeps the bytes after the last newline of a read and puts them
in front of the next read, so what it returns always ends at a line end,
except for a piece of an over-long line or a partial record. Every step costs
time linear in the bytes: whole lines are found with one ``rfind`` per
``max_line`` bytes, pieces are sliced from one buffer, and no buffer is ever
copied again for each piece cut from it.

A line of valid UTF-8 is cut at a character boundary at or below ``max_line``
bytes, so joining its pieces' texts gives the line back; bytes that are not
UTF-8 are cut at ``max_line`` exactly. A piece carries no newline: the next
record of the same stream continues it.
"""

from __future__ import annotations

import os

from supervisor._daemon.output import native
from supervisor._daemon.output.records import py_line_count

__all__ = ["LineAssembler", "cut_point"]


def cut_point(data: bytes, limit: int, floor: int) -> int:
    """Where to end a piece that may run up to ``limit`` (exclusive): at ``limit`` or at most 3 bytes before it.

    When ``data[limit]`` continues a UTF-8 character whose lead byte lies after
    ``floor``, the cut moves back to that lead byte. ``data[limit]`` must exist.
    """
    if data[limit] & 0xC0 != 0x80:
        return limit
    for k in range(limit - 1, max(floor, limit - 4), -1):
        b = data[k]
        if b & 0xC0 == 0xC0:
            return k
        if b & 0xC0 != 0x80:
            return limit  # not UTF-8 here: cut at the limit
    return limit


def _complete_utf8(data: bytes) -> int:
    """The length of ``data`` without an incomplete UTF-8 character at its end."""
    n = len(data)
    for k in range(n - 1, max(-1, n - 4), -1):
        b = data[k]
        if b & 0xC0 == 0x80:
            continue
        need = 2 if b & 0xE0 == 0xC0 else 3 if b & 0xF0 == 0xE0 else 4 if b & 0xF8 == 0xF0 else 1
        return k if n - k < need else n
    return n


class LineAssembler:
    """Turns arbitrary reads of one pipe into records; see the module docstring.

    ``feed`` and ``feed_buffer`` return parts: each is either a run of whole
    lines (ending in a newline) or exactly one record without a newline (a
    piece) or the final piece of an over-long line (with its newline).
    """

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self._tail = b""

    @property
    def held(self) -> int:
        """Bytes read but not returned yet (after the last newline): at most ``max_line``."""
        return len(self._tail)

    def feed(self, chunk: bytes) -> list[bytes]:
        """The parts that ``chunk`` completes; keeps the rest for later. No copy when ``chunk`` ends a line."""
        tail = self._tail
        last_nl = chunk.rfind(b"\n")
        if last_nl < 0:
            self._tail = tail + chunk if tail else chunk
            return self._cut_tail() if len(self._tail) > self.max_line else []
        if last_nl == len(chunk) - 1:
            complete = tail + chunk if tail else chunk
            self._tail = b""
        else:
            complete = b"".join((tail, memoryview(chunk)[: last_nl + 1])) if tail else chunk[: last_nl + 1]
            self._tail = chunk[last_nl + 1 :]
        out = self._split(complete)
        if len(self._tail) > self.max_line:
            out.extend(self._cut_tail())
        return out

    def read(self, fd: int, buf: bytearray, size: int) -> tuple[int, list[bytes], list[int]]:
        """One read of up to ``size`` bytes from ``fd`` into ``buf``, cut: (bytes read, parts, lines of each part).

        (0, [], []) at EOF. Raises OSError as ``os.readv`` does (BlockingIOError when the pipe is empty). The
        C core reads, numbers and cuts with the GIL released once; the Python path reads, then ``feed_buffer``.
        """
        core = native.core
        if core is not None:
            n, parts, counts, self._tail = core.read_cut(fd, buf, size, self._tail, self.max_line)
            return n, parts, counts
        n = os.readv(fd, [memoryview(buf)[:size]])
        if not n:
            return 0, [], []
        parts = self.feed_buffer(buf, n)
        return n, parts, [py_line_count(p) for p in parts]

    def feed_buffer(self, buf: bytearray, n: int) -> list[bytes]:
        """As ``feed`` for the first ``n`` bytes of ``buf`` (a reused read buffer), copied out once."""
        tail = self._tail
        view = memoryview(buf)
        last_nl = buf.rfind(b"\n", 0, n)
        if last_nl < 0:
            self._tail = b"".join((tail, view[:n])) if tail else bytes(view[:n])
            return self._cut_tail() if len(self._tail) > self.max_line else []
        complete = b"".join((tail, view[: last_nl + 1])) if tail else bytes(view[: last_nl + 1])
        self._tail = bytes(view[last_nl + 1 : n])
        out = self._split(complete)
        if len(self._tail) > self.max_line:
            out.extend(self._cut_tail())
        return out

    def _split(self, data: bytes) -> list[bytes]:
        """Newline-terminated ``data`` as parts: runs of short lines as they are, long lines cut into pieces."""
        max_line = self.max_line
        n = len(data)
        out: list[bytes] = []
        pos = scan = 0
        while n - scan > max_line + 1:
            nl = data.rfind(b"\n", scan, scan + max_line + 1)
            if nl >= 0:
                scan = nl + 1
                continue
            end = data.find(b"\n", scan)  # the long line's newline: data ends with one
            if scan > pos:
                out.append(data[pos:scan])
            start = scan
            while end - start > max_line:
                cut = cut_point(data, start + max_line, start)
                out.append(data[start:cut])
                start = cut
            out.append(data[start : end + 1])
            pos = scan = end + 1
        if pos < n:
            out.append(data[pos:] if pos else data)
        return out

    def _cut_tail(self) -> list[bytes]:
        """Pieces of at most ``max_line`` bytes off a held tail that is too long to be one line."""
        tail, max_line = self._tail, self.max_line
        pieces = []
        start = 0
        while len(tail) - start > max_line:
            cut = cut_point(tail, start + max_line, start)
            pieces.append(tail[start:cut])
            start = cut
        self._tail = tail[start:]
        return pieces

    def flush_partial(self) -> list[bytes]:
        """After a quiet period: the held bytes as one partial record.

        An incomplete UTF-8 character at the end stays held for one more quiet
        period, in case the rest of it is on its way; when it is all that is
        held, it is emitted too: the bytes matter more than a clean text.
        """
        tail = self._tail
        keep = _complete_utf8(tail) or len(tail)
        self._tail = tail[keep:]
        return [tail[:keep] if keep < len(tail) else tail] if tail else []

    def finish(self) -> list[bytes]:
        """At EOF: the unterminated last line, if any."""
        tail, self._tail = self._tail, b""
        return [tail] if tail else []
