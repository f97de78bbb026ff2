"""Signals for the event loop that no burst of other signals can lose.

asyncio (and anyio's ``open_signal_receiver``, built on it) learns of a signal
from one byte that CPython's C-level handler writes into the loop's self-pipe,
a socketpair; the Python-level handler asyncio installs does nothing. A
non-blocking socketpair is full after 278 one-byte writes (each is its own
buffer in the kernel), and a signal whose byte finds it full is dropped, with a
traceback printed on stderr ("Exception ignored when trying to write to the
signal wakeup fd"). Five hundred children ending together (a shutdown, a host
out of memory) send supd up to 500 SIGCHLD while its loop is busy with their
exits: a SIGTERM right behind them was lost, and the runtime's SIGKILL came at
the end of its grace instead of a clean stop.

Here each signal has a Python-level handler (``signal.signal``), which CPython
runs on the main thread whatever the wakeup fd holds; it hands the signal to the
loop with ``call_soon_threadsafe``. The wakeup fd has one job left: to wake the
loop when a signal was delivered to another thread. It is a pipe (65,536
one-byte writes), written without a warning when full, since a full pipe wakes
the loop all the same. Source: the ``signal`` module's documentation
(``set_wakeup_fd``, "Execution of Python signal handlers").

Use ``receive(*signals)`` on the event loop's thread, which must be the main
thread, in place of ``anyio.open_signal_receiver``; nothing else in the process
may call ``signal.set_wakeup_fd`` or asyncio's ``add_signal_handler`` then.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import types
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, ClassVar

import anyio
import structlog
from anyio.streams.memory import MemoryObjectSendStream

__all__ = ["receive"]

log = structlog.get_logger("supd.signals")

Handler = Callable[[int, types.FrameType | None], Any] | int | signal.Handlers | None


class _Inbox:
    """The process's signal handlers and wakeup pipe, bound to one running loop."""

    current: ClassVar[_Inbox | None] = None  # the process's one inbox while a receiver is open

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.subscribers: dict[int, list[MemoryObjectSendStream[int]]] = {}
        self.previous: dict[int, Handler] = {}
        self.after_close = 0  # signals that came once the loop was closed (nobody could act on them)
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            self._old_wakeup = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)  # main thread only
        except BaseException:
            os.close(self._read)
            os.close(self._write)
            raise
        loop.add_reader(self._read, self._drain)

    def _drain(self) -> None:
        """The loop is awake: empty the pipe (the handlers themselves run on the main thread, not from here)."""
        with contextlib.suppress(BlockingIOError):  # empty: nothing more to read this time
            while os.read(self._read, 4096):
                pass

    def _handler(self, signum: int, _frame: types.FrameType | None) -> None:
        # Runs on the main thread between two bytecodes, possibly inside the loop's own code: only hand over.
        try:
            self.loop.call_soon_threadsafe(self._deliver, signum)
        except RuntimeError:  # the loop is closed: supd is past serving; counted, logged at close (not from here)
            self.after_close += 1

    def _deliver(self, signum: int) -> None:
        for stream in self.subscribers.get(signum, ()):
            stream.send_nowait(signum)  # unbounded buffer: never full

    def subscribe(self, signals: tuple[int, ...], stream: MemoryObjectSendStream[int]) -> None:
        for sig in signals:
            if sig not in self.subscribers:
                self.previous[sig] = signal.signal(sig, self._handler)  # raises first for SIGKILL and the like
                self.subscribers[sig] = []
            self.subscribers[sig].append(stream)

    def unsubscribe(self, signals: tuple[int, ...], stream: MemoryObjectSendStream[int]) -> None:
        for sig in signals:
            streams = self.subscribers.get(sig, [])
            if stream in streams:
                streams.remove(stream)
            if not streams and sig in self.subscribers:
                del self.subscribers[sig]
                previous = self.previous.pop(sig)
                signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        if not self.subscribers:
            self.close()

    def close(self) -> None:
        """Give the wakeup fd back and close the pipe (the last receiver ended)."""
        if self.after_close:
            log.warning("signals.after_close", count=self.after_close, detail="signals came after the loop closed")
        signal.set_wakeup_fd(self._old_wakeup)
        if not self.loop.is_closed():
            self.loop.remove_reader(self._read)
        os.close(self._read)
        os.close(self._write)
        _Inbox.current = None


def _bound() -> _Inbox:
    loop = asyncio.get_running_loop()
    inbox = _Inbox.current
    if inbox is not None and inbox.loop is not loop:
        log.warning("signals.inbox.rebound", detail="a receiver of an earlier event loop was never closed")
        inbox.close()
        inbox = None
    if inbox is None:
        inbox = _Inbox.current = _Inbox(loop)
    return inbox


@contextlib.contextmanager
def receive(*signals: int) -> Iterator[AsyncIterator[int]]:
    """The given signals, each delivery once, for as long as the context is open.

    In the order their handlers ran: signals pending together (the main thread was busy in C) run lowest number
    first, so a SIGINT sent right after a SIGTERM may come before it. On the event loop's thread (the main
    thread: ValueError elsewhere, and nothing is left open). While it is open the signals' handlers are supd's;
    the handlers they replaced come back when the last receiver of each closes. Raises OSError (EINVAL) for a
    signal that cannot be caught (SIGKILL, SIGSTOP).
    """
    inbox = _bound()
    send, recv = anyio.create_memory_object_stream[int](math.inf)
    try:
        inbox.subscribe(signals, send)
        yield recv
    finally:
        inbox.unsubscribe(signals, send)
        send.close()
        recv.close()
