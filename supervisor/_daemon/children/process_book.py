"""The processes supd started, remembered in the store, and what becomes of a crashed supd's children.

Every child process gets ``SUPD_INSTANCE`` (the store's id, the same across
restarts of supd) and ``SUPD_CHILD`` (its name) in its environment, and its
pid and kernel start time are recorded in the store when it starts and
forgotten when it is reaped. A supd killed with SIGKILL leaves its children
running, without a drain (their pipes are broken: a write to them fails with
EPIPE or kills them with SIGPIPE, and nothing they print reaches anyone).

At boot, before any child starts, ``stop_previous`` finds them: the recorded
processes still alive with the same start time (so a reused pid never
matches), and any process of supd's user carrying this store's
``SUPD_INSTANCE`` (a descendant that inherited it, or a child whose record was
not yet written when supd died). Each is stopped with the usual escalation,
with every process of its session: SIGTERM, the grace, SIGKILL. Then the
declared children start once. Nothing is stopped by name.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time

import anyio
import structlog

from supervisor._daemon.children.sessions import (
    Member,
    cmdline_of,
    marked_child,
    read_stat,
    scan_sessions,
    signal_member,
)
from supervisor._daemon.state.store import AsyncStateStore, ProcessRecord

__all__ = ["CHILD_ENV", "INSTANCE_ENV", "Previous", "ProcessBook", "find_marked"]

log = structlog.get_logger("supd.processes")
INSTANCE_ENV = "SUPD_INSTANCE"
CHILD_ENV = "SUPD_CHILD"
# How often the stop of a previous supd's children looks whether they are gone.
_POLL_SECONDS = 0.02


@dataclasses.dataclass(frozen=True)
class Previous:
    """A process a previous supd of this store started (or one of its descendants)."""

    member: Member
    child: str
    cmdline: str
    why: str  # "recorded" or "marked"


def find_marked(instance: str) -> list[tuple[Member, str]]:
    """Live processes of supd's user whose environment carries ``SUPD_INSTANCE=instance``, with their SUPD_CHILD.

    Blocking (reads /proc): run in a worker thread.
    """
    own, uid = os.getpid(), os.getuid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in (own, 1):
            continue
        pid = int(entry)
        child = marked_child(pid, uid, instance)
        member = read_stat(pid) if child else None
        if member is not None and not member.zombie:
            found.append((member, child))
    return found


class ProcessBook:
    """Records the processes supd starts; stops a previous supd's at boot."""

    def __init__(self, store: AsyncStateStore, instance: str) -> None:
        self._store = store
        self.instance = instance
        self._ticks: dict[int, int] = {}  # pid -> start ticks of the processes recorded and not yet ended

    def identity(self, child: str) -> dict[str, str]:
        """The environment entries that mark a process of ``child`` as this supd's."""
        return {INSTANCE_ENV: self.instance, CHILD_ENV: child}

    async def started(self, child: str, generation: int, pid: int) -> int:
        """Record a process that just started; its start time in clock ticks (0 when it is already gone)."""
        member = read_stat(pid)
        if member is None:
            return 0
        self._ticks[pid] = member.start_ticks
        record = ProcessRecord(pid, member.start_ticks, child, generation, time.time_ns())
        await self._store.record_process(record)
        return member.start_ticks

    async def ended(self, pid: int) -> None:
        """Forget a process that was reaped (nothing to do when it was never recorded)."""
        ticks = self._ticks.pop(pid, None)
        if ticks is not None:
            await self._store.forget_processes([(pid, ticks)])

    async def find_previous(self) -> list[Previous]:
        """The processes of a previous supd of this store that still run (recorded, or marked in their env)."""
        records = await self._store.processes()

        def look() -> list[Previous]:
            found: dict[int, Previous] = {}
            for r in records:
                now = read_stat(r.pid)
                if now is not None and now.start_ticks == r.start_ticks and not now.zombie:
                    found[r.pid] = Previous(now, r.child, cmdline_of(r.pid), "recorded")
            for member, child in find_marked(self.instance):
                found.setdefault(member.pid, Previous(member, child, cmdline_of(member.pid), "marked"))
            return list(found.values())

        return await anyio.to_thread.run_sync(look)

    async def stop_previous(self, grace: float) -> list[Previous]:
        """Stop every process of a previous supd (SIGTERM to its session, ``grace`` s, SIGKILL); those found.

        Forgets every record afterwards: what was recorded is gone now.
        """
        previous = await self.find_previous()
        if previous:
            await self._stop(previous, grace)
        stale = [(r.pid, r.start_ticks) for r in await self._store.processes()]
        if stale:
            await self._store.forget_processes(stale)
        return previous

    async def _stop(self, previous: list[Previous], grace: float) -> None:
        sids = frozenset(p.member.sid for p in previous)
        members = {p.member.pid: p.member for p in previous}
        for session in (await anyio.to_thread.run_sync(scan_sessions, sids)).values():
            for m in session:
                members.setdefault(m.pid, m)
        log.warning(
            "supd.previous_children.found",
            processes=[{"pid": p.member.pid, "child": p.child, "cmdline": p.cmdline, "why": p.why} for p in previous],
            detail="children of a supd that ended without stopping them: stopping them before starting anything",
        )
        for m in members.values():
            signal_member(m, signal.SIGTERM)
        deadline = time.monotonic() + grace
        alive = list(members.values())
        while alive and time.monotonic() < deadline:
            await anyio.sleep(_POLL_SECONDS)
            alive = [m for m in alive if _same(m)]
        killed = [m.pid for m in alive if signal_member(m, signal.SIGKILL)]
        with anyio.move_on_after(5):
            while any(_same(m) for m in alive):  # noqa: ASYNC110 - /proc offers no event to wait on
                await anyio.sleep(_POLL_SECONDS)
        log.warning(
            "supd.previous_children.stopped", processes=len(members), killed_after_grace=killed, grace=grace
        )


def _same(member: Member) -> bool:
    """``member`` still runs (same pid and start time, not a zombie)."""
    now = read_stat(member.pid)
    return now is not None and now.start_ticks == member.start_ticks and not now.zombie
