"""One child's driver: one task that feeds the lifecycle and carries out its actions, one at a time.

Everything that happens to a child arrives in its inbox (an anyio memory
stream): requests from the registry (start, stop, restart, remove, shutdown,
signal), the end of a generation, a backoff timer. The driver runs
``lifecycle.step`` and awaits each action in turn, so no two changes to a
child ever interleave. Starting is ``Prepare`` (awaited under a deadline; port
reaping and stored state plug in there), then spawn, then Started or
StartFailed.

Each generation (one spawned process, generation.py) owns its watchers in a
task group of its own and reports its end to the driver exactly once.

Requests are answered when their outcome is known: a start once the new
process started or failed to, a stop once the process it ended is gone, a
removal once the child is REMOVED. A request the lifecycle cannot honour is
refused with the lifecycle's reason.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import anyio
import structlog
from anyio.abc import TaskGroup, TaskStatus

from supervisor._daemon.children import lifecycle as lc
from supervisor._daemon.children.cgroups import Cgroup, CgroupRoot
from supervisor._daemon.children.exits import finish_exit
from supervisor._daemon.children.generation import Generation
from supervisor._daemon.children.process import Process, SpawnError
from supervisor._daemon.children.reply import Reply
from supervisor._daemon.children.sessions import SessionScanner
from supervisor._daemon.health.prober import Prober, ProbeState, Verdict
from supervisor._daemon.output.child_output import ChildOutput, OutputStatistics, Pipes
from supervisor._daemon.output.records import ChildEvent, EventKind, ExitRecord, Origin
from supervisor._daemon.output.ring import Ring
from supervisor._daemon.output.sinks import LineSink
from supervisor._daemon.telemetry import recorder
from supervisor.errors import FailedPrecondition, InvalidArgument, NotFound, SupervisorError, Unavailable
from supervisor.signals import parse_signal, signal_name
from supervisor.spec import ChildSpec

__all__ = ["ChangeHook", "ChildDriver", "ChildStatistics", "ExitHook", "PrepareHook", "StartHook"]

log = structlog.get_logger("supd.child")
# How long one Prepare step (port reaping, stored state) may take.
PREPARE_TIMEOUT_SECONDS = 30.0

PrepareHook = Callable[["ChildDriver"], Awaitable[None]]
"""Awaited before every spawn; raising SupervisorError makes it a failed start with that message."""
StartHook = Callable[["ChildDriver", int], None]
"""Called with the driver and the generation number once a process started (stored state replays from here)."""
ExitHook = Callable[["ChildDriver", int], None]
"""Called with the driver and the pid of a process of it that was reaped."""
ChangeHook = Callable[["ChildDriver"], None]
"""Called after every message the driver handled (its state or readiness may have changed)."""

_ANNOUNCE_KIND = {
    "restarting": EventKind.RESTARTING,
    "fatal": EventKind.FATAL,
    "stopped": EventKind.STOPPED,
}
_CLOSE_KIND = {"remove": EventKind.REMOVED, "shutdown": EventKind.SHUTDOWN}


@dataclasses.dataclass(frozen=True)
class ChildStatistics:
    """A snapshot of one child for List and Health; times in seconds."""

    spec: ChildSpec
    state: lc.State
    pid: int
    generation: int
    restart_count: int
    uptime_seconds: float
    next_start_in_seconds: float
    fatal_reason: str
    ready: bool  # the probes' verdict (True without probes once running); stored state is the keeper's
    not_ready_reason: str
    unhealthy_reason: str  # a liveness or startup probe failing, or the restart it caused
    probes: tuple[ProbeState, ...]
    last_start_error: str  # why the last start failed; "" once one succeeded
    last_exit: ExitRecord | None
    output: OutputStatistics


# Messages in the inbox ---------------------------------------------------------


@dataclasses.dataclass
class _Request:
    """A request from the registry: the lifecycle event to feed and what the reply waits for."""

    make: Callable[[float], lc.Request]
    until: str  # "start", "exit" or "removed"
    reply: Reply[ExitRecord | None]


@dataclasses.dataclass
class _Signal:
    sig: int
    group: bool
    reply: Reply[ExitRecord | None]


@dataclasses.dataclass
class _TimerFired:
    timer: int


@dataclasses.dataclass
class _GenerationEnded:
    generation: Generation
    info: ExitRecord


@dataclasses.dataclass
class _ProbeVerdict:
    verdict: Verdict


@dataclasses.dataclass
class _NewSpec:
    """Take this spec for the next processes (sent only while no process runs: see ``ChildDriver.respec``)."""

    spec: ChildSpec
    reply: Reply[ExitRecord | None]


_Message = _Request | _Signal | _TimerFired | _GenerationEnded | _ProbeVerdict | _NewSpec


@dataclasses.dataclass
class _Waiter:
    until: str
    reply: Reply[ExitRecord | None]
    exit_before: ExitRecord | None
    generation: int
    attempts: int  # start attempts made before the request


class ChildDriver:
    """A declared child: its spec, lifecycle, current process and output, changed only by its own task."""

    def __init__(
        self,
        spec: ChildSpec,
        sinks: Sequence[LineSink] = (),
        *,
        scanner: SessionScanner | None = None,
        prepare: Sequence[PrepareHook] = (),
        on_start: Sequence[StartHook] = (),
        on_change: Sequence[ChangeHook] = (),
        on_exit: Sequence[ExitHook] = (),
        identity: Mapping[str, str] | None = None,
        cgroups: CgroupRoot | None = None,
    ) -> None:
        """``identity``: environment entries every process of this child gets (supd's marks).

        ``cgroups``: where each process of this child gets a cgroup of its own (None: no cgroups here).
        """
        self.spec = spec
        self.output = ChildOutput(spec.name, spec.ring_bytes, spec.max_line_bytes, sinks)
        self.lifecycle = lc.Lifecycle()
        self.generation = 0
        self.last_exit: ExitRecord | None = None
        self._scanner = scanner or SessionScanner()
        self._prepare = tuple(prepare)
        self._on_start = tuple(on_start)
        self._on_change = tuple(on_change)
        self._on_exit = tuple(on_exit)
        self._identity = dict(identity or {})
        self._cgroups = cgroups
        self._prober: Prober | None = None
        self._prober_scope: anyio.CancelScope | None = None
        self._gen: Generation | None = None
        self._send, self._inbox = anyio.create_memory_object_stream[_Message](math.inf)
        self._waiters: list[_Waiter] = []
        self._start_attempts = 0
        self.last_start_error = ""
        self._closed_by = ""  # "remove" or "shutdown" once the child is gone
        self._timer = 0  # the id of the one restart timer that may fire
        self._timer_scope: anyio.CancelScope | None = None
        self._task_group: TaskGroup | None = None
        self._log = log.bind(child=spec.name)

    def __repr__(self) -> str:
        pid = self._gen.process.pid if self._gen else 0
        return (
            f"<ChildDriver {self.spec.name} pid={pid} {self.lifecycle.state.name}"
            f" gen={self.generation} restarts={self.lifecycle.restart_count}>"
        )

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def state(self) -> lc.State:
        return self.lifecycle.state

    @property
    def ring(self) -> Ring:
        return self.output.ring

    # The task ----------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Drive the child until it is removed (or supd shuts down). Start with ``TaskGroup.start``."""
        try:
            async with anyio.create_task_group() as tg:
                self._task_group = tg
                task_status.started()
                async with self._inbox:
                    async for message in self._inbox:
                        await self._handle(message)
                        if self.lifecycle.state is lc.State.REMOVED:
                            break
                    self._send.close()
                    self._refuse_queued()
                tg.cancel_scope.cancel()
        finally:
            self._send.close()
            for waiter in self._waiters:
                waiter.reply.fail(self._not_found())
            self._waiters.clear()

    def _refuse_queued(self) -> None:
        """Answer what was sent before the inbox closed: the child is gone."""
        while True:
            try:
                message = self._inbox.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream):
                return
            if isinstance(message, _Request | _Signal):
                message.reply.fail(self._not_found())

    def _not_found(self) -> NotFound:
        """What a request sent to a driver that has ended gets."""
        return NotFound(f"child {self.name!r} was removed")

    async def _handle(self, message: _Message) -> None:
        try:
            match message:
                case _Request():
                    await self._on_request(message)
                case _Signal(sig, group, reply):
                    self._signal(sig, group)
                    reply.set(None)
                case _TimerFired(timer) if timer == self._timer:
                    self._timer_scope = None
                    await self._feed(lc.BackoffElapsed(time.monotonic()))
                case _GenerationEnded(gen, info):
                    await self._on_generation_ended(gen, info)
                case _ProbeVerdict(verdict):
                    await self._on_verdict(verdict)
                case _NewSpec(spec, reply):
                    self._take_spec(spec)
                    reply.set(None)
        except SupervisorError as exc:
            if isinstance(message, _Request | _Signal | _NewSpec):
                message.reply.fail(exc)
            else:
                self._log.error("child.driver.refused", error=exc.message)
        except Exception as exc:  # noqa: BLE001 - one message's failure must not end the child's driver
            self._log.exception("child.driver.failed", message=type(message).__name__)
            if isinstance(message, _Request | _Signal):
                message.reply.fail(exc)
        self._settle()

    # Requests (called by the registry) --------------------------------------------------

    async def request(self, make: Callable[[float], lc.Request], until: str) -> ExitRecord | None:
        """Feed a request event and wait for its outcome: the exit of the process it ended, if any."""
        reply: Reply[ExitRecord | None] = Reply()
        await self._put(_Request(make, until, reply))
        return await reply.wait()

    async def start(self) -> None:
        await self.request(lc.StartRequested, "start")

    async def stop(self, grace: float | None = None) -> ExitRecord | None:
        g = grace or self.spec.stop_grace_seconds
        return await self.request(lambda now: lc.StopRequested(now, g), "exit")

    async def restart(self, grace: float | None = None) -> ExitRecord | None:
        g = grace or self.spec.stop_grace_seconds
        ended = await self.request(lambda now: lc.RestartRequested(now, g), "start")
        recorder.active.child_restarted(self.name, "request")
        return ended

    async def remove(self, grace: float | None = None) -> ExitRecord | None:
        g = grace or self.spec.stop_grace_seconds
        return await self.request(lambda now: lc.RemoveRequested(now, g), "removed")

    async def shutdown(self, grace: float) -> ExitRecord | None:
        """supd is exiting: stop within ``grace`` s (shortening a stop under way) and end the streams."""
        g = max(0.0, min(grace, self.spec.stop_grace_seconds))
        return await self.request(lambda now: lc.ShutdownRequested(now, g), "removed")

    def keeps_output_with(self, spec: ChildSpec) -> bool:
        """Whether ``spec`` can replace this child's spec in place: same name and the same ring and line sizes."""
        return (spec.name, spec.ring_bytes, spec.max_line_bytes) == (
            self.spec.name, self.spec.ring_bytes, self.spec.max_line_bytes
        )

    async def respec(self, spec: ChildSpec, announce: str = "") -> ExitRecord | None:
        """Stop what runs (the current spec's grace), take ``spec``, start again: a changed child that keeps its
        ring, its sequence numbers, its followers and its generation count (the next process is the next
        generation). ``announce`` is an event put in the stream between the last process and the next.

        Only for a spec that ``keeps_output_with`` this one (else remove and declare it again). Returns the exit
        of the process the stop ended, if any. Raises NotFound once the child is removed.
        """
        ended = await self.stop()
        reply: Reply[ExitRecord | None] = Reply()
        await self._put(_NewSpec(spec, reply))
        await reply.wait()
        if announce:
            self.note_applied(announce)
        await self.start()
        return ended

    def note_applied(self, message: str) -> None:
        """An APPLIED event in this child's stream (an Apply added or changed it), of its current generation."""
        self.output.append_event(ChildEvent(EventKind.APPLIED, time.time_ns(), self.generation, message))

    def _take_spec(self, spec: ChildSpec) -> None:
        if not self.keeps_output_with(spec):
            raise InvalidArgument(f"child {self.name!r}: a spec with other ring sizes needs the child declared again")
        if self._gen is not None and self._gen.process.alive:
            raise FailedPrecondition(f"child {self.name!r} runs again: its spec was not changed")
        self.spec = spec
        self._log.info("child.spec.changed", argv=list(spec.argv))

    async def send_signal(self, sig: int, group: bool) -> None:
        """Deliver one signal to the running process (through its pidfd) or its whole session."""
        try:
            parse_signal(sig)
        except ValueError:
            raise InvalidArgument(f"signal: must be a valid signal number, got {sig}") from None
        reply: Reply[ExitRecord | None] = Reply()
        await self._put(_Signal(sig, group, reply))
        await reply.wait()

    async def _put(self, message: _Message) -> None:
        try:
            await self._send.send(message)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise self._not_found() from None

    def kill_now(self) -> list[int]:
        """SIGKILL the leader and its group at once (supd must exit now); the session id to sweep, if any."""
        gen = self._gen
        return [gen.process.pid] if gen is not None and gen.kill_now() else []

    # Feeding the lifecycle --------------------------------------------------------------

    async def _on_request(self, request: _Request) -> None:
        waiter = _Waiter(request.until, request.reply, self.last_exit, self.generation, self._start_attempts)
        self._waiters.append(waiter)
        await self._feed(request.make(time.monotonic()), waiter)

    async def _feed(self, event: lc.Event, waiter: _Waiter | None = None) -> None:
        self.lifecycle, actions = lc.step(self.lifecycle, self.spec, event)
        for action in actions:
            await self._do(action, waiter)

    async def _do(self, action: lc.Action, waiter: _Waiter | None) -> None:
        match action:
            case lc.Prepare():
                self._start_attempts += 1
                await self._do_prepare()
            case lc.Spawn():
                await self._do_spawn()
            case lc.Terminate(grace, reason):
                if self._gen is not None:
                    self._gen.terminate(grace, reason)
            case lc.ScheduleRestart(delay):
                self._timer += 1
                assert self._task_group is not None
                self._task_group.start_soon(self._restart_timer, self._timer, delay)
            case lc.CancelRestart():
                self._timer += 1
                if self._timer_scope is not None:
                    self._timer_scope.cancel()
                    self._timer_scope = None
            case lc.Announce(kind, message, delay):
                if kind == "restarting":
                    recorder.active.child_restarted(self.name, "policy")
                self.output.append_event(self._event(_ANNOUNCE_KIND[kind], message, restart_in_seconds=delay))
                level = "error" if kind == "fatal" else "info"
                getattr(self._log, level)(f"child.{kind}", message=message, generation=self.generation)
            case lc.CloseOutput(kind, message):
                self._closed_by = kind
                self.output.close(self._event(_CLOSE_KIND[kind], message))
                self._log.info("child.removed" if kind == "remove" else "child.shutdown", generation=self.generation)
            case lc.Refuse(message, unavailable):
                error: SupervisorError = Unavailable(message) if unavailable else FailedPrecondition(message)
                if waiter is not None:
                    waiter.reply.fail(error)
                    self._waiters.remove(waiter)

    async def _do_prepare(self) -> None:
        try:
            with anyio.fail_after(PREPARE_TIMEOUT_SECONDS):
                for hook in self._prepare:
                    await hook(self)
        except TimeoutError:
            await self._start_failed(f"preparing the start took longer than {PREPARE_TIMEOUT_SECONDS:g}s")
            return
        except SupervisorError as exc:
            await self._start_failed(exc.message)
            return
        await self._feed(lc.Prepared(time.monotonic()))

    async def _do_spawn(self) -> None:
        self.generation += 1
        number = self.generation
        try:
            pipes = Pipes()
        except OSError as exc:
            await self._start_failed(f"cannot create pipes: {exc.strerror or exc}")
            return
        try:
            # In a worker thread: fork/exec waits until the child has exec'd, milliseconds on a loaded host.
            proc, cgroup = await anyio.to_thread.run_sync(self._spawn_blocking, pipes, number)
        except SpawnError as exc:
            pipes.close_all()
            await self._start_failed(str(exc))
            return
        origin = Origin(self.name, number, proc.pid, os.path.basename(self.spec.argv[0]))
        gen = self._gen = Generation(
            number, proc, self.output.start(pipes, origin),
            stop_signal=self.spec.stop_signal, leftover_grace=self.spec.stop_grace_seconds,
            scanner=self._scanner, log=self._log, child=self.name if self._identity else "", cgroup=cgroup,
        )
        self.last_start_error = ""
        self._log.info("child.spawned", pid=proc.pid, generation=number, argv=list(self.spec.argv))
        self.output.append_event(self._event(EventKind.STARTED, f"started pid {proc.pid}", pid=proc.pid))
        assert self._task_group is not None
        await self._task_group.start(gen.run, self._report_end)
        await self._feed(lc.Started(time.monotonic()))
        await self._start_probes(number, proc.started_at)
        self._run_hooks(self._on_start, "start", number)

    def _run_hooks(self, hooks: Sequence[Callable[[ChildDriver, int], None]], what: str, value: int) -> None:
        for hook in hooks:
            try:
                hook(self, value)
            except Exception:  # noqa: BLE001 - a hook's bug must not fail what already happened; logged
                self._log.exception(f"child.{what}_hook.failed", value=value)

    # Probes ------------------------------------------------------------------------------

    async def _start_probes(self, generation: int, started_at: float) -> None:
        """Probe the new process; without probes it is ready as soon as it runs."""
        if not self.spec.probes():
            await self._feed(lc.Ready(time.monotonic()))
            return
        prober = self._prober = Prober(
            self.spec, generation, started_at, self._report_verdict, on_result=self._tell_change_hooks
        )
        scope = self._prober_scope = anyio.CancelScope()
        assert self._task_group is not None
        self._task_group.start_soon(self._run_prober, prober, scope)

    async def _run_prober(self, prober: Prober, scope: anyio.CancelScope) -> None:
        with scope:
            await prober.run()

    def _stop_probes(self) -> None:
        if self._prober_scope is not None:
            self._prober_scope.cancel()
            self._prober_scope = None
        self._prober = None  # its results were about the process that ended

    async def _report_verdict(self, verdict: Verdict) -> None:
        try:
            await self._put(_ProbeVerdict(verdict))
        except NotFound:
            return  # removed meanwhile: nothing to decide

    async def _on_verdict(self, verdict: Verdict) -> None:
        if verdict.generation != self.generation or self.state is not lc.State.RUNNING:
            return  # about a process that is gone or going
        now = time.monotonic()
        if verdict.unhealthy:
            self._log.warning("child.unhealthy", probe=verdict.probe, reason=verdict.reason)
            self.output.append_event(self._event(EventKind.UNHEALTHY, verdict.reason, probe=verdict.probe))
            await self._feed(lc.Unhealthy(now, self.spec.stop_grace_seconds, verdict.reason))
            return
        if verdict.ready:
            await self._feed(lc.Ready(now))
            message = f"ready ({verdict.probe} probe: {verdict.reason})" if verdict.reason else "ready"
            self.output.append_event(self._event(EventKind.READY, message, probe=verdict.probe))
            self._log.info("child.ready", probe=verdict.probe)
        else:
            await self._feed(lc.NotReady(now, verdict.reason))
            self.output.append_event(self._event(EventKind.NOT_READY, verdict.reason, probe=verdict.probe))
            self._log.warning("child.not_ready", probe=verdict.probe, reason=verdict.reason)

    def _spawn_blocking(self, pipes: Pipes, number: int) -> tuple[Process, Cgroup | None]:
        """In a worker thread: make the process's cgroup (if supd has them), fork, exec, move it in."""
        cgroup = self._cgroups.make(self.name, number) if self._cgroups is not None else None
        try:
            proc = Process.spawn(
                self.spec, pipes.stdout_write, pipes.stderr_write, self._identity,
                cgroup.add if cgroup is not None else None,
            )
        except SpawnError:
            if cgroup is not None:
                cgroup.remove()
            raise
        return proc, cgroup

    async def _start_failed(self, reason: str) -> None:
        self.last_start_error = reason
        self._log.error("child.spawn.failed", generation=self.generation, error=reason)
        self.output.append_event(self._event(EventKind.START_FAILED, reason))
        await self._feed(lc.StartFailed(time.monotonic(), reason))

    async def _restart_timer(self, timer: int, delay: float) -> None:
        with anyio.CancelScope() as scope:
            self._timer_scope = scope
            await anyio.sleep(delay)
            try:
                await self._put(_TimerFired(timer))
            except NotFound:
                return  # removed while the timer ran: nothing to restart

    async def _report_end(self, gen: Generation, reaped: ExitRecord) -> None:
        """Called once by each generation as it ends: hand its exit to this driver's task."""
        try:
            await self._put(_GenerationEnded(gen, reaped))
        except NotFound:
            self._log.error("child.exit.unreported", pid=gen.process.pid, generation=gen.number)

    async def _on_generation_ended(self, gen: Generation, info: ExitRecord) -> None:
        if gen.number == self.generation:
            self._stop_probes()
        self._run_hooks(self._on_exit, "exit", info.pid)
        cur = self.lifecycle
        record = finish_exit(
            info,
            gen.number,
            requested=cur.state is lc.State.STOPPING and cur.then is not lc.Then.UNHEALTHY,
            grace=gen.grace,
            leader_killed=gen.leader_killed,
            leftovers_killed=gen.leftovers_killed,
        )
        self.last_exit = record
        recorder.active.child_exited(self.name, record)
        if self._gen is gen:
            self._gen = None
        self.output.append_event(self._event(EventKind.EXITED, record.description, pid=info.pid, exit=record))
        self._log.info(
            "child.exited", pid=info.pid, generation=gen.number, description=record.description,
            requested=record.requested,
        )
        await self._feed(lc.Exited(time.monotonic(), info.failed))

    def _settle(self) -> None:
        """Answer every waiter whose outcome is known now; tell the change hooks."""
        self._answer_waiters()
        self._tell_change_hooks()

    def _tell_change_hooks(self) -> None:
        for hook in self._on_change:
            try:
                hook(self)
            except Exception:  # noqa: BLE001 - a hook's bug must not stop the driver; logged
                self._log.exception("child.change_hook.failed")

    def _answer_waiters(self) -> None:
        state = self.lifecycle.state
        removed = state is lc.State.REMOVED
        settled = state not in (lc.State.STARTING, lc.State.STOPPING)
        for waiter in list(self._waiters):
            ended = self.last_exit if self.last_exit is not waiter.exit_before else None
            match waiter.until:
                case "start" if removed:
                    waiter.reply.fail(self._gone_error())
                case "start" if settled and self._start_attempts == waiter.attempts:
                    waiter.reply.fail(
                        FailedPrecondition(f"child {self.name!r} was stopped before it could start again")
                    )
                case "start" if settled:
                    waiter.reply.set(ended)
                case "exit" if removed or self._gen is None or self._gen.number > waiter.generation:
                    waiter.reply.set(ended)
                case "removed" if removed:
                    waiter.reply.set(ended)
                case _:
                    continue
            self._waiters.remove(waiter)

    def _gone_error(self) -> SupervisorError:
        if self._closed_by == "shutdown":
            return Unavailable("supd is shutting down")
        return FailedPrecondition(f"child {self.name!r} was removed")

    # Signals -----------------------------------------------------------------------

    @property
    def running_generation(self) -> int:
        """The generation number of the process running now (STARTING or RUNNING); 0 when none runs."""
        gen = self._gen
        if gen is None or not gen.process.alive or self.state not in (lc.State.STARTING, lc.State.RUNNING):
            return 0
        return gen.number

    @property
    def running_pid(self) -> int:
        """The pid of the process of ``running_generation``; 0 when none runs."""
        gen = self._gen
        return gen.process.pid if gen is not None and self.running_generation else 0

    @property
    def started_up(self) -> bool:
        """The running process passed its startup probe (True without one once it runs)."""
        if self.state is not lc.State.RUNNING:
            return False
        prober = self._prober
        startup = prober.statuses.get("startup") if prober is not None else None
        return startup is None or startup.passed

    @property
    def live_pid(self) -> int:
        """The pid of the child's process not yet reaped, whatever the state (stopping included); 0 when none."""
        gen = self._gen
        return gen.process.pid if gen is not None and gen.process.alive else 0

    def signal_generation(self, generation: int, sig: int) -> bool:
        """Send ``sig`` to that generation's process (through its pidfd); False when it no longer runs."""
        gen = self._gen
        if gen is None or gen.number != generation or not gen.process.alive:
            return False
        return gen.process.signal(sig)

    def _signal(self, sig: int, group: bool) -> None:
        gen = self._gen
        if gen is None or not gen.process.alive:
            raise FailedPrecondition(f"child {self.name!r} has no running process (state {self.state.value})")
        proc = gen.process
        sent = proc.signal_group(sig) if group else proc.signal(sig)
        if not sent:
            raise FailedPrecondition(f"child {self.name!r} exited before {signal_name(sig)} could be sent")
        self._log.info("child.signal.sent", pid=proc.pid, signal=signal_name(sig), group=group)

    # Snapshots ----------------------------------------------------------------------

    def _failing_probe(self) -> str:
        """Why a running child is unhealthy now: its liveness probe failing, not yet at its threshold.

        A startup probe that has not passed yet means the child is still starting (not ready), not unhealthy.
        """
        if self._prober is None or self.state is not lc.State.RUNNING or self._prober.generation != self.generation:
            return ""
        state = self._prober.statuses.get("liveness")
        if state is not None and state.failures and state.last is not None:
            return f"liveness probe failing ({state.failures} in a row): {state.last.message}"
        return ""

    def _event(self, kind: EventKind, message: str, **fields: Any) -> ChildEvent:
        return ChildEvent(kind=kind, time_ns=time.time_ns(), generation=self.generation, message=message, **fields)

    def statistics(self) -> ChildStatistics:
        """A consistent snapshot for List and Health."""
        now = time.monotonic()
        cur = self.lifecycle
        gen = self._gen
        running = gen is not None and gen.process.alive and cur.state in (lc.State.RUNNING, lc.State.STOPPING)
        return ChildStatistics(
            spec=self.spec,
            state=cur.state,
            pid=gen.process.pid if running and gen else 0,
            generation=self.generation,
            restart_count=cur.restart_count,
            uptime_seconds=now - gen.process.started_at if running and gen else 0.0,
            next_start_in_seconds=max(0.0, cur.next_start_at - now) if cur.next_start_at else 0.0,
            fatal_reason=cur.fatal_reason if cur.state is lc.State.FATAL else "",
            ready=cur.ready and cur.state is lc.State.RUNNING,
            not_ready_reason=cur.not_ready_reason,
            unhealthy_reason=cur.unhealthy_reason or self._failing_probe(),
            probes=tuple(dataclasses.replace(p) for p in self._prober.statuses.values()) if self._prober else (),
            last_start_error=self.last_start_error,
            last_exit=self.last_exit,
            output=self.output.statistics(),
        )

