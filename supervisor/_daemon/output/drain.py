"""Always-on draining of a child's pipes: read big chunks, cut at line ends, never block.

Seed 01 is why this exists: a pipe nobody reads fills up and freezes the child
while it looks alive. Every pipe is read from the moment of spawn, in chunks of
up to 1 MiB, whether or not a client listens; what is read goes straight to
the ring and the sinks, none of which may block.

The assembler keeps the bytes after the last newline of a read and prepends
them to the next read, so segments always end at a line end. Over-long lines
are found without a per-line loop (one ``rfind`` per ``max_line`` bytes) and
only then split into pieces; the unterminated last line is emitted at EOF.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import os
from collections.abc import Callable

import structlog

__all__ = ["READ_SIZE", "LineAssembler", "PipeDrain", "make_pipe"]

READ_SIZE = 1 << 20
PIPE_SIZE = 1 << 20
log = structlog.get_logger("supd.drain")


def make_pipe() -> tuple[int, int]:
    """A close-on-exec pipe enlarged where the kernel allows: (read_fd, write_fd).

    An unprivileged user past its pipe quota keeps the default (as small as
    4 KiB); the drain stays correct then, it just wakes up more often.
    """
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        fcntl.fcntl(r, fcntl.F_SETPIPE_SZ, PIPE_SIZE)  # the kernel may round up: never smaller
    except OSError as exc:
        size = fcntl.fcntl(r, fcntl.F_GETPIPE_SZ)
        log.warning("drain.pipe.small", size=size, wanted=PIPE_SIZE, error=exc.strerror)
    os.set_blocking(r, False)
    return r, w


def _has_long_line(data: bytes, max_line: int) -> bool:
    """True when some line of ``data`` (which ends in a newline) is longer than ``max_line``.

    Each step jumps to the last newline within ``max_line + 1`` bytes, so a
    buffer of short lines costs one call per ``max_line`` bytes.
    """
    n, pos = len(data), 0
    while n - pos > max_line + 1:
        nl = data.rfind(b"\n", pos, pos + max_line + 1)
        if nl < 0:
            return True
        pos = nl + 1
    return False


def _split_long(data: bytes, max_line: int) -> list[bytes]:
    """Cut newline-terminated ``data`` into segments, each over-long line into pieces of its own."""
    out: list[bytes] = []
    group: list[bytes] = []
    for line in data.split(b"\n")[:-1]:
        if len(line) <= max_line:
            group.append(line)
            continue
        if group:
            out.append(b"\n".join(group) + b"\n")
            group = []
        last = (len(line) - 1) // max_line * max_line
        out.extend(line[i : i + max_line] for i in range(0, last, max_line))
        out.append(line[last:] + b"\n")
    if group:
        out.append(b"\n".join(group) + b"\n")
    return out


_SHARED_BUFFER: memoryview | None = None


def _shared_view() -> memoryview:
    """The read buffer every drain shares, made on first use."""
    global _SHARED_BUFFER  # noqa: PLW0603 - one buffer for the process, made lazily
    if _SHARED_BUFFER is None:
        _SHARED_BUFFER = memoryview(bytearray(READ_SIZE))
    return _SHARED_BUFFER


class LineAssembler:
    """Turns arbitrary reads into segments that end at line ends (or are one piece of a long line)."""

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self._tail = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        """The complete segments that ``chunk`` finishes; keeps the rest for later."""
        data = self._tail + chunk if self._tail else chunk
        last_nl = data.rfind(b"\n")
        if last_nl < 0:
            self._tail = data
            return self._cut_tail()
        if last_nl == len(data) - 1:
            complete, self._tail = data, b""
        else:
            complete, self._tail = data[: last_nl + 1], data[last_nl + 1 :]
        out = _split_long(complete, self.max_line) if _has_long_line(complete, self.max_line) else [complete]
        if len(self._tail) > self.max_line:
            out.extend(self._cut_tail())
        return out

    def _cut_tail(self) -> list[bytes]:
        """Pieces of ``max_line`` bytes off a tail that is already too long to be one line."""
        pieces = []
        while len(self._tail) > self.max_line:
            pieces.append(self._tail[: self.max_line])
            self._tail = self._tail[self.max_line :]
        return pieces

    def finish(self) -> list[bytes]:
        """At EOF: the unterminated last line, if any."""
        tail, self._tail = self._tail, b""
        return [tail] if tail else []


class PipeDrain:
    """Reads one pipe on the event loop until EOF, handing each segment to ``emit``.

    ``emit`` runs on the loop thread and must not block. ``done`` is set at EOF,
    after the last segment (the unterminated line included) was emitted.
    """

    def __init__(
        self, fd: int, max_line: int, emit: Callable[[bytes], None], label: str, read_size: int = READ_SIZE
    ) -> None:
        self.fd = fd
        self.read_size = read_size
        self.label = label
        self.bytes_read = 0
        self.done = asyncio.Event()
        self._emit = emit
        self._assembler = LineAssembler(max_line)
        # Reads land in one buffer shared by every drain (all run on the loop's
        # thread, and each read is copied out at once): a fresh bytes object per
        # read cost ~40 % more CPU at full speed, and a buffer per pipe would
        # hold 2 MiB per idle child.
        self._view = _shared_view()[:read_size]
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(fd, self._on_readable)

    def __repr__(self) -> str:
        return f"<PipeDrain {self.label} fd={self.fd} read={self.bytes_read}{' eof' if self.done.is_set() else ''}>"

    def _on_readable(self) -> None:
        try:
            n = os.readv(self.fd, [self._view])
            chunk = self._view[:n].tobytes()
        except BlockingIOError:
            return
        except OSError as exc:
            # EIO and friends: the pipe is unusable; end it like EOF, but say so.
            log.error("drain.read.failed", pipe=self.label, errno=errno.errorcode.get(exc.errno or 0), error=str(exc))
            chunk = b""
        if not chunk:
            self._close()
            return
        self.bytes_read += len(chunk)
        for segment in self._assembler.feed(chunk):
            self._emit(segment)

    def _close(self) -> None:
        self._loop.remove_reader(self.fd)
        os.close(self.fd)
        for segment in self._assembler.finish():
            self._emit(segment)
        self.done.set()

    def abandon(self) -> None:
        """Stop reading now (supd is exiting): emit the held tail, close the fd."""
        if not self.done.is_set():
            self._close()
