"""One child's driver: runs the lifecycle's actions and feeds it what happens.

The decisions live in lifecycle.step; this module does the I/O they ask for:
spawning with always-drained pipes, watching the exit through the pidfd,
terminating the process group with escalation, timing restarts, and writing
lifecycle events into the ring in order (an exit strictly after the last line
of its generation).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Sequence
from typing import Any

import structlog

from supervisor._daemon.api.convert import exit_to_proto
from supervisor._daemon.children import lifecycle as lc
from supervisor._daemon.children.process import ExitInfo, Process, SpawnError, describe_exit, signal_name
from supervisor._daemon.output.child_output import ChildOutput, GenerationOutput, Pipes
from supervisor._daemon.output.records import ChildEvent, EventKind, ExitRecord, Origin
from supervisor._daemon.output.sinks import LineSink
from supervisor.errors import FailedPrecondition, InvalidArgument
from supervisor.spec import ChildSpec, spec_to_proto
from supervisor.v1 import supervisor_pb2 as pb

__all__ = ["Child"]

log = structlog.get_logger("supd.child")
# After the leader is gone, how long its pipes may stay open (held by a
# process that left the group) before the exit event is published anyway.
PIPE_LINGER_SECONDS = 2.0
# How long SIGKILL may take to empty the group before we say so and move on.
KILL_WAIT_SECONDS = 5.0
STRAGGLER_POLL_SECONDS = 0.02

_STATE_TO_PB = {
    lc.State.STARTING: pb.CHILD_STATE_STARTING,
    lc.State.RUNNING: pb.CHILD_STATE_RUNNING,
    lc.State.BACKOFF: pb.CHILD_STATE_BACKOFF,
    lc.State.STOPPING: pb.CHILD_STATE_STOPPING,
    lc.State.STOPPED: pb.CHILD_STATE_STOPPED,
    lc.State.EXITED: pb.CHILD_STATE_EXITED,
    lc.State.FATAL: pb.CHILD_STATE_FATAL,
}
_ANNOUNCE_KIND = {"restarting": EventKind.RESTARTING, "fatal": EventKind.FATAL, "stopped": EventKind.STOPPED}


class Child:
    """A declared child: spec, lifecycle, current process and its ring."""

    def __init__(self, spec: ChildSpec, sinks: Sequence[LineSink] = ()) -> None:
        self.spec = spec
        self.output = ChildOutput(spec.name, spec.ring_bytes, spec.max_line_bytes, sinks)
        self.ring = self.output.ring
        self.lifecycle = lc.Lifecycle()
        self.generation = 0
        self.process: Process | None = None
        self.last_exit: ExitRecord | None = None
        self._op_lock = asyncio.Lock()
        self._restart_timer: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._terminator: asyncio.Task[bool] | None = None
        self._grace = spec.stop_grace_seconds
        self._requested = False
        self._log = log.bind(child=spec.name)

    def __repr__(self) -> str:
        pid = self.process.pid if self.process else 0
        return (
            f"<Child {self.spec.name} pid={pid} {self.lifecycle.state.name}"
            f" gen={self.generation} restarts={self.lifecycle.restart_count}>"
        )

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def state(self) -> lc.State:
        return self.lifecycle.state

    # Operations (serialised per child) --------------------------------------

    async def start(self) -> None:
        """Start afresh (Spawn, or Restart from a stopped/exited/fatal state)."""
        async with self._op_lock:
            self._feed(lc.StartRequested(time.monotonic()))

    async def stop(self, grace: float | None = None) -> ExitInfo | None:
        """Stop with escalation; the exit of the process stopped, None when none ran."""
        async with self._op_lock:
            return await self._stop(grace)

    async def restart(self) -> ExitInfo | None:
        """Stop if running, then start afresh with the restart history cleared."""
        async with self._op_lock:
            info = await self._stop(None)
            self._feed(lc.StartRequested(time.monotonic()))
            return info

    async def remove(self, grace: float | None = None) -> ExitInfo | None:
        """Stop, end every stream of this child with a REMOVED event, and close the ring."""
        async with self._op_lock:
            info = await self._stop(grace)
            self.output.close(self._event(EventKind.REMOVED, "child removed"))
            return info

    async def shutdown(self, grace: float) -> ExitInfo | None:
        """supd is exiting: stop within ``grace`` and end streams with SHUTDOWN."""
        async with self._op_lock:
            info = await self._stop(min(grace, self.spec.stop_grace_seconds))
            self.output.close(self._event(EventKind.SHUTDOWN, "supd is shutting down"))
            return info

    def send_signal(self, sig: int, group: bool) -> None:
        """Deliver one signal to the running process (through its pidfd) or its group."""
        if sig not in {int(s) for s in signal.valid_signals()} or sig <= 0:
            raise InvalidArgument(f"signal: must be a valid signal number, got {sig}")
        proc = self.process
        if proc is None or not proc.alive:
            raise FailedPrecondition(f"child {self.name!r} has no running process (state {self.state.value})")
        sent = proc.signal_group(sig) if group else proc.signal(sig)
        if not sent:
            raise FailedPrecondition(f"child {self.name!r} exited before {signal_name(sig)} could be sent")
        self._log.info("child.signal.sent", pid=proc.pid, signal=signal_name(sig), group=group)

    async def _stop(self, grace: float | None) -> ExitInfo | None:
        self._grace = grace if grace else self.spec.stop_grace_seconds
        watcher = self._watcher
        self._feed(lc.StopRequested(time.monotonic()))
        if watcher is None or self.state is not lc.State.STOPPING:
            return None
        await asyncio.shield(watcher)
        proc = self.process
        return proc.exit if proc else None

    # The state machine's actions ----------------------------------------------

    def _feed(self, event: lc.Event) -> None:
        self.lifecycle, actions = lc.step(self.lifecycle, self.spec, event)
        for action in actions:
            self._do(action)

    def _do(self, action: lc.Action) -> None:
        match action:
            case lc.Spawn():
                self._spawn()
            case lc.Terminate():
                assert self.process is not None
                self._requested = True
                self._terminator = asyncio.create_task(self._terminate(self.process, self.spec.stop_signal))
            case lc.ScheduleRestart(delay):
                self._restart_timer = asyncio.create_task(self._restart_after(delay))
            case lc.CancelRestart():
                if self._restart_timer is not None:
                    self._restart_timer.cancel()
                    self._restart_timer = None
            case lc.Announce(kind, message, delay):
                event = self._event(_ANNOUNCE_KIND[kind], message, restart_in_seconds=delay)
                self.output.append_event(event)
                level = "error" if kind == "fatal" else "info"
                getattr(self._log, level)(f"child.{kind}", message=message, generation=self.generation)

    def _spawn(self) -> None:
        self.generation += 1
        gen = self.generation
        try:
            pipes = Pipes()
        except OSError as exc:
            self._start_failed(gen, f"cannot create pipes: {exc.strerror or exc}")
            return
        try:
            proc = Process.spawn(self.spec, pipes.stdout_write, pipes.stderr_write)
        except (SpawnError, OSError) as exc:
            # Out of file descriptors or memory counts as a failed start: backoff, flap limit, FATAL.
            pipes.close_all()
            self._start_failed(gen, str(exc) if isinstance(exc, SpawnError) else f"cannot start: {exc}")
            return
        self.process = proc
        self._requested = False
        self._terminator = None
        origin = Origin(self.name, gen, proc.pid, os.path.basename(self.spec.argv[0]))
        drains = self.output.start(pipes, origin)
        self._log.info("child.spawned", pid=proc.pid, generation=gen, argv=list(self.spec.argv))
        self.output.append_event(self._event(EventKind.STARTED, f"started pid {proc.pid}", pid=proc.pid))
        self._feed(lc.Started(time.monotonic()))
        self._watcher = asyncio.create_task(self._watch(proc, drains))

    async def _restart_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._restart_timer = None
        self._feed(lc.BackoffElapsed(time.monotonic()))

    async def _terminate(self, proc: Process, sig: int) -> bool:
        """Stop signal to the group, wait up to the grace, SIGKILL what is left; True if killed."""
        grace = self._grace
        deadline = time.monotonic() + grace
        proc.signal_group(sig)
        self._log.info("child.stop.signalled", pid=proc.pid, signal=signal_name(sig), grace=grace)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait_exit_ready(), grace)
        # No event tells that a process group emptied: poll /proc under the deadline.
        while proc.exit_ready and proc.stragglers() and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(STRAGGLER_POLL_SECONDS)
        if proc.exit_ready and not proc.stragglers():
            return False
        proc.signal_group(signal.SIGKILL)
        self._log.warning("child.stop.killed_after_grace", pid=proc.pid, grace=grace)
        kill_deadline = time.monotonic() + KILL_WAIT_SECONDS
        try:
            await asyncio.wait_for(proc.wait_exit_ready(), KILL_WAIT_SECONDS)
        except TimeoutError:
            self._log.error("child.stop.kill_ignored", pid=proc.pid, waited=KILL_WAIT_SECONDS)
        while proc.stragglers() and time.monotonic() < kill_deadline:  # noqa: ASYNC110
            await asyncio.sleep(STRAGGLER_POLL_SECONDS)
        return True

    async def _watch(self, proc: Process, drains: GenerationOutput) -> None:
        """Wait for the exit, clear the group, let the pipes run dry, reap, report."""
        await proc.wait_exit_ready()
        if self._terminator is None and proc.stragglers():
            # The leader left processes behind in its group: stop them as a Stop would.
            self._log.warning("child.exit.stragglers", pid=proc.pid, stragglers=proc.stragglers())
            self._terminator = asyncio.create_task(self._terminate(proc, self.spec.stop_signal))
        killed = await self._terminator if self._terminator is not None else False
        late = await drains.wait_eof(PIPE_LINGER_SECONDS)
        if late:
            self._log.warning("child.exit.pipe_held_open", pid=proc.pid, pipes=late)
        info = proc.reap()
        status = self._exit_status(info, killed)
        self.last_exit = status
        self.output.append_event(self._event(EventKind.EXITED, status.description, pid=proc.pid, exit=status))
        self._log.info(
            "child.exited", pid=proc.pid, generation=status.generation, description=status.description,
            requested=status.requested,
        )
        self._feed(lc.Exited(time.monotonic(), info.failed))

    def _start_failed(self, gen: int, reason: str) -> None:
        self._log.error("child.spawn.failed", generation=gen, error=reason)
        self.output.append_event(self._event(EventKind.START_FAILED, reason))
        self._feed(lc.StartFailed(time.monotonic(), reason))

    def _exit_status(self, info: ExitInfo, killed: bool) -> ExitRecord:
        return ExitRecord(
            pid=info.pid,
            exited=info.exited,
            code=info.code,
            signal=info.signal,
            core_dumped=info.core_dumped,
            time_ns=info.time_ns,
            generation=self.generation,
            killed_after_grace=killed,
            requested=self._requested,
            description=describe_exit(info, killed_after_grace=self._grace if killed else None),
        )

    def _event(self, kind: EventKind, message: str, **fields: Any) -> ChildEvent:
        return ChildEvent(kind=kind, time_ns=time.time_ns(), generation=self.generation, message=message, **fields)

    # Snapshots ----------------------------------------------------------------

    def info(self) -> pb.ChildInfo:
        """A snapshot for List and Health."""
        now = time.monotonic()
        cur = self.lifecycle
        proc = self.process
        out = self.output.statistics()
        running = proc is not None and proc.alive and cur.state in (lc.State.RUNNING, lc.State.STOPPING)
        msg = pb.ChildInfo(
            spec=spec_to_proto(self.spec),
            state=_STATE_TO_PB[cur.state],
            pid=proc.pid if running and proc else 0,
            generation=self.generation,
            restart_count=cur.restart_count,
            uptime_seconds=now - proc.started_at if running and proc else 0.0,
            next_start_in_seconds=max(0.0, cur.next_start_at - now) if cur.next_start_at else 0.0,
            fatal_reason=cur.fatal_reason if cur.state is lc.State.FATAL else "",
            next_seq=out.next_seq,
            oldest_seq=out.oldest_seq,
            ring_bytes_used=out.ring_bytes_used,
            stdout_lines=out.stdout_lines,
            stderr_lines=out.stderr_lines,
            bytes_drained=out.bytes_drained,
            ring_evicted_records=out.ring_evicted_records,
        )
        if self.last_exit is not None:
            msg.last_exit.CopyFrom(exit_to_proto(self.last_exit))
        return msg
