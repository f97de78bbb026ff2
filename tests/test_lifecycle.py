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


def running(s: ChildSpec, now: float = 0) -> lc.Lifecycle:
    state, actions = run(lc.Lifecycle(), s, lc.StartRequested(now), lc.Prepared(now), lc.Started(now))
    assert state.state is lc.State.RUNNING and actions == [lc.Prepare(), lc.Spawn()]
    return state


def test_start_runs_then_clean_exit_under_on_failure_is_exited():
    state, actions = lc.step(running(spec()), spec(), lc.Exited(5, failed=False))
    assert state.state is lc.State.EXITED and actions == []


def test_failures_back_off_exponentially_and_cap():
    s = spec(limit=0)
    state, _ = run(lc.Lifecycle(), s, lc.StartRequested(0), lc.Started(0))
    delays = []
    now = 0.0
    for _ in range(6):
        now += 1
        state, actions = lc.step(state, s, lc.Exited(now, failed=True))
        delays.append(next(a.delay for a in actions if isinstance(a, lc.ScheduleRestart)))
        state, _ = run(state, s, lc.BackoffElapsed(now), lc.Prepared(now), lc.Started(now))
    assert delays == [1, 2, 4, 8, 8, 8]
    assert state.restart_count == 6


def test_a_stable_run_resets_the_backoff():
    s = spec(limit=0)
    state, _ = run(running(s), s, lc.Exited(1, True), lc.BackoffElapsed(2), lc.Prepared(2), lc.Started(2),
                   lc.Exited(3, True), lc.BackoffElapsed(5), lc.Prepared(5), lc.Started(5))
    assert state.streak == 2
    state, actions = lc.step(state, s, lc.Exited(500, True))
    assert lc.ScheduleRestart(1) in actions and state.streak == 1


def test_flap_limit_is_fatal_with_a_reason():
    s = spec(policy=RestartPolicy.ALWAYS, limit=2)
    state, _ = run(lc.Lifecycle(), s, lc.StartRequested(0), lc.Started(0))
    for t in (1, 2):
        state, _ = run(state, s, lc.Exited(t, False), lc.BackoffElapsed(t), lc.Prepared(t), lc.Started(t))
    state, actions = lc.step(state, s, lc.Exited(3, False))
    assert state.state is lc.State.FATAL and state.fatal_reason.startswith("flapping: 3 restarts within 100s")
    assert isinstance(actions[0], lc.Announce) and actions[0].kind == "fatal"
    state, actions = lc.step(state, s, lc.RestartRequested(4, 1))
    assert state.state is lc.State.STARTING and state.restart_count == 0 and actions == [lc.Prepare()]
    assert state.recent_restarts == ()  # out of FATAL: afresh


def test_restarts_outside_the_window_do_not_count():
    s = spec(policy=RestartPolicy.ALWAYS, limit=2)
    state, _ = run(lc.Lifecycle(), s, lc.StartRequested(0), lc.Started(0))
    for t in (1, 150, 300, 450):
        state, _ = run(state, s, lc.Exited(t, False), lc.BackoffElapsed(t), lc.Prepared(t), lc.Started(t))
    assert state.state is lc.State.RUNNING


def test_stop_paths():
    s = spec()
    live = running(s)
    stopping, actions = lc.step(live, s, lc.StopRequested(1, 2.5))
    assert stopping.state is lc.State.STOPPING and actions == [lc.Terminate(2.5, "stop")]
    stopped, actions = lc.step(stopping, s, lc.Exited(2, True))
    assert stopped.state is lc.State.STOPPED and actions[0] == lc.Announce("stopped", "stopped on request")
    backoff, _ = lc.step(live, s, lc.Exited(1, True))
    stopped2, actions = lc.step(backoff, s, lc.StopRequested(1.5, 1))
    assert stopped2.state is lc.State.STOPPED and lc.CancelRestart() in actions
    assert lc.step(stopped, s, lc.StopRequested(3, 1)) == (stopped, [])


def test_start_failure_with_never_is_fatal():
    state, _ = run(lc.Lifecycle(), spec(RestartPolicy.NEVER), lc.StartRequested(0), lc.StartFailed(0, "ENOENT"))
    assert state.state is lc.State.FATAL and state.fatal_reason == "could not start: ENOENT"


def test_unexpected_events_change_nothing():
    s = spec()
    idle = lc.Lifecycle()
    for event in (lc.Started(0), lc.Exited(0, True), lc.BackoffElapsed(0), lc.StopRequested(0, 1), lc.Prepared(0)):
        assert lc.step(idle, s, event) == (idle, [])


