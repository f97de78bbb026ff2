"""One child's output across its generations: pipes, drains, ring, line counts and sinks.

The driver asks for pipes before a spawn, hands the write ends to the child,
then starts draining the read ends under the new generation's ``Origin``.
Everything read goes to the ring and to every sink at once; none of them may
block. Lifecycle events go into the same ring, so an event's sequence number
orders it among the lines: the driver appends a generation's exit only after
``GenerationOutput.wait_eof()`` returned (or gave up), so the exit follows the
last line of its generation.

Pipes of earlier generations may stay open (held by a process that left the
group): they are drained until EOF, and ``close`` abandons all of them, so
nothing is dropped silently.

The drains run on the poller's thread (see drain.py): ``emit`` below runs
there, appends each read to the ring as one segment under the ring's lock and
offers it to the sinks. A drain is done only after its last segment is in the
ring, and ``wait_eof`` returns only then, on the event loop: so an exit event
appended after ``wait_eof`` always follows its generation's last line.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
import weakref
from array import array
from collections.abc import Callable, Sequence

import anyio

from supervisor._daemon import memory
from supervisor._daemon.output.drain import READ_SIZE, PipeDrain, Poller, make_pipe
from supervisor._daemon.output.records import (
    STDERR,
    STDOUT,
    ChildEvent,
    EventKind,
    Origin,
    Segment,
    line_lengths,
)
from supervisor._daemon.output.ring import Ring
from supervisor._daemon.output.sinks import LineSink

__all__ = ["ChildOutput", "GenerationOutput", "OutputStatistics", "Pipes"]


@dataclasses.dataclass(frozen=True)
class OutputStatistics:
    """A snapshot of one child's output: counts since the child was declared."""

    stdout_lines: int
    stderr_lines: int
    bytes_drained: int
    stdout_bytes: int
    stderr_bytes: int
    next_seq: int
    oldest_seq: int
    ring_bytes_used: int
    ring_evicted_records: int
    open_pipes: tuple[str, ...]


class Pipes:
    """A pair of pipes made for one spawn: the child's write ends and our read ends."""

    def __init__(self) -> None:
        fds: list[int] = []
        try:
            out_r, out_w = make_pipe()
            fds += (out_r, out_w)
            err_r, err_w = make_pipe()
        except OSError:
            for fd in fds:
                os.close(fd)
            raise
        self.stdout_read, self.stdout_write = out_r, out_w
        self.stderr_read, self.stderr_write = err_r, err_w

    def close_write_ends(self) -> None:
        """After a successful spawn: only the child holds the write ends now."""
        os.close(self.stdout_write)
        os.close(self.stderr_write)

    def close_all(self) -> None:
        """After a failed spawn: nothing will read or write these."""
        for fd in (self.stdout_read, self.stdout_write, self.stderr_read, self.stderr_write):
            os.close(fd)


class GenerationOutput:
    """The drains of one generation's stdout and stderr."""

    def __init__(self, drains: Sequence[PipeDrain]) -> None:
        self._drains = tuple(drains)

    async def wait_eof(self, timeout: float) -> list[str]:  # noqa: ASYNC109 - gives up, does not fail
        """Wait until both pipes reached EOF, at most ``timeout`` s; the labels of pipes still open."""
        with anyio.move_on_after(timeout):
            for drain in self._drains:
                await drain.wait_done()
        return [d.label for d in self._drains if not d.done]


