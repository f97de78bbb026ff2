"""The child lifecycle as data: a pure ``step(lifecycle, spec, event) -> (lifecycle, actions)``.

No I/O happens here and nothing else assigns a child's state. The driver
(driver.py) feeds events (a request, a start, an exit, a timer) and carries out
the actions returned, one at a time. Restart policy, backoff, the flap limit and
what follows a stop (nothing, a new start, removal, supd's shutdown) live only
here, so they cannot disagree with each other and the driver keeps no decision
of its own.

States::

    STOPPED --start--> STARTING --Started--> RUNNING --exit--> EXITED | BACKOFF | FATAL
    RUNNING/STARTING --stop|restart|remove|shutdown--> STOPPING --exit--> STOPPED | STARTING | REMOVED
    RUNNING --Unhealthy (a liveness or startup probe at its threshold)--> STOPPING --exit--> BACKOFF | FATAL | EXITED
    BACKOFF --BackoffElapsed--> STARTING
    any --remove|shutdown (nothing running)--> REMOVED (terminal: every later request is refused)

STARTING spans the awaited ``Prepare`` (port reaping and stored state plug in
there) and the spawn. Requests a state cannot honour are answered with a
``Refuse`` action carrying the reason, never silently dropped.
"""

from __future__ import annotations

import dataclasses
import enum

from supervisor.spec import ChildSpec, RestartPolicy