def test_an_exit_during_starting_follows_the_restart_policy():
    s = spec()
    starting, _ = run(lc.Lifecycle(), s, lc.StartRequested(0))
    assert starting.state is lc.State.STARTING
    state, actions = lc.step(starting, s, lc.Exited(0.1, failed=True))
    assert state.state is lc.State.BACKOFF and any(isinstance(a, lc.ScheduleRestart) for a in actions)


def test_restart_of_a_running_child_stops_then_starts_and_keeps_the_flap_history():
    s = spec(policy=RestartPolicy.ALWAYS, limit=5)
    state = running(s)
    state, _ = run(state, s, lc.Exited(1, True), lc.BackoffElapsed(2), lc.Prepared(2), lc.Started(2))
    history = state.recent_restarts
    assert len(history) == 1
    stopping, actions = lc.step(state, s, lc.RestartRequested(3, 4))
    assert stopping.state is lc.State.STOPPING and stopping.then is lc.Then.START
    assert actions == [lc.Terminate(4, "restart")]
    starting, actions = lc.step(stopping, s, lc.Exited(4, True))
    assert starting.state is lc.State.STARTING and actions == [lc.Prepare()]
    assert starting.recent_restarts == history and starting.restart_count == 1


def test_restart_while_idle_starts_and_keeps_history():
    s = spec()
    exited, _ = lc.step(running(s), s, lc.Exited(1, False))
    state, actions = lc.step(exited, s, lc.RestartRequested(2, 1))
    assert state.state is lc.State.STARTING and actions == [lc.Prepare()]
    backoff, _ = lc.step(running(s), s, lc.Exited(1, True))
    state, actions = lc.step(backoff, s, lc.RestartRequested(2, 1))
    assert actions == [lc.CancelRestart(), lc.Prepare()] and state.restart_count == 1


def test_a_stop_after_a_restart_request_wins_and_a_restart_after_a_stop_wins():
    s = spec()
    stopping, _ = lc.step(running(s), s, lc.RestartRequested(1, 1))
    stopping, actions = lc.step(stopping, s, lc.StopRequested(1.1, 1))
    assert stopping.then is lc.Then.STOP and actions == []
    stopped, _ = lc.step(stopping, s, lc.Exited(2, True))
    assert stopped.state is lc.State.STOPPED
    stopping, _ = lc.step(running(s), s, lc.StopRequested(1, 1))
    stopping, _ = lc.step(stopping, s, lc.RestartRequested(1.1, 1))
    starting, actions = lc.step(stopping, s, lc.Exited(2, True))
    assert starting.state is lc.State.STARTING and actions == [lc.Prepare()]


def test_start_of_a_live_child_is_refused():
    s = spec()
    _, actions = lc.step(running(s), s, lc.StartRequested(1))
    assert len(actions) == 1 and isinstance(actions[0], lc.Refuse) and "running" in actions[0].message


def test_remove_of_a_running_child_stops_it_then_removes():
    s = spec()
    stopping, actions = lc.step(running(s), s, lc.RemoveRequested(1, 3))
    assert stopping.then is lc.Then.REMOVE and actions == [lc.Terminate(3, "remove")]
    removed, actions = lc.step(stopping, s, lc.Exited(2, True))
    assert removed.state is lc.State.REMOVED
    assert actions == [lc.Announce("stopped", "stopped on request"), lc.CloseOutput("remove", "child removed")]


def test_remove_of_an_idle_child_is_immediate_and_cancels_a_restart():
    s = spec()
    backoff, _ = lc.step(running(s), s, lc.Exited(1, True))
    removed, actions = lc.step(backoff, s, lc.RemoveRequested(2, 1))
    assert removed.state is lc.State.REMOVED
    assert actions == [lc.CancelRestart(), lc.CloseOutput("remove", "child removed")]


def test_removed_is_terminal_and_refuses_every_request():
    s = spec()
    removed, _ = lc.step(lc.Lifecycle(), s, lc.RemoveRequested(0, 1))
    for request in (
        lc.StartRequested(1), lc.RestartRequested(1, 1), lc.StopRequested(1, 1),
        lc.RemoveRequested(1, 1), lc.ShutdownRequested(1, 1),
    ):
        state, actions = lc.step(removed, s, request)
        assert state is removed and len(actions) == 1 and isinstance(actions[0], lc.Refuse), request
        assert not actions[0].unavailable and "removed" in actions[0].message
    for event in (lc.Exited(1, True), lc.BackoffElapsed(1), lc.Started(1), lc.Prepared(1)):
        assert lc.step(removed, s, event) == (removed, [])


