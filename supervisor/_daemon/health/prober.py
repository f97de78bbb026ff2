"""The probes of one generation of one child, with the kubelet's rules.

A ``Prober`` starts once the process started and is cancelled when that
process ends; probes of many children run as tasks of their own and never wait
for one another, so a probe that hangs (cut at its timeout) delays nobody.

- The startup probe runs first, every ``period_seconds`` after
  ``initial_delay_seconds``; the first success ends it and lets the other two
  begin; ``failure_threshold`` consecutive failures make the child unhealthy.
- The liveness probe: ``failure_threshold`` consecutive failures make the child
  unhealthy (the driver restarts it, counted by backoff and the flap limit);
  probing stops there, as the process is about to end.
- The readiness probe: ``success_threshold`` consecutive successes make the
  child ready, ``failure_threshold`` consecutive failures not ready. Until its
  first verdict the child is not ready. Without a readiness probe the child is
  ready once the startup probe (if any) passed.

Verdicts reach the driver through ``report`` (its inbox), never by changing
the child directly. Each probe's last result and counts are kept in
``statuses`` for Health.

Source of the rules: https://kubernetes.io/docs/concepts/configuration/liveness-readiness-startup-probes/
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable

import anyio
import structlog

from supervisor._daemon.health.probe import ProbeResult, ProbeRunner
from supervisor._daemon.telemetry import recorder
from supervisor.probes import Probe
from supervisor.spec import ChildSpec

__all__ = ["ProbeState", "Prober", "Verdict"]

log = structlog.get_logger("supd.probe")


@dataclasses.dataclass
class ProbeState:
    """One probe's record for the current process: what Health shows."""

    name: str  # "liveness", "readiness" or "startup"
    kind: str  # "exec", "tcp", "http" or "grpc"
    last: ProbeResult | None = None
    time_ns: int = 0  # wall clock, when the last run ended
    successes: int = 0  # consecutive
    failures: int = 0  # consecutive
    runs: int = 0
    passed: bool = False  # startup: it succeeded once


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What the probes decided: ``ready`` (True/False) or ``unhealthy`` (the child must restart)."""

    generation: int
    probe: str
    ready: bool | None = None
    unhealthy: bool = False
    reason: str = ""


Report = Callable[[Verdict], Awaitable[None]]


class Prober:
    """Runs the probes of one generation; ``run`` until cancelled (the process ended) or unhealthy."""

    def __init__(
        self, spec: ChildSpec, generation: int, started_at: float, report: Report,
        on_result: Callable[[], None] | None = None,
    ) -> None:
        """``started_at``: monotonic time of the start, from which initial delays count.

        ``on_result()`` is called after every probe run (what Health and grpc.health.v1 show may have changed).
        """
        self.spec = spec
        self._on_result = on_result
        self.generation = generation
        self._started_at = started_at
        self._report = report
        self.statuses = {name: ProbeState(name, probe.kind) for name, probe in spec.probes().items()}
        self._ready: bool | None = None
        self._log = log.bind(child=spec.name, generation=generation)

    async def run(self) -> None:
        """Probe until cancelled, or until a liveness or startup probe made the child unhealthy."""
        runner = ProbeRunner(env=self.spec.child_env(), cwd=self.spec.cwd or None)
        try:
            startup = self.spec.startup_probe
            if startup is not None and not await self._probe(runner, "startup", startup):
                return
            if self.spec.readiness_probe is None:
                await self._set_ready(True, "startup" if startup is not None else "", "")
            async with anyio.create_task_group() as tg:
                for name in ("liveness", "readiness"):
                    probe = self.spec.probes().get(name)
                    if probe is not None:
                        tg.start_soon(self._probe_then_stop_all, runner, name, probe, tg.cancel_scope)
        finally:
            with anyio.CancelScope(shield=True):
                await runner.aclose()

    async def _probe_then_stop_all(
        self, runner: ProbeRunner, name: str, probe: Probe, scope: anyio.CancelScope
    ) -> None:
        if not await self._probe(runner, name, probe):
            scope.cancel()  # unhealthy: the process is about to be stopped, readiness has nothing left to say

    async def _probe(self, runner: ProbeRunner, name: str, probe: Probe) -> bool:
        """Run one probe by its rules; False once it made the child unhealthy, True when startup passed."""
        state = self.statuses[name]
        due = self._started_at + probe.initial_delay_seconds
        await anyio.sleep(max(0.0, due - time.monotonic()))
        while True:
            result = await runner.run(probe.action, probe.timeout_seconds)
            self._record(state, result)
            if name == "startup" and result.success:
                state.passed = True
                self._log.info("probe.startup.passed", after_runs=state.runs)
                return True
            if name in ("startup", "liveness") and state.failures >= probe.failure_threshold:
                reason = f"{name} probe failed {state.failures} times in a row: {result.message}"
                self._log.warning(f"probe.{name}.failed", reason=reason, kind=state.kind)
                await self._report(Verdict(self.generation, name, unhealthy=True, reason=reason))
                return False
            if name == "readiness":
                if state.successes >= probe.success_threshold and self._ready is not True:
                    await self._set_ready(True, name, result.message)
                elif state.failures >= probe.failure_threshold and self._ready is not False:
                    reason = f"readiness probe failed {state.failures} times in a row: {result.message}"
                    await self._set_ready(False, name, reason)
            due = _next_due(due, probe.period_seconds, time.monotonic())
            await anyio.sleep(max(0.0, due - time.monotonic()))

    def _record(self, state: ProbeState, result: ProbeResult) -> None:
        state.last, state.time_ns, state.runs = result, time.time_ns(), state.runs + 1
        recorder.active.probe_ran(self.spec.name, state.name, state.kind, result)
        if self._on_result is not None:
            self._on_result()
        if result.success:
            state.successes, state.failures = state.successes + 1, 0
        else:
            state.successes, state.failures = 0, state.failures + 1
            self._log.info(
                f"probe.{state.name}.failure", kind=state.kind, message=result.message,
                consecutive=state.failures, elapsed=round(result.elapsed_seconds, 3),
            )

    async def _set_ready(self, ready: bool, probe: str, reason: str) -> None:
        if self._ready is ready:
            return
        first = self._ready is None
        self._ready = ready
        if ready or not first:
            await self._report(Verdict(self.generation, probe, ready=ready, reason=reason))


def _next_due(due: float, period: float, now: float) -> float:
    """The next tick of a fixed schedule (as the kubelet's ticker): ``due + period``, or the first tick after
    ``now`` when runs fell behind. Late wake-ups neither stretch the period nor make missed runs pile up."""
    nxt = due + period
    if nxt < now:
        nxt += ((now - nxt) // period + 1) * period
    return nxt
