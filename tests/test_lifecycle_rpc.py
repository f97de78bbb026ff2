"""Child lifecycle through the real server: exits, signals, stop escalation, restarts, FATAL."""

from __future__ import annotations

import os
import pathlib
import signal
import time

import grpc
import pytest

from supervisor.v1 import supervisor_pb2 as pb

from conftest import Follower, process_gone, spawn, wait_for, wait_state, zoo


def test_seed01_child_writing_1mib_to_stderr_with_no_reader_runs_to_completion(stub):
    """Seed 01: a piped stderr nobody reads must never freeze the child."""
    spawn(stub, "flood", zoo("flood-stderr", str(1 << 20)))
    info = wait_state(stub, "flood", pb.CHILD_STATE_EXITED)
    assert info.last_exit.exited and info.last_exit.code == 0
    assert info.stderr_lines == (1 << 20) // 100


def test_exit_code_is_reported(stub):
    spawn(stub, "three", zoo("exit", "3"))
    info = wait_state(stub, "three", pb.CHILD_STATE_EXITED)
    assert info.last_exit.exited and info.last_exit.code == 3
    assert info.last_exit.description == "exited with code 3"
    assert not info.last_exit.requested


def test_death_by_signal_from_outside_is_reported(stub):
    info = spawn(stub, "victim", zoo("term-fast"))
    os.kill(info.pid, signal.SIGKILL)
    info = wait_state(stub, "victim", pb.CHILD_STATE_EXITED)
    assert not info.last_exit.exited
    assert info.last_exit.signal == signal.SIGKILL and info.last_exit.signal_name == "SIGKILL"
    assert info.last_exit.description == "killed by SIGKILL"


def test_sigterm_ignored_is_sigkilled_after_grace_with_its_grandchild(stub, tmp_path: pathlib.Path):
    pidfile = tmp_path / "pids"
    spawn(stub, "stubborn", zoo("ignore-term", str(pidfile)), stop_grace_seconds=0.5)
    wait_for(pidfile.exists, what="the pid file")
    leader, grandchild = map(int, pidfile.read_text().split())
    reply = stub.Stop(pb.StopRequest(name="stubborn"), timeout=20)
    assert reply.exit.killed_after_grace and reply.exit.signal == signal.SIGKILL
    assert reply.exit.requested and reply.exit.pid == leader
    assert "after 0.5s grace" in reply.exit.description
    assert reply.child.state == pb.CHILD_STATE_STOPPED
    wait_for(lambda: process_gone(grandchild), what="the grandchild to die")


def test_stop_returns_as_soon_as_child_exits_not_after_the_grace(stub):
    spawn(stub, "polite", zoo("term-fast"), stop_grace_seconds=30)
    wait_for(lambda: stub.Health(pb.HealthRequest(name="polite")).children[0].stdout_lines == 1)
    began = time.monotonic()
    reply = stub.Stop(pb.StopRequest(name="polite"), timeout=20)
    assert time.monotonic() - began < 10, "Stop waited for the grace although the child had exited"
    assert reply.exit.exited and reply.exit.code == 0 and not reply.exit.killed_after_grace


def test_a_frozen_child_is_continued_after_the_stop_signal_so_it_can_exit_cleanly(stub):
    # A SIGSTOPped process cannot act on SIGTERM; without a SIGCONT it waits out the whole grace and is SIGKILLed.
    child = spawn(stub, "frozen", zoo("term-fast"), stop_grace_seconds=60)
    wait_for(lambda: stub.Health(pb.HealthRequest(name="frozen")).children[0].stdout_lines == 1)
    os.kill(child.pid, signal.SIGSTOP)
    wait_for(lambda: _proc_state(child.pid) == "T", what="the child to be stopped")
    reply = stub.Stop(pb.StopRequest(name="frozen"), timeout=30)
    assert reply.exit.exited and reply.exit.code == 0 and not reply.exit.killed_after_grace


def _proc_state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rpartition(")")[2].split()[0]