class ChildOutput:
    """The ring and drains of one child; see the module docstring."""

    def __init__(
        self,
        name: str,
        ring_bytes: int,
        max_line_bytes: int,
        sinks: Sequence[LineSink] = (),
        poller: Poller | None = None,
    ) -> None:
        self.name = name
        self._poller = poller
        self.ring = Ring(ring_bytes)
        self.ring.drain_behind = _behind(poller)
        self._max_line = max_line_bytes
        # Reads well below the ring's size, so one read never evicts the whole ring.
        self._read_size = min(READ_SIZE, max(4096, ring_bytes // 8))
        self._sinks = tuple(sinks)
        self._lines = {STDOUT: 0, STDERR: 0}
        self._bytes = {STDOUT: 0, STDERR: 0}
        self._counts_lock = threading.Lock()
        self._drains: list[PipeDrain] = []
        self._pending: list[PipeDrain] = []  # made by start(), reading from the STARTED event on

    def __repr__(self) -> str:
        return f"<ChildOutput {self.name} {self.ring!r} drains={len(self._drains)}>"

    @property
    def closed(self) -> bool:
        return self.ring.closed

    def start(self, pipes: Pipes, origin: Origin) -> GenerationOutput:
        """Drain ``pipes`` (whose write ends the new process holds) as ``origin``'s output."""
        pipes.close_write_ends()
        label = f"{self.name}/gen{origin.generation}"
        drains = [
            PipeDrain(
                fd,
                self._max_line,
                self._emitter(stream, origin),
                f"{label}/{which}",
                self._read_size,
                on_read=self._read_counter(stream),
                poller=self._poller,
                start=False,
            )
            for fd, stream, which in ((pipes.stdout_read, STDOUT, "stdout"), (pipes.stderr_read, STDERR, "stderr"))
        ]
        self._drains = [d for d in self._drains if not d.done] + drains
        # Reading begins once the generation's STARTED event is in the ring (so no line of it can come
        # first), or on the loop's next turn if the caller appends no such event right away.
        self._pending.extend(drains)
        asyncio.get_running_loop().call_soon(self._start_pending)
        return GenerationOutput(drains)

    def _start_pending(self) -> None:
        pending, self._pending = self._pending, []
        for drain in pending:
            drain.start()

    def _read_counter(self, stream: int) -> Callable[[int], None]:
        counts, lock = self._bytes, self._counts_lock

        def count_read(n: int) -> None:
            with lock:
                counts[stream] += n

        return count_read

    def _emitter(self, stream: int, origin: Origin) -> Callable[[list[bytes], list[int]], None]:
        # Not self: a drain refers to its emitter, and self to its drains; a cycle would keep the ring (all
        # of a removed child's kept output) until the cycle collector's rare full pass.
        ring, sinks, gen, lines, lock = self.ring, self._sinks, origin.generation, self._lines, self._counts_lock

        def emit(parts: list[bytes], counts: list[int]) -> None:
            # Every drain is abandoned (its tail emitted) before the ring closes, so nothing comes after.
            if len(parts) == 1:
                seg = ring.append_lines(stream, gen, parts[0], count=counts[0])
                offered = [seg]
            else:
                seg, offered = _joined(ring, stream, gen, parts, counts)
            with lock:
                lines[stream] += seg.count
            for sink in sinks:
                for part in offered:
                    sink.offer(origin, part)

        return emit

    def append_event(self, event: ChildEvent) -> int:
        """Record a lifecycle event in order with the lines; its sequence number."""
        seq = self.ring.append_event(event).first_seq
        if event.kind is EventKind.STARTED:
            self._start_pending()
        return seq

    def close(self, final: ChildEvent) -> None:
        """No more output: abandon every drain (emitting held tails), append ``final``, end every stream."""
        for drain in self._drains:
            drain.abandon()
        if not self.ring.closed:
            self.ring.append_event(final)
            self.ring.close()
            # Once the last reader lets go of the ring, its memory goes back to the system (memory.py).
            memory.RELEASER.arm()
            weakref.finalize(self.ring, memory.release_soon).atexit = False  # not as supd exits

    def statistics(self) -> OutputStatistics:
        ring = self.ring
        return OutputStatistics(
            stdout_lines=self._lines[STDOUT],
            stderr_lines=self._lines[STDERR],
            bytes_drained=self._bytes[STDOUT] + self._bytes[STDERR],
            stdout_bytes=self._bytes[STDOUT],
            stderr_bytes=self._bytes[STDERR],
            next_seq=ring.next_seq,
            oldest_seq=ring.oldest_seq,
            ring_bytes_used=ring.bytes_used,
            ring_evicted_records=ring.evicted_records,
            open_pipes=tuple(d.label for d in self._drains if not d.done),
        )


def _behind(poller: Poller | None) -> Callable[[], bool]:
    """True while a poller that may hold a child's pipes is behind (see ``Poller.behind``).

    A function of the poller alone, not a method of ChildOutput: the ring it is given to stays out of a cycle.
    """
    if poller is None:
        return Poller.any_behind
    return lambda: poller.behind


def _joined(
    ring: Ring, stream: int, gen: int, parts: list[bytes], counts: list[int]
) -> tuple[Segment, list[Segment]]:
    """One ring segment for several parts of a read (pieces among them), and the parts as sinks take them.

    Sinks get one segment per part, whose lines are found by their newlines
    (a piece alone in its segment), numbered as in the ring.
    """
    lengths = array("I")
    for part, count in zip(parts, counts, strict=True):
        if count == 1:  # a piece, or one line: no scan
            lengths.append(len(part))
        else:
            lengths.extend(line_lengths(part))
    seg = ring.append_lines(stream, gen, b"".join(parts), lengths=lengths)
    offered = []
    seq = seg.first_seq
    for part, count in zip(parts, counts, strict=True):
        one = Segment(seq, count, stream, gen, seg.time_ns, part)
        offered.append(one)
        seq = one.end_seq
    return seg, offered
