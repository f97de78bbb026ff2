"""PID 1 duties: become child subreaper and reap orphaned descendants, never a child supd waits for itself.

A process whose parent dies is re-parented to the nearest ancestor marked
child subreaper (``prctl(PR_SET_CHILD_SUBREAPER)``, prctl(2)), or to PID 1 of
its PID namespace. Once supd is either, every orphaned descendant of its
children ends as supd's zombie unless supd waits for it.

The status of a child supd watches through a pidfd (``Process.reap``) or that
asyncio waits for (``anyio.open_process``: exec probes, delivery commands) must
never be collected here: a blanket ``waitpid(-1)`` gave wrong exit codes for up
to 77 of 200 children. So a pass waits only for PIDs it has proved are not
supd's own, one by one (waitid(2) with ``P_PID`` and ``WNOHANG``):

1. **Only the children of the thread-group leader are candidates**, read from
   ``/proc/self/task/<pid>/children`` (proc(5)). The kernel re-parents every
   orphan to the first live thread of the reaper, which is the leader
   (``find_new_reaper`` and ``find_alive_thread`` in kernel/exit.c), while a
   child forked by a worker thread is listed under that thread. Children are
   spawned in anyio worker threads, so a child whose PID is not recorded yet
   is never a candidate: anyio lets a worker exit only after it sat idle for
   10 s counted from the moment the event loop took its result, and the
   spawning task records the PID on the loop right after it resumes. The
   ``__WNOTHREAD`` flag makes the kernel itself refuse any child that is not
   the leader's, so the rule holds at the moment of the wait, not only at the
   moment of the read.
2. **Every PID in** ``owned()`` **is skipped**: the children supd spawned that
   are not reaped yet. They move to the leader's list when their worker thread
   exits, long after being recorded.
3. **Every PID the running loop's asyncio child watcher waits for is skipped**:
   asyncio forks on the loop thread (so on the leader's list) and registers the
   PID with its watcher before the loop runs anything else.

A candidate's PID cannot change between the read and the wait: it is supd's
unreaped child, and nothing else in supd waits for it, so its PID stays pinned.
A PID the children file left out (proc(5): the list is exact only while the
children are stopped) is found on the next pass: passes run on every SIGCHLD
and at least every ``interval`` seconds.

The reaper must run on the thread-group leader (anyio.run on the main thread);
``run`` raises RuntimeError otherwise.
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import os
import signal
import threading
from collections.abc import Callable, Collection

import anyio
import structlog

from supervisor._daemon import signal_inbox
from supervisor.signals import signal_name

__all__ = ["OrphanReaper", "ReaperStatistics", "asyncio_child_pids", "become_subreaper", "leader_children"]

log = structlog.get_logger("supd.reaper")

# <linux/prctl.h>
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
# <linux/wait.h>: wait only for children of the calling thread, not of its whole thread group (waitid(2)).
WNOTHREAD = 0x20000000
# Seconds between passes when no SIGCHLD arrives: the safety net for a missed signal or an unlisted PID.
SAFETY_NET_SECONDS = 1.0


def become_subreaper() -> bool:
    """Mark supd child subreaper (prctl(2) ``PR_SET_CHILD_SUBREAPER``); True when orphans will come to supd.

    True when the flag is set, or when supd is PID 1 of its namespace (orphans
    come to PID 1 anyway, whatever the flag). False when prctl failed, for
    example under a seccomp profile that forbids it; the errno is logged.
    Logs one event either way: ``supd.subreaper.set`` or ``supd.subreaper.unavailable``.
    """
    pid1 = os.getpid() == 1
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        (log.info if pid1 else log.warning)(
            "supd.subreaper.unavailable", pid1=pid1,
            error=f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(err)}",
            detail="PID 1 receives orphans anyway" if pid1 else "orphaned descendants go to PID 1, not to supd",
        )
        return pid1
    flag = ctypes.c_int(0)
    libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0)
    log.info("supd.subreaper.set", pid1=pid1, flag=flag.value)
    return True


def leader_children() -> list[int]:
    """The PIDs of the live and zombie children of supd's thread-group leader (proc(5) ``children``).

    Raises OSError when the file cannot be read (a kernel built without
    CONFIG_PROC_CHILDREN has no such file: FileNotFoundError).
    """
    fd = os.open(f"/proc/self/task/{os.getpid()}/children", os.O_RDONLY | os.O_CLOEXEC)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return [int(word) for word in b"".join(chunks).split()]


def asyncio_child_pids() -> frozenset[int]:
    """The PIDs the current asyncio child watcher waits for (children of ``anyio.open_process``).

    Python 3.11's watchers keep them in ``_threads`` (ThreadedChildWatcher, the
    default) or ``_callbacks`` (the others): there is no public accessor.
    Raises RuntimeError for a watcher that keeps them elsewhere, so the reaper
    never runs blind to them.
    """
    watcher = asyncio.get_child_watcher()
    waiting = getattr(watcher, "_threads", None)
    if waiting is None:
        waiting = getattr(watcher, "_callbacks", None)
    if not isinstance(waiting, dict):
        raise RuntimeError(f"cannot tell which children {type(watcher).__name__} waits for: orphans are not reaped")
    return frozenset(waiting)


@dataclasses.dataclass(frozen=True, slots=True)
class ReaperStatistics:
    """A snapshot: orphans reaped, passes made, SIGCHLD wakes seen, and children skipped as supd's own last pass."""

    reaped: int
    passes: int
    wakes: int
    owned_skipped: int