def test_restart_with_backoff_is_seen_in_events(stub):
    spawn(
        stub, "crashy", zoo("exit", "1"),
        restart=pb.RESTART_POLICY_ON_FAILURE,
        backoff=pb.Backoff(initial_seconds=0.05, multiplier=2, max_seconds=1),
        flap_limit=pb.FlapLimit(max_restarts=0),
    )
    follower = Follower(stub, pb.StreamRequest(name="crashy", from_seq=1, follow=True))
    follower.wait_event(pb.Event.KIND_RESTARTING, count=3)
    follower.cancel()
    restarting = [e for e in follower.events() if e.kind == pb.Event.KIND_RESTARTING]
    assert [e.restart_in_seconds for e in restarting[:3]] == pytest.approx([0.05, 0.1, 0.2])
    kinds = [e.kind for e in follower.events()][:6]
    assert kinds == [pb.Event.KIND_STARTED, pb.Event.KIND_EXITED, pb.Event.KIND_RESTARTING] * 2
    started = [e for e in follower.events() if e.kind == pb.Event.KIND_STARTED]
    assert [e.generation for e in started[:3]] == [1, 2, 3]
    assert stub.Stop(pb.StopRequest(name="crashy"), timeout=10).child.state == pb.CHILD_STATE_STOPPED


def test_flap_limit_reaches_fatal_and_restart_brings_it_back(stub):
    spawn(
        stub, "flappy", zoo("exit", "2"),
        restart=pb.RESTART_POLICY_ALWAYS,
        backoff=pb.Backoff(initial_seconds=0.01, max_seconds=0.01),
        flap_limit=pb.FlapLimit(max_restarts=2, window_seconds=60),
    )
    info = wait_state(stub, "flappy", pb.CHILD_STATE_FATAL)
    assert info.fatal_reason.startswith("flapping: 3 restarts within 60s")
    assert info.restart_count == 2 and info.generation == 3
    listed = stub.List(pb.ListRequest()).children[0]
    assert listed.state == pb.CHILD_STATE_FATAL and listed.fatal_reason == info.fatal_reason
    events = [m.event for m in stub.Stream(pb.StreamRequest(name="flappy"), timeout=10) if m.HasField("event")]
    assert events[-1].kind == pb.Event.KIND_FATAL and "flapping" in events[-1].message
    reply = stub.Restart(pb.RestartRequest(name="flappy"), timeout=10)
    assert reply.child.generation == 4 and reply.child.restart_count == 0


def test_never_policy_leaves_the_child_exited(stub):
    spawn(stub, "once", zoo("exit", "1"), restart=pb.RESTART_POLICY_NEVER)
    info = wait_state(stub, "once", pb.CHILD_STATE_EXITED)
    assert info.generation == 1 and info.restart_count == 0


def test_missing_program_is_invalid_argument_naming_argv0(stub):
    with pytest.raises(grpc.RpcError) as err:
        spawn(stub, "ghost", ["/nonexistent/program"])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "spec.argv[0]: must be an executable file, got '/nonexistent/program'"
    with pytest.raises(grpc.RpcError) as err2:
        spawn(stub, "ghost2", ["no-such-program-anywhere"])
    assert err2.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err2.value.details().startswith("spec.argv[0]: no executable of that name in PATH")


def test_unstartable_program_with_never_policy_is_fatal_with_reason(stub, tmp_path):
    script = tmp_path / "bad-interpreter"
    script.write_text("#!/nonexistent/interpreter\necho hi\n")
    script.chmod(0o755)
    info = spawn(stub, "noexec", [str(script)])
    assert info.state == pb.CHILD_STATE_FATAL
    # The missing interpreter is named, not the script (which exists).
    assert info.fatal_reason.startswith("could not start: interpreter '/nonexistent/interpreter'")
    assert "#! line" in info.fatal_reason


