"""signal_inbox: a stop signal right behind a burst of SIGCHLD reaches supd's loop; so does one another thread got.

Real signals sent to this process, in process under fail_after: the burst is staged while the loop's thread is
busy, which a subprocess cannot arrange at the right instant. Guards: with anyio's open_signal_receiver (asyncio's
self-pipe, full after 278 one-byte writes) the SIGTERM after 1,000 SIGCHLD was dropped.
"""

from __future__ import annotations

import os
import signal
import threading

import anyio
import pytest

from supervisor._daemon import signal_inbox

BURST = 1000


def _burst_then(sig: int) -> None:
    """On the loop's thread, never yielding to the loop: a burst of SIGCHLD, then ``sig``."""
    for _ in range(BURST):
        os.kill(os.getpid(), signal.SIGCHLD)  # a signal to oneself is delivered before kill() returns
    os.kill(os.getpid(), sig)


def test_a_sigterm_right_behind_a_burst_of_sigchld_is_received() -> None:
    async def main() -> tuple[list[int], list[int]]:
        terms: list[int] = []
        chlds: list[int] = []
        with anyio.fail_after(10):
            with signal_inbox.receive(signal.SIGTERM) as stops, signal_inbox.receive(signal.SIGCHLD) as children:
                _burst_then(signal.SIGTERM)
                terms.append(await anext(stops))
                chlds.append(await anext(children))
        return terms, chlds

    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGCHLD)
    terms, chlds = anyio.run(main)
    assert terms == [signal.SIGTERM]
    assert chlds == [signal.SIGCHLD]
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGCHLD)) == before  # handlers given back
    assert signal.set_wakeup_fd(-1) == -1  # and the wakeup fd: nothing left set


def test_a_signal_another_thread_received_wakes_the_idle_loop() -> None:
    """The main thread blocks SIGUSR1, so the kernel hands it to a helper thread: only the pipe wakes the loop."""
    go = threading.Event()

    def sender() -> None:
        go.wait(10)
        os.kill(os.getpid(), signal.SIGUSR1)

    helper = threading.Thread(target=sender)  # created before the block: it keeps SIGUSR1 deliverable
    helper.start()

    async def main() -> int:
        with anyio.fail_after(10), signal_inbox.receive(signal.SIGUSR1) as signals:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
            try:
                go.set()
                return await anext(signals)  # the loop sleeps in epoll until the pipe has a byte
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})

    try:
        assert anyio.run(main) == signal.SIGUSR1
    finally:
        go.set()
        helper.join(10)


def test_two_receivers_of_one_signal_each_get_it_and_the_handler_stays_until_the_last_closes() -> None:
    async def main() -> tuple[int, int, object]:
        with anyio.fail_after(10), signal_inbox.receive(signal.SIGUSR2) as first:
            with signal_inbox.receive(signal.SIGUSR2) as second:
                os.kill(os.getpid(), signal.SIGUSR2)
                a, b = await anext(first), await anext(second)
            still = signal.getsignal(signal.SIGUSR2)
        return a, b, still

    before = signal.getsignal(signal.SIGUSR2)
    a, b, still = anyio.run(main)
    assert a == b == signal.SIGUSR2
    assert still is not before  # one receiver still open: supd's handler stayed
    assert signal.getsignal(signal.SIGUSR2) == before


def test_a_signal_that_cannot_be_caught_is_a_value_error() -> None:
    async def main() -> None:
        with signal_inbox.receive(signal.SIGKILL):
            raise AssertionError("SIGKILL was accepted")

    with pytest.raises((ValueError, OSError)):
        anyio.run(main)


def test_off_the_main_thread_a_receiver_is_a_value_error_that_leaves_no_descriptor_open() -> None:
    async def main() -> None:
        with signal_inbox.receive(signal.SIGUSR2):
            raise AssertionError("a receiver opened off the main thread")

    errors: list[BaseException] = []

    def run() -> None:
        try:
            anyio.run(main)
        except ValueError as exc:
            errors.append(exc)

    before = sorted(os.listdir("/proc/self/fd"))
    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    assert len(errors) == 1, errors
    assert sorted(os.listdir("/proc/self/fd")) == before  # the wakeup pipe it made is closed again
