"""One generation of a child: a spawned process and the watchers that live exactly as long as it.

``Generation.run`` owns a task group with the exit watcher and, once a stop
begins, the terminator; it ends with the process and reports its exit once,
whatever failed inside it (a failure is logged with its traceback, the process
is SIGKILLed, and the exit is still reported: never left to asyncio).

Terminating signals the child's whole session (every group in it), waits up to
the grace for the session to empty, then SIGKILLs what is left, counting first
who needed it. A process that left the session with ``setsid`` is covered
through the marks it inherited (sessions.py), when supd runs with a store, and
through the process's cgroup where supd has one (cgroups.py): its members are
signalled with the rest, and ``cgroup.kill`` ends them at the grace's end.
"""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Awaitable, Callable

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from supervisor._daemon.children.cgroups import Cgroup
from supervisor._daemon.children.exits import unknown_exit
from supervisor._daemon.children.process import Process
from supervisor._daemon.children.sessions import Member, SessionScanner, cmdline_of, read_stat, signal_member
from supervisor._daemon.output.child_output import GenerationOutput
from supervisor._daemon.output.records import ExitRecord
from supervisor.signals import signal_name

__all__ = ["KILL_WAIT_SECONDS", "PIPE_LINGER_SECONDS", "Generation"]

# After the leader is gone, how long its pipes may stay open (held by a
# process that left the session) before the exit is reported anyway.
PIPE_LINGER_SECONDS = 2.0
# How long SIGKILL may take to empty the session before we say so and move on.
KILL_WAIT_SECONDS = 5.0
# Session polls after an exit or a stop signal: start fast, back off, cap.
POLL_FIRST_SECONDS = 0.01
POLL_MAX_SECONDS = 0.25