def test_bad_fields_are_invalid_argument_naming_the_field(stub):
    cases = {
        "spec.stop_grace_seconds: must be > 0, got -1.0": dict(stop_grace_seconds=-1),
        "spec.name:": dict(name="bad name!"),
        "spec.argv:": dict(argv=[]),
        "spec.ring_bytes:": dict(ring_bytes=10),
        "spec.stop_signal:": dict(stop_signal=999),
    }
    for message, fields in cases.items():
        spec = dict(name="x", argv=zoo("exit", "0"))
        spec.update(fields)
        with pytest.raises(grpc.RpcError) as err:
            stub.Spawn(pb.SpawnRequest(spec=pb.ChildSpec(**spec)), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, message
        assert err.value.details().startswith(message), err.value.details()


def test_duplicate_name_is_already_exists_unless_replace(stub):
    first = spawn(stub, "dup", zoo("term-fast"))
    with pytest.raises(grpc.RpcError) as err:
        spawn(stub, "dup", zoo("term-fast"))
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    second = stub.Spawn(
        pb.SpawnRequest(spec=pb.ChildSpec(name="dup", argv=zoo("term-fast")), replace=True), timeout=20
    ).child
    assert second.pid != first.pid and second.state == pb.CHILD_STATE_RUNNING


def test_unknown_child_is_not_found_everywhere(stub):
    calls = [
        lambda: stub.Stop(pb.StopRequest(name="nope"), timeout=5),
        lambda: stub.Restart(pb.RestartRequest(name="nope"), timeout=5),
        lambda: stub.Remove(pb.RemoveRequest(name="nope"), timeout=5),
        lambda: stub.Signal(pb.SignalRequest(name="nope", signal=15), timeout=5),
        lambda: stub.Health(pb.HealthRequest(name="nope"), timeout=5),
        lambda: list(stub.Stream(pb.StreamRequest(name="nope"), timeout=5)),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        assert err.value.details() == "no child named 'nope'"


def test_signal_reaches_the_process(stub):
    spawn(stub, "sig", zoo("term-fast"))
    wait_for(lambda: stub.Health(pb.HealthRequest(name="sig")).children[0].stdout_lines == 1)
    stub.Signal(pb.SignalRequest(name="sig", signal=signal.SIGTERM), timeout=5)
    info = wait_state(stub, "sig", pb.CHILD_STATE_EXITED)
    assert info.last_exit.exited and info.last_exit.code == 0 and not info.last_exit.requested
    with pytest.raises(grpc.RpcError) as err:
        stub.Signal(pb.SignalRequest(name="sig", signal=signal.SIGTERM), timeout=5)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_health_reports_state_pid_generation_uptime(stub):
    info = spawn(stub, "h", zoo("term-fast"))
    health = stub.Health(pb.HealthRequest(), timeout=5)
    (child,) = health.children
    assert child.pid == info.pid and child.generation == 1 and child.state == pb.CHILD_STATE_RUNNING
    assert child.uptime_seconds >= 0 and health.supervisor_uptime_seconds > 0 and health.version


def test_removing_a_slow_child_does_not_hold_up_other_children(stub, tmp_path):
    import threading

    pidfile = tmp_path / "pids"
    spawn(stub, "slow", zoo("ignore-term", str(pidfile)), stop_grace_seconds=5)
    wait_for(pidfile.exists)
    removal = threading.Thread(target=lambda: stub.Remove(pb.RemoveRequest(name="slow"), timeout=30))
    removal.start()
    wait_for(lambda: stub.Health(pb.HealthRequest(name="slow")).children[0].state == pb.CHILD_STATE_STOPPING)
    info = spawn(stub, "quick", zoo("term-fast"))
    assert info.state == pb.CHILD_STATE_RUNNING
    assert removal.is_alive(), "the other child started while the removal still waited out its grace"
    removal.join(30)


def test_running_out_of_file_descriptors_is_a_failed_start_not_an_internal_error(sup, stub):
    import resource

    spawn(stub, "warmup", zoo("exit", "0"))  # every lazily opened fd of supd is open by now
    used = len(os.listdir(f"/proc/{sup.proc.pid}/fd"))
    soft, hard = resource.prlimit(sup.proc.pid, resource.RLIMIT_NOFILE)
    resource.prlimit(sup.proc.pid, resource.RLIMIT_NOFILE, (used + 1, hard))
    info = spawn(stub, "starved", zoo("exit", "0"))
    assert info.state == pb.CHILD_STATE_FATAL
    # Which descriptor runs out first (the pipes, or the spawn's own) depends on what supd has open: either way
    # it is a failed start that says so, never INTERNAL.
    assert info.fatal_reason.startswith("could not start: ") and info.fatal_reason.endswith(": Too many open files")
    resource.prlimit(sup.proc.pid, resource.RLIMIT_NOFILE, (soft, hard))
    assert stub.Restart(pb.RestartRequest(name="starved"), timeout=10).child.generation == 2
