"""The pure lifecycle: every transition, with no process spawned."""

from __future__ import annotations

from supervisor._daemon.children import lifecycle as lc
from supervisor.spec import Backoff, ChildSpec, FlapLimit, RestartPolicy


def spec(policy: RestartPolicy = RestartPolicy.ON_FAILURE, limit: int = 3) -> ChildSpec:
    return ChildSpec(
        name="t", argv=("true",), restart=policy,
        backoff=Backoff(initial_seconds=1, max_seconds=8, multiplier=2, reset_after_seconds=60),
        flap_limit=FlapLimit(max_restarts=limit, window_seconds=100),
    )


def run(state: lc.Lifecycle, s: ChildSpec, *events: lc.Event) -> tuple[lc.Lifecycle, list[lc.Action]]:
    actions: list[lc.Action] = []
    for event in events:
        state, acts = lc.step(state, s, event)
        actions.extend(acts)
    return state, actions


def test_start_runs_then_clean_exit_under_on_failure_is_exited():
    state, actions = run(lc.Lifecycle(), spec(), lc.StartRequested(0), lc.Started(0), lc.Exited(5, failed=False))
    assert state.state is lc.State.EXITED and actions == [lc.Spawn()]


def test_failures_back_off_exponentially_and_cap():
    s = spec(limit=0)
    state, _ = run(lc.Lifecycle(), s, lc.StartRequested(0), lc.Started(0))
    delays = []
    now = 0.0
    for _ in range(6):
        now += 1
        state, actions = lc.step(state, s, lc.Exited(now, failed=True))
        delays.append(next(a.delay for a in actions if isinstance(a, lc.ScheduleRestart)))
        state, _ = run(state, s, lc.BackoffElapsed(now), lc.Started(now))
    assert delays == [1, 2, 4, 8, 8, 8]
    assert state.restart_count == 6


def test_a_stable_run_resets_the_backoff():
    s = spec(limit=0)
    state, _ = run(lc.Lifecycle(), s, lc.StartRequested(0), lc.Started(0), lc.Exited(1, True),
                   lc.BackoffElapsed(2), lc.Started(2), lc.Exited(3, True), lc.BackoffElapsed(5), lc.Started(5))
    assert state.streak == 2
    state, actions = lc.step(state, s, lc.Exited(500, True))
    assert lc.ScheduleRestart(1) in actions and state.streak == 1


def test_flap_limit_is_fatal_with_a_reason():
    s = spec(policy=RestartPolicy.ALWAYS, limit=2)
    state, _ = run(lc.Lifecycle(), s, lc.StartRequested(0), lc.Started(0))
    for t in (1, 2):
        state, _ = run(state, s, lc.Exited(t, False), lc.BackoffElapsed(t), lc.Started(t))
    state, actions = lc.step(state, s, lc.Exited(3, False))
    assert state.state is lc.State.FATAL and state.fatal_reason.startswith("flapping: 3 restarts within 100s")
    assert isinstance(actions[0], lc.Announce) and actions[0].kind == "fatal"
    state, actions = lc.step(state, s, lc.StartRequested(4))
    assert state.state is lc.State.STARTING and state.restart_count == 0 and actions == [lc.Spawn()]


def test_restarts_outside_the_window_do_not_count():
    s = spec(policy=RestartPolicy.ALWAYS, limit=2)
    state, _ = run(lc.Lifecycle(), s, lc.StartRequested(0), lc.Started(0))
    for t in (1, 150, 300, 450):
        state, _ = run(state, s, lc.Exited(t, False), lc.BackoffElapsed(t), lc.Started(t))
    assert state.state is lc.State.RUNNING


def test_stop_paths():
    s = spec()
    running, _ = run(lc.Lifecycle(), s, lc.StartRequested(0), lc.Started(0))
    stopping, actions = lc.step(running, s, lc.StopRequested(1))
    assert stopping.state is lc.State.STOPPING and actions == [lc.Terminate()]
    stopped, actions = lc.step(stopping, s, lc.Exited(2, True))
    assert stopped.state is lc.State.STOPPED and actions[0] == lc.Announce("stopped", "stopped on request")
    backoff, _ = lc.step(running, s, lc.Exited(1, True))
    stopped2, actions = lc.step(backoff, s, lc.StopRequested(1.5))
    assert stopped2.state is lc.State.STOPPED and lc.CancelRestart() in actions
    assert lc.step(stopped, s, lc.StopRequested(3)) == (stopped, [])


def test_start_failure_with_never_is_fatal():
    state, _ = run(lc.Lifecycle(), spec(RestartPolicy.NEVER), lc.StartRequested(0), lc.StartFailed(0, "ENOENT"))
    assert state.state is lc.State.FATAL and state.fatal_reason == "could not start: ENOENT"


def test_unexpected_events_change_nothing():
    s = spec()
    idle = lc.Lifecycle()
    for event in (lc.Started(0), lc.Exited(0, True), lc.BackoffElapsed(0), lc.StopRequested(0)):
        assert lc.step(idle, s, event) == (idle, [])