class Generation:
    """One spawned process: its number, its output, and how its stop went."""

    def __init__(
        self,
        number: int,
        process: Process,
        output: GenerationOutput,
        *,
        stop_signal: int,
        leftover_grace: float,
        scanner: SessionScanner,
        log: structlog.typing.FilteringBoundLogger,
        child: str = "",
        cgroup: Cgroup | None = None,
    ) -> None:
        """``child``: the child's name, whose marked escapees a stop reaches too; ``cgroup``: the process's own."""
        self.number = number
        self.process = process
        self.output = output
        self.grace = 0.0  # seconds from the stop signal to SIGKILL: asked for, then as given
        self.leader_killed = False
        self.leftovers_killed = 0
        self.watch_done = False  # the watchers are finished: nothing more to terminate
        self._stop_signal = stop_signal
        self._leftover_grace = leftover_grace  # the child's stop grace, for processes left behind by an exit
        self._scanner = scanner
        self._child = child
        self.cgroup = cgroup
        self._log = log
        self._task_group: TaskGroup | None = None
        self._terminating = False
        self._terminated = anyio.Event()
        self._deadline = math.inf  # monotonic time of the SIGKILL, once terminating
        self._wait_scope: anyio.CancelScope | None = None

    def __repr__(self) -> str:
        return f"<Generation {self.number} pid={self.process.pid}{' terminating' if self._terminating else ''}>"

    def terminate(self, grace: float, reason: str) -> None:
        """Begin the stop (signal now, SIGKILL after ``grace`` s), or bring a running one's SIGKILL forward."""
        if self.watch_done:
            return  # the exit is already on its way to the driver
        deadline = time.monotonic() + grace
        if self._terminating:
            if deadline < self._deadline:
                self._deadline = deadline
                if self._wait_scope is not None:
                    self._wait_scope.deadline = deadline
            return
        self._terminating = True
        self.grace = grace
        self._deadline = deadline
        assert self._task_group is not None
        self._task_group.start_soon(self._terminate, reason)

    def kill_now(self) -> bool:
        """SIGKILL the leader and its group at once; False when nothing was alive to kill."""
        if not self.process.alive:
            return False
        self.process.signal(signal.SIGKILL)
        self.process.signal_group(signal.SIGKILL)
        return True

    async def run(
        self, report: Callable[[Generation, ExitRecord], Awaitable[None]], *, task_status: TaskStatus[None]
    ) -> None:
        """Own the watchers until the process is gone; then ``report`` its exit, exactly once."""
        reaped: ExitRecord | None = None
        try:
            async with anyio.create_task_group() as tg:
                self._task_group = tg
                tg.start_soon(self.process.watch)
                task_status.started()
                reaped = await self._watch()
                self.watch_done = True
                tg.cancel_scope.cancel()
        except Exception:  # noqa: BLE001 - reported as this generation's end below, never to asyncio
            self._log.exception("child.watcher.failed", pid=self.process.pid, generation=self.number)
            self._kill_after_failure()
        self.watch_done = True
        if reaped is None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(KILL_WAIT_SECONDS):
                delay = POLL_FIRST_SECONDS
                while not self.process.exit_ready():
                    await anyio.sleep(delay)
                    delay = min(delay * 2, POLL_MAX_SECONDS)
            reaped = self.process.reap() if self.process.exit_ready() else unknown_exit(self.process.pid)
        if self.cgroup is not None:
            self.cgroup.remove()
        with anyio.CancelScope(shield=True):
            await report(self, reaped)

    def _kill_after_failure(self) -> None:
        """The watchers failed: the process must not run on unwatched. Errors here are logged, not raised."""
        try:
            self.kill_now()
        except (OSError, ValueError):
            self._log.exception("child.watcher.kill_failed", pid=self.process.pid, generation=self.number)

    async def _watch(self) -> ExitRecord:
        """Wait for the exit, clear the session, let the pipes run dry, reap."""
        proc = self.process
        await proc.wait_exit_ready()
        if not self._terminating:
            leftovers = await self._members()
            if leftovers:
                # The leader left processes behind in its session: stop them as a Stop would.
                self._log.warning("child.exit.stragglers", pid=proc.pid, stragglers=[m.pid for m in leftovers])
                self.terminate(self._leftover_grace, "leftovers")
        if self._terminating:
            await self._terminated.wait()
        late = await self.output.wait_eof(PIPE_LINGER_SECONDS)
        if late:
            self._log.warning("child.exit.pipe_held_open", pid=proc.pid, pipes=late)
        return proc.reap()

    async def _terminate(self, reason: str) -> None:
        """Stop signal to the session, wait until it is empty or the deadline, then SIGKILL what is left."""
        proc, sig = self.process, self._stop_signal
        signalled_at = time.monotonic()
        try:
            for each in _with_continue(sig):
                proc.signal(each)
                proc.signal_group(each)
            self._log.info(
                "child.stop.signalled", pid=proc.pid, signal=signal_name(sig), grace=self.grace, reason=reason
            )
            with anyio.CancelScope(deadline=self._deadline) as scope:
                self._wait_scope = scope
                await self._signal_session(*_with_continue(sig))
                await self._wait_session_empty()
            self._wait_scope = None
            if not scope.cancelled_caught:
                return
            # The grace actually given: a shutdown may have cut a longer one short.
            self.grace = round(time.monotonic() - signalled_at, 1)
            # Who is left is counted before SIGKILL, so the exit can say what needed it.
            left = await self._members()
            self.leader_killed = proc.alive and not proc.exit_ready()
            self.leftovers_killed = sum(1 for m in left if m.pid != proc.pid)
            self.kill_now()
            if self.cgroup is not None:
                self.cgroup.kill()
            await self._signal_session(signal.SIGKILL)
            self._log.warning(
                "child.stop.killed_after_grace", pid=proc.pid, grace=self.grace,
                leader=self.leader_killed, leftovers=self.leftovers_killed,
                killed=[{"pid": m.pid, "cmdline": cmdline_of(m.pid)} for m in left],
            )
            with anyio.move_on_after(KILL_WAIT_SECONDS) as kill_scope:
                await self._wait_session_empty()
            if kill_scope.cancelled_caught:
                self._log.error("child.stop.kill_ignored", pid=proc.pid, waited=KILL_WAIT_SECONDS)
        finally:
            self._terminated.set()

    async def _signal_session(self, *sigs: int) -> int:
        """Send ``sigs``, in order, to every live process of the session (other groups included), found in one
        scan; how many were signalled."""
        members = await self._members()
        return sum(signal_member(m, *sigs) for m in members)

    async def _members(self) -> list[Member]:
        """Every live process of this generation: its session, the processes marked as its child's, its cgroup."""
        members = await self._scanner.members(self.process.pid, self._child)
        if self.cgroup is not None:
            known = {m.pid for m in members}
            extra = [
                m for pid in self.cgroup.pids() if pid not in known and pid != self.process.pid
                if (m := read_stat(pid)) is not None and not m.zombie
            ]
            members = [*members, *extra]  # a new list: the scan's own may be shared with other callers
        return members

    async def _wait_session_empty(self) -> None:
        await self.process.wait_exit_ready()
        delay = POLL_FIRST_SECONDS
        while await self._members():
            await anyio.sleep(delay)
            delay = min(delay * 2, POLL_MAX_SECONDS)


def _with_continue(sig: int) -> tuple[int, ...]:
    """The stop signal, then SIGCONT: a stopped (SIGSTOP, SIGTSTP) process cannot act on the stop signal until it
    runs again, and would otherwise always wait out the grace. systemd does the same (systemd.kill(5), KillMode)."""
    return (sig,) if sig in (signal.SIGCONT, signal.SIGKILL) else (sig, signal.SIGCONT)
