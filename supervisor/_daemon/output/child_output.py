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
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence

import anyio

from supervisor._daemon.output.drain import READ_SIZE, PipeDrain, make_pipe
from supervisor._daemon.output.records import STDERR, STDOUT, ChildEvent, Origin
from supervisor._daemon.output.ring import Ring
from supervisor._daemon.output.sinks import LineSink

__all__ = ["ChildOutput", "GenerationOutput", "OutputStatistics", "Pipes"]


@dataclasses.dataclass(frozen=True)
class OutputStatistics:
    """A snapshot of one child's output: counts since the child was declared."""

    stdout_lines: int
    stderr_lines: int
    bytes_drained: int
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
                await drain.done.wait()
        return [d.label for d in self._drains if not d.done.is_set()]


class ChildOutput:
    """The ring and drains of one child; see the module docstring."""

    def __init__(self, name: str, ring_bytes: int, max_line_bytes: int, sinks: Sequence[LineSink] = ()) -> None:
        self.name = name
        self.ring = Ring(ring_bytes)
        self._max_line = max_line_bytes
        # Reads well below the ring's size, so one read never evicts the whole ring.
        self._read_size = min(READ_SIZE, max(4096, ring_bytes // 8))
        self._sinks = tuple(sinks)
        self._lines = {STDOUT: 0, STDERR: 0}
        self._bytes_drained = 0
        self._drains: list[PipeDrain] = []

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
                pipes.stdout_read, self._max_line, self._emitter(STDOUT, origin), f"{label}/stdout", self._read_size
            ),
            PipeDrain(
                pipes.stderr_read, self._max_line, self._emitter(STDERR, origin), f"{label}/stderr", self._read_size
            ),
        ]
        self._drains = [d for d in self._drains if not d.done.is_set()] + drains
        return GenerationOutput(drains)

    def _emitter(self, stream: int, origin: Origin) -> Callable[[bytes], None]:
        ring, sinks, gen, lines = self.ring, self._sinks, origin.generation, self._lines

        def emit(data: bytes) -> None:
            # Every drain is abandoned (its tail emitted) before the ring closes, so nothing comes after.
            seg = ring.append_lines(stream, gen, data)
            lines[stream] += seg.count
            self._bytes_drained += len(data)
            for sink in sinks:
                sink.offer(origin, seg)

        return emit

    def append_event(self, event: ChildEvent) -> int:
        """Record a lifecycle event in order with the lines; its sequence number."""
        return self.ring.append_event(event).first_seq

    def close(self, final: ChildEvent) -> None:
        """No more output: abandon every drain (emitting held tails), append ``final``, end every stream."""
        for drain in self._drains:
            drain.abandon()
        if not self.ring.closed:
            self.ring.append_event(final)
            self.ring.close()

    def statistics(self) -> OutputStatistics:
        ring = self.ring
        return OutputStatistics(
            stdout_lines=self._lines[STDOUT],
            stderr_lines=self._lines[STDERR],
            bytes_drained=self._bytes_drained,
            next_seq=ring.next_seq,
            oldest_seq=ring.oldest_seq,
            ring_bytes_used=ring.bytes_used,
            ring_evicted_records=ring.evicted_records,
            open_pipes=tuple(d.label for d in self._drains if not d.done.is_set()),
        )
