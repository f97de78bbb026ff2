"""The child lifecycle as data: a pure ``step(state, event) -> (state, actions)``.

No I/O happens here and nothing else assigns a child's state. The driver in
child.py feeds events (started, exited, stop asked...) and carries out the
actions returned (spawn, terminate the group, schedule a restart, announce).
Restart policy, backoff and the flap limit live only here, so they cannot
disagree with each other.
"""

from __future__ import annotations

import dataclasses
import enum

from supervisor.spec import ChildSpec, RestartPolicy

__all__ = [
    "Announce",
    "BackoffElapsed",
    "CancelRestart",
    "Exited",
    "Lifecycle",
    "ScheduleRestart",
    "Spawn",
    "StartFailed",
    "StartRequested",
    "Started",
    "State",
    "StopRequested",
    "Terminate",
    "step",
]


class State(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    STOPPING = "stopping"
    STOPPED = "stopped"
    EXITED = "exited"
    FATAL = "fatal"


# Events -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StartRequested:
    """Spawn or an explicit Restart: start afresh, forgetting restart history."""

    now: float


@dataclasses.dataclass(frozen=True)
class Started:
    now: float


@dataclasses.dataclass(frozen=True)
class StartFailed:
    now: float
    reason: str


@dataclasses.dataclass(frozen=True)
class Exited:
    now: float
    failed: bool


@dataclasses.dataclass(frozen=True)
class StopRequested:
    now: float


@dataclasses.dataclass(frozen=True)
class BackoffElapsed:
    now: float


Event = StartRequested | Started | StartFailed | Exited | StopRequested | BackoffElapsed

# Actions ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Spawn:
    """Start a new generation of the process."""


@dataclasses.dataclass(frozen=True)
class Terminate:
    """Stop signal to the group, SIGKILL after the grace."""


@dataclasses.dataclass(frozen=True)
class ScheduleRestart:
    delay: float


@dataclasses.dataclass(frozen=True)
class CancelRestart:
    """Forget a scheduled restart."""


@dataclasses.dataclass(frozen=True)
class Announce:
    """Tell listeners: kind is "restarting", "fatal" or "stopped"."""

    kind: str
    message: str
    delay: float = 0.0


Action = Spawn | Terminate | ScheduleRestart | CancelRestart | Announce


@dataclasses.dataclass(frozen=True)
class Lifecycle:
    """Where one child is, and the history the restart rules need."""

    state: State = State.STOPPED
    restart_count: int = 0
    streak: int = 0  # restarts since the last stable run: the backoff exponent
    recent_restarts: tuple[float, ...] = ()  # monotonic times, within the flap window
    started_at: float | None = None
    next_start_at: float | None = None
    fatal_reason: str = ""


def step(lc: Lifecycle, spec: ChildSpec, event: Event) -> tuple[Lifecycle, list[Action]]:
    """The next lifecycle and the actions to carry out. Events a state does not expect change nothing."""
    s = lc.state
    match event:
        case StartRequested(now) if s in (State.STOPPED, State.EXITED, State.FATAL, State.BACKOFF):
            actions: list[Action] = [CancelRestart()] if s is State.BACKOFF else []
            return Lifecycle(state=State.STARTING), [*actions, Spawn()]
        case Started(now) if s is State.STARTING:
            return dataclasses.replace(lc, state=State.RUNNING, started_at=now), []
        case StartFailed(now, reason) if s is State.STARTING:
            return _after_exit(dataclasses.replace(lc, started_at=now), spec, now, True, reason)
        case Exited(now, failed) if s is State.RUNNING:
            return _after_exit(lc, spec, now, failed, "")
        case Exited(now, _) if s is State.STOPPING:
            return dataclasses.replace(lc, state=State.STOPPED, started_at=None), [
                Announce("stopped", "stopped on request")
            ]
        case StopRequested(now) if s in (State.RUNNING, State.STARTING):
            return dataclasses.replace(lc, state=State.STOPPING), [Terminate()]
        case StopRequested(now) if s is State.BACKOFF:
            return dataclasses.replace(lc, state=State.STOPPED, next_start_at=None), [
                CancelRestart(),
                Announce("stopped", "stopped on request while waiting to restart"),
            ]
        case BackoffElapsed(now) if s is State.BACKOFF:
            return dataclasses.replace(lc, state=State.STARTING, next_start_at=None), [Spawn()]
    return lc, []


def _after_exit(
    lc: Lifecycle, spec: ChildSpec, now: float, failed: bool, start_error: str
) -> tuple[Lifecycle, list[Action]]:
    """Decide between EXITED, BACKOFF and FATAL once a process ended by itself (or never started)."""
    ran = now - lc.started_at if lc.started_at is not None else 0.0
    streak = 0 if ran >= spec.backoff.reset_after_seconds else lc.streak
    base = dataclasses.replace(lc, started_at=None, streak=streak)
    wants = spec.restart is RestartPolicy.ALWAYS or (spec.restart is RestartPolicy.ON_FAILURE and failed)
    if not wants:
        if start_error:
            reason = f"could not start: {start_error}"
            return dataclasses.replace(base, state=State.FATAL, fatal_reason=reason), [Announce("fatal", reason)]
        return dataclasses.replace(base, state=State.EXITED), []
    window = spec.flap_limit.window_seconds
    recent = (*(t for t in lc.recent_restarts if now - t < window), now)
    limit = spec.flap_limit.max_restarts
    if limit and len(recent) > limit:
        reason = f"flapping: {len(recent)} restarts within {window:g}s (limit {limit})"
        if start_error:
            reason += f"; last start failed: {start_error}"
        return dataclasses.replace(base, state=State.FATAL, fatal_reason=reason, recent_restarts=recent), [
            Announce("fatal", reason)
        ]
    delay = spec.backoff.delay(streak + 1)
    nxt = dataclasses.replace(
        base,
        state=State.BACKOFF,
        streak=streak + 1,
        restart_count=lc.restart_count + 1,
        recent_restarts=recent,
        next_start_at=now + delay,
    )
    why = f"start failed: {start_error}" if start_error else "exited"
    return nxt, [ScheduleRestart(delay), Announce("restarting", f"{why}; restarting in {delay:g}s", delay)]