def test_restart_racing_remove_is_refused_not_lost():
    s = spec()
    stopping, _ = lc.step(running(s), s, lc.RemoveRequested(1, 1))
    state, actions = lc.step(stopping, s, lc.RestartRequested(1.2, 1))
    assert state == stopping and isinstance(actions[0], lc.Refuse) and "being removed" in actions[0].message


def test_shutdown_shortens_a_stop_and_refuses_later_starts_as_unavailable():
    s = spec()
    stopping, _ = lc.step(running(s), s, lc.StopRequested(1, 12))
    shutting, actions = lc.step(stopping, s, lc.ShutdownRequested(1.5, 2))
    assert shutting.then is lc.Then.SHUTDOWN and actions == [lc.Terminate(2, "shutdown")]
    for request in (lc.RestartRequested(1.7, 1), lc.StartRequested(1.7), lc.StopRequested(1.7, 1)):
        state, actions = lc.step(shutting, s, request)
        assert state == shutting and isinstance(actions[0], lc.Refuse) and actions[0].unavailable
    done, actions = lc.step(shutting, s, lc.Exited(2, True))
    assert done.state is lc.State.REMOVED and actions[-1] == lc.CloseOutput("shutdown", "supd is shutting down")


def test_readiness_is_tracked_only_while_running():
    s = spec()
    live = running(s)
    ready, _ = lc.step(live, s, lc.Ready(1))
    assert ready.ready
    not_ready, _ = lc.step(ready, s, lc.NotReady(2, "probe failed"))
    assert not not_ready.ready and not_ready.not_ready_reason == "probe failed"
    assert lc.step(lc.Lifecycle(), s, lc.Ready(1)) == (lc.Lifecycle(), [])
    stopping, _ = lc.step(ready, s, lc.StopRequested(3, 1))
    assert not stopping.ready


def test_unhealthy_stops_then_restarts_like_a_failed_exit():
    s = spec(RestartPolicy.NEVER)
    state, actions = lc.step(running(spec()), spec(), lc.Unhealthy(5, 2.0, "liveness probe failed 3 times: HTTP 500"))
    assert state.state is lc.State.STOPPING and state.then is lc.Then.UNHEALTHY and not state.ready
    assert actions == [lc.Terminate(2.0, "unhealthy")]
    state, actions = lc.step(state, spec(), lc.Exited(6, failed=False))  # even a clean exit counts as a failure
    assert state.state is lc.State.BACKOFF and state.restart_count == 1
    assert [a.message for a in actions if isinstance(a, lc.Announce)] == [
        "restarted: liveness probe failed 3 times: HTTP 500; restarting in 1s"
    ]
    # Under restart=never the unhealthy child stays down, as the kubelet's would.
    state, _ = run(running(s), s, lc.Unhealthy(5, 2.0, "x"), lc.Exited(6, failed=True))
    assert state.state is lc.State.EXITED


def test_a_stop_or_restart_during_an_unhealthy_stop_wins():
    unhealthy, _ = lc.step(running(spec()), spec(), lc.Unhealthy(5, 2.0, "x"))
    stopped, _ = run(unhealthy, spec(), lc.StopRequested(5, 1.0), lc.Exited(6, failed=True))
    assert stopped.state is lc.State.STOPPED and stopped.restart_count == 0
    restarted, actions = run(unhealthy, spec(), lc.RestartRequested(5, 1.0), lc.Exited(6, failed=True))
    assert restarted.state is lc.State.STARTING and actions[-1] == lc.Prepare()


def test_unhealthy_counts_towards_the_flap_limit():
    s = spec(limit=2)
    state = running(s)
    now = 0.0
    for _ in range(3):
        now += 1
        state, _ = run(state, s, lc.Unhealthy(now, 1.0, "liveness"), lc.Exited(now, failed=False))
        if state.state is lc.State.FATAL:
            break
        state, _ = run(state, s, lc.BackoffElapsed(now), lc.Prepared(now), lc.Started(now))
    assert state.state is lc.State.FATAL and "last restarted: liveness" in state.fatal_reason


def test_probe_verdicts_outside_running_change_nothing():
    stopped = lc.Lifecycle()
    assert lc.step(stopped, spec(), lc.Unhealthy(1, 1.0, "x")) == (stopped, [])
    assert lc.step(stopped, spec(), lc.Ready(1)) == (stopped, [])