class OrphanReaper:
    """Reaps processes re-parented to supd that supd does not own, on SIGCHLD, never one supd watches itself."""

    def __init__(self, owned: Callable[[], Collection[int]], *, interval: float = SAFETY_NET_SECONDS) -> None:
        """``owned()`` returns the PIDs supd spawned and reaps itself; it is called on the event loop.

        ``interval`` is the longest time in seconds between two passes when no SIGCHLD arrives.
        """
        self.reaped = 0
        self.passes = 0
        self.wakes = 0
        self._owned = owned
        self._interval = interval
        self._owned_skipped = 0
        self._wake = anyio.Event()

    def __repr__(self) -> str:
        return f"<OrphanReaper reaped={self.reaped} passes={self.passes}>"

    def statistics(self) -> ReaperStatistics:
        return ReaperStatistics(self.reaped, self.passes, self.wakes, self._owned_skipped)

    def reap_now(self) -> int:
        """One pass: wait (without blocking) for every candidate orphan; how many were reaped.

        Must be called on the event loop of the leader thread, with no await
        between reading ``owned()`` and the waits (there is none inside).
        Raises OSError when the children file cannot be read.
        """
        self.passes += 1
        listed = leader_children()
        if not listed:
            return 0
        skip = set(self._owned()) | asyncio_child_pids()
        reaped = skipped = 0
        for pid in listed:
            if pid in skip:
                skipped += 1
                continue
            try:
                result = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | WNOTHREAD)
            except ChildProcessError:
                continue  # reaped between the read and now: only possible if a waiter we do not know of exists
            if result is None:
                continue  # still running
            reaped += 1
            if result.si_code == os.CLD_EXITED:
                log.debug("orphan.reaped", pid=pid, code=result.si_status)
            else:
                log.debug("orphan.reaped", pid=pid, signal=signal_name(result.si_status))
        self.reaped += reaped
        self._owned_skipped = skipped
        return reaped

    async def run(self) -> None:
        """Reap until cancelled: a pass at once, on every SIGCHLD (coalesced) and every ``interval`` seconds.

        Raises RuntimeError when not on the thread-group leader (the thread
        orphans are re-parented to). When the first pass shows that orphans
        cannot be told from supd's own children here (no ``children`` file:
        a kernel without CONFIG_PROC_CHILDREN; an asyncio child watcher of
        unknown shape), logs ``orphan.reaper.unavailable`` at error level and
        returns: zombies may then pile up, but no exit status is ever taken.
        Errors of later passes are raised.
        """
        if threading.get_native_id() != os.getpid():
            raise RuntimeError("the orphan reaper must run on the main thread: orphans are re-parented to it")
        with signal_inbox.receive(signal.SIGCHLD) as signals:  # before the first pass: no exit is missed
            try:
                self.reap_now()
            except (OSError, RuntimeError) as exc:
                log.error("orphan.reaper.unavailable", error=str(exc), detail="orphaned descendants are not reaped")
                return

            async def listen() -> None:
                async for _ in signals:
                    self.wakes += 1
                    self._wake.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(listen)
                log.info("orphan.reaper.started", interval=self._interval, reaped=self.reaped)
                while True:
                    with anyio.move_on_after(self._interval):
                        await self._wake.wait()
                    self._wake = anyio.Event()  # signals during the pass below wake the next one
                    self.reap_now()