__all__ = [
    "Announce",
    "BackoffElapsed",
    "CancelRestart",
    "CloseOutput",
    "Exited",
    "Lifecycle",
    "NotReady",
    "Prepare",
    "Prepared",
    "Ready",
    "Refuse",
    "RemoveRequested",
    "RestartRequested",
    "ScheduleRestart",
    "ShutdownRequested",
    "Spawn",
    "StartFailed",
    "StartRequested",
    "Started",
    "State",
    "StopRequested",
    "Terminate",
    "Then",
    "Unhealthy",
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
    REMOVED = "removed"


class Then(enum.Enum):
    """What follows the exit of a process being stopped."""

    STOP = "stop"  # stay STOPPED
    START = "start"  # an explicit Restart: start again
    REMOVE = "remove"  # the child is removed
    SHUTDOWN = "shutdown"  # supd is exiting
    UNHEALTHY = "unhealthy"  # a probe failed: what follows is an automatic restart, as after a failed exit


_IDLE = (State.STOPPED, State.EXITED, State.FATAL, State.BACKOFF)
_LIVE = (State.STARTING, State.RUNNING)

# Events -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class StartRequested:
    """Spawn: start afresh, forgetting restart history."""

    now: float


@dataclasses.dataclass(frozen=True)
class RestartRequested:
    """An explicit Restart: stop what runs within ``grace`` s, then start; the flap history is kept."""

    now: float
    grace: float


@dataclasses.dataclass(frozen=True)
class StopRequested:
    now: float
    grace: float


@dataclasses.dataclass(frozen=True)
class RemoveRequested:
    now: float
    grace: float


@dataclasses.dataclass(frozen=True)
class ShutdownRequested:
    """supd is exiting: stop within ``grace`` s (shortening a stop in progress), then end."""

    now: float
    grace: float


@dataclasses.dataclass(frozen=True)
class Prepared:
    """Everything a start needs is in place (ports free, state ready): spawn now."""

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
class BackoffElapsed:
    now: float


@dataclasses.dataclass(frozen=True)
class Ready:
    """A readiness probe passed (for probes; changes only the ``ready`` flag)."""

    now: float


@dataclasses.dataclass(frozen=True)
class NotReady:
    now: float
    reason: str


@dataclasses.dataclass(frozen=True)
class Unhealthy:
    """A liveness or startup probe reached its failure threshold: stop within ``grace`` s, then restart."""

    now: float
    grace: float
    reason: str


Request = StartRequested | RestartRequested | StopRequested | RemoveRequested | ShutdownRequested
Event = Request | Prepared | Started | StartFailed | Exited | BackoffElapsed | Ready | NotReady | Unhealthy

# Actions ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Prepare:
    """Get ready to start (awaited by the driver); answer with Prepared or StartFailed."""


@dataclasses.dataclass(frozen=True)
class Spawn:
    """Start a new generation of the process; answer with Started or StartFailed."""


@dataclasses.dataclass(frozen=True)
class Terminate:
    """Stop signal to the child's session now, SIGKILL after ``grace`` s.

    A Terminate while one is under way shortens its deadline, never lengthens it.
    """

    grace: float
    reason: str


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


@dataclasses.dataclass(frozen=True)
class CloseOutput:
    """The child is gone for good: end its streams with a final event ("removed" or "shutdown")."""

    kind: str
    message: str


@dataclasses.dataclass(frozen=True)
class Refuse:
    """The request cannot be honoured in this state. ``unavailable`` marks supd's shutdown."""

    message: str
    unavailable: bool = False


Action = Prepare | Spawn | Terminate | ScheduleRestart | CancelRestart | Announce | CloseOutput | Refuse


@dataclasses.dataclass(frozen=True)
class Lifecycle:
    """Where one child is, and the history the restart rules need."""

    state: State = State.STOPPED
    then: Then = Then.STOP  # meaningful while STOPPING
    restart_count: int = 0
    streak: int = 0  # restarts since the last stable run: the backoff exponent
    recent_restarts: tuple[float, ...] = ()  # monotonic times, within the flap window
    started_at: float | None = None
    next_start_at: float | None = None
    fatal_reason: str = ""
    ready: bool = False
    not_ready_reason: str = ""
    unhealthy_reason: str = ""  # while STOPPING with then UNHEALTHY: the probe failure that caused it


def step(lc: Lifecycle, spec: ChildSpec, event: Event) -> tuple[Lifecycle, list[Action]]:
    """The next lifecycle and the actions to carry out.

    Non-request events a state does not expect (a late timer, a stale probe)
    change nothing; a request a state cannot honour returns ``Refuse``.
    """
    if lc.state is State.REMOVED:
        return lc, [Refuse(f"child {spec.name!r} was removed")] if _is_request(event) else []
    match event:
        case StartRequested() | RestartRequested() | StopRequested() | RemoveRequested() | ShutdownRequested():
            return _request(lc, spec, event)
        case Prepared() if lc.state is State.STARTING:
            return lc, [Spawn()]
        case Started(now) if lc.state is State.STARTING:
            return dataclasses.replace(lc, state=State.RUNNING, started_at=now), []
        case StartFailed(now, reason) if lc.state is State.STARTING:
            return _after_exit(dataclasses.replace(lc, started_at=now), spec, now, True, reason)
        case Exited(now, failed) if lc.state in _LIVE:
            return _after_exit(lc, spec, now, failed, "")
        case Exited(now) | StartFailed(now) if lc.state is State.STOPPING and lc.then is Then.UNHEALTHY:
            base = dataclasses.replace(lc, then=Then.STOP, unhealthy_reason="")
            return _after_exit(base, spec, now, True, "", cause=f"restarted: {lc.unhealthy_reason}")
        case Exited() | StartFailed() if lc.state is State.STOPPING:
            return _after_stop(lc)
        case BackoffElapsed() if lc.state is State.BACKOFF:
            return dataclasses.replace(lc, state=State.STARTING, next_start_at=None), [Prepare()]
        case Ready() if lc.state is State.RUNNING:
            return dataclasses.replace(lc, ready=True, not_ready_reason=""), []
        case NotReady(_, reason) if lc.state is State.RUNNING:
            return dataclasses.replace(lc, ready=False, not_ready_reason=reason), []
        case Unhealthy(_, grace, reason) if lc.state is State.RUNNING:
            stopping = dataclasses.replace(_stopping(lc, Then.UNHEALTHY), unhealthy_reason=reason)
            return stopping, [Terminate(grace, "unhealthy")]
    return lc, []


def _is_request(event: Event) -> bool:
    return isinstance(event, StartRequested | RestartRequested | StopRequested | RemoveRequested | ShutdownRequested)


def _request(lc: Lifecycle, spec: ChildSpec, event: Request) -> tuple[Lifecycle, list[Action]]:
    s = lc.state
    if s is State.STOPPING and lc.then is Then.SHUTDOWN and not isinstance(event, ShutdownRequested):
        return lc, [Refuse("supd is shutting down", unavailable=True)]
    match event:
        case StartRequested() if s in _IDLE:
            cancel: list[Action] = [CancelRestart()] if s is State.BACKOFF else []
            return Lifecycle(state=State.STARTING), [*cancel, Prepare()]
        case StartRequested():
            return lc, [Refuse(f"child {spec.name!r} is {s.value}: stop it first, or restart it")]
        case RestartRequested(_, grace) if s in _LIVE:
            return _stopping(lc, Then.START), [Terminate(grace, "restart")]
        case RestartRequested() if s is State.STOPPING and lc.then is Then.REMOVE:
            return lc, [Refuse(f"child {spec.name!r} is being removed")]
        case RestartRequested() if s is State.STOPPING:
            return dataclasses.replace(lc, then=Then.START, unhealthy_reason=""), []
        case RestartRequested() if s is State.FATAL:
            return Lifecycle(state=State.STARTING), [Prepare()]  # the way out of FATAL starts afresh
        case RestartRequested() if s in _IDLE:
            cancel = [CancelRestart()] if s is State.BACKOFF else []
            # The flap history stays: an operator's restart is not a flap, but it does not erase one either.
            return dataclasses.replace(lc, state=State.STARTING, next_start_at=None), [*cancel, Prepare()]
        case StopRequested(_, grace) if s in _LIVE:
            return _stopping(lc, Then.STOP), [Terminate(grace, "stop")]
        case StopRequested() if s is State.STOPPING and lc.then in (Then.START, Then.UNHEALTHY):
            return dataclasses.replace(lc, then=Then.STOP, unhealthy_reason=""), []
        case StopRequested() if s is State.BACKOFF:
            return dataclasses.replace(lc, state=State.STOPPED, next_start_at=None), [
                CancelRestart(),
                Announce("stopped", "stopped on request while waiting to restart"),
            ]
        case StopRequested():
            return lc, []  # already stopping or not running: nothing to do
        case RemoveRequested(_, grace) | ShutdownRequested(_, grace):
            then = Then.SHUTDOWN if isinstance(event, ShutdownRequested) else Then.REMOVE
            if s in _LIVE:
                return _stopping(lc, then), [Terminate(grace, then.value)]
            if s is State.STOPPING:
                return dataclasses.replace(lc, then=then, unhealthy_reason=""), [Terminate(grace, then.value)]
            cancel = [CancelRestart()] if s is State.BACKOFF else []
            return _removed(lc, then, cancel)
    raise AssertionError(f"unhandled request {event!r}")  # pragma: no cover - the match is exhaustive


def _stopping(lc: Lifecycle, then: Then) -> Lifecycle:
    return dataclasses.replace(lc, state=State.STOPPING, then=then, ready=False)


def _removed(lc: Lifecycle, then: Then, before: list[Action]) -> tuple[Lifecycle, list[Action]]:
    message = "supd is shutting down" if then is Then.SHUTDOWN else "child removed"
    return dataclasses.replace(lc, state=State.REMOVED, started_at=None, next_start_at=None, ready=False), [
        *before,
        CloseOutput(then.value, message),
    ]


def _after_stop(lc: Lifecycle) -> tuple[Lifecycle, list[Action]]:
    """The process being stopped is gone: do what was asked to follow."""
    base = dataclasses.replace(lc, started_at=None, then=Then.STOP)
    match lc.then:
        case Then.START:
            return dataclasses.replace(base, state=State.STARTING, fatal_reason=""), [Prepare()]
        case Then.REMOVE | Then.SHUTDOWN:
            return _removed(base, lc.then, [Announce("stopped", "stopped on request")])
    return dataclasses.replace(base, state=State.STOPPED), [Announce("stopped", "stopped on request")]


def _after_exit(
    lc: Lifecycle, spec: ChildSpec, now: float, failed: bool, start_error: str, *, cause: str = ""
) -> tuple[Lifecycle, list[Action]]:
    """Decide between EXITED, BACKOFF and FATAL once a process ended by itself (or never started).

    ``cause`` says why it ended when supd ended it (a failing probe).
    """
    ran = now - lc.started_at if lc.started_at is not None else 0.0
    streak = 0 if ran >= spec.backoff.reset_after_seconds else lc.streak
    base = dataclasses.replace(lc, state=State.EXITED, started_at=None, streak=streak, ready=False)
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
        elif cause:
            reason += f"; last {cause}"
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
    why = f"start failed: {start_error}" if start_error else cause or "exited"
    return nxt, [ScheduleRestart(delay), Announce("restarting", f"{why}; restarting in {delay:g}s", delay)]
