"""supd as a process: one per socket, clear start-up errors, config at boot, clean shutdown."""

from __future__ import annotations

import pathlib
import signal
import subprocess
import sys

from supervisor.testing import running_supervisor, supd_command
from supervisor.v1 import supervisor_pb2 as pb
from supervisor.v1 import supervisor_pb2_grpc as pb_grpc

from conftest import Follower, process_gone, spawn, wait_for, wait_state, zoo


def run_supd(*args: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*supd_command(), *args], capture_output=True, text=True, timeout=timeout, check=False)


def test_second_supd_on_the_same_socket_is_refused_while_the_first_runs_on(sup, stub):
    spawn(stub, "keep", zoo("term-fast"))
    second = run_supd("--socket", str(sup.socket))
    assert second.returncode == 3
    assert f"another supd (pid {sup.proc.pid}) is serving {sup.socket}" in second.stderr
    assert "Traceback" not in second.stderr
    assert [c.spec.name for c in stub.List(pb.ListRequest(), timeout=5).children] == ["keep"]


def test_stale_socket_of_a_dead_supd_is_replaced(tmp_path: pathlib.Path):
    with running_supervisor(tmp_path) as first:
        first.proc.kill()
        first.proc.wait()
        assert first.socket.exists(), "SIGKILL leaves the socket file behind"
    with running_supervisor(tmp_path) as second, second.channel() as channel:
        assert pb_grpc.SupervisorStub(channel).List(pb.ListRequest(), timeout=5).children == []
        assert "server.socket.stale_replaced" in second.stderr_text()


def test_socket_directory_is_private(sup):
    assert (sup.socket.parent.stat().st_mode & 0o777) == 0o700
    assert (sup.socket.stat().st_mode & 0o777) == 0o600


def test_socket_path_too_long_is_a_clear_error(tmp_path: pathlib.Path):
    path = tmp_path / ("d" * 120) / "supd.sock"
    result = run_supd("--socket", str(path))
    assert result.returncode == 3
    assert "the kernel allows at most 107" in result.stderr and "Traceback" not in result.stderr


def test_bad_config_names_file_and_field(tmp_path: pathlib.Path):
    config = tmp_path / "supd.toml"
    config.write_text('[children.web]\nargv = ["sh"]\nstop_grace_seconds = -1\n')
    result = run_supd("--socket", str(tmp_path / "s.sock"), "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"supd: {config}:3: children.web: spec.stop_grace_seconds: must be > 0, got -1.0"
    )


def test_children_from_config_start_at_boot(tmp_path: pathlib.Path):
    config = tmp_path / "supd.toml"
    argv = ", ".join(f'"{a}"' for a in zoo("term-fast"))
    config.write_text(f'[children.boot]\nargv = [{argv}]\nrestart = "always"\nstop_signal = "TERM"\n')
    with running_supervisor(tmp_path, ["--config", str(config)]) as handle, handle.channel() as channel:
        stub = pb_grpc.SupervisorStub(channel)
        info = wait_state(stub, "boot", pb.CHILD_STATE_RUNNING)
        assert info.spec.restart == pb.RESTART_POLICY_ALWAYS and info.spec.stop_signal == signal.SIGTERM


def test_sigterm_stops_children_delivers_streams_and_exits_0(tmp_path: pathlib.Path):
    pidfile = tmp_path / "pids"
    with running_supervisor(tmp_path) as handle, handle.channel() as channel:
        stub = pb_grpc.SupervisorStub(channel)
        spawn(stub, "polite", zoo("term-fast"))
        spawn(stub, "stubborn", zoo("ignore-term", str(pidfile)), stop_grace_seconds=0.5)
        wait_for(pidfile.exists)
        grandchild = int(pidfile.read_text().split()[1])
        followers = {
            n: Follower(stub, pb.StreamRequest(name=n, from_seq=1, follow=True)) for n in ("polite", "stubborn")
        }
        wait_for(lambda: all(f.lines() for f in followers.values()), what="both ready lines")
        handle.proc.send_signal(signal.SIGTERM)
        assert handle.proc.wait(20) == 0
        for name, follower in followers.items():
            assert follower.done.wait(10), name
            kinds = [e.kind for e in follower.events()]
            assert kinds[-3:] == [pb.Event.KIND_EXITED, pb.Event.KIND_STOPPED, pb.Event.KIND_SHUTDOWN], name
        exit_event = next(e for e in followers["stubborn"].events() if e.kind == pb.Event.KIND_EXITED)
        assert exit_event.exit.killed_after_grace
        wait_for(lambda: process_gone(grandchild), what="the grandchild to die")
        assert "supd.stopped" in handle.stderr_text()
        assert not handle.socket.exists(), "supd removes its socket on the way out"


def test_generated_code_is_up_to_date(tmp_path: pathlib.Path):
    root = pathlib.Path(__file__).resolve().parent.parent
    script = root / "scripts" / "gen_proto.py"
    subprocess.run([sys.executable, str(script), "--out", str(tmp_path)], check=True)
    for suffix in ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi"):
        name = "supervisor" + suffix
        fresh = (tmp_path / "supervisor" / "v1" / name).read_text()
        committed = (root / "supervisor" / "v1" / name).read_text()
        assert fresh == committed, f"supervisor/v1/{name} is stale: run python scripts/gen_proto.py"


def test_standard_health_and_reflection_are_served(sup):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    with sup.channel() as channel:
        health = health_pb2_grpc.HealthStub(channel)
        status = health.Check(health_pb2.HealthCheckRequest(service="supervisor.v1.Supervisor"), timeout=5)
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        refl = reflection_pb2_grpc.ServerReflectionStub(channel)
        ask = reflection_pb2.ServerReflectionRequest(list_services="")
        reply = next(refl.ServerReflectionInfo(iter([ask])))
        names = {s.name for s in reply.list_services_response.service}
        assert "supervisor.v1.Supervisor" in names and "grpc.health.v1.Health" in names


def test_a_second_signal_during_shutdown_means_now(tmp_path: pathlib.Path):
    pidfile = tmp_path / "pids"
    with running_supervisor(tmp_path) as handle, handle.channel() as channel:
        stub = pb_grpc.SupervisorStub(channel)
        spawn(stub, "stubborn", zoo("ignore-term", str(pidfile)), stop_grace_seconds=60)
        wait_for(pidfile.exists)
        leader, grandchild = map(int, pidfile.read_text().split())
        handle.proc.send_signal(signal.SIGTERM)
        wait_for(lambda: "supd.stopping" in handle.stderr_text(), what="supd to begin stopping")
        handle.proc.send_signal(signal.SIGINT)
        assert handle.proc.wait(20) == 1
        assert "supd.stopping.now" in handle.stderr_text()
        wait_for(lambda: process_gone(leader) and process_gone(grandchild), what="the group to be killed")


def test_a_store_that_is_not_a_database_stops_supd_with_exit_5_and_is_left_alone(tmp_path: pathlib.Path):
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    (state / "supd.db").write_bytes(b"not a database, " * 100)
    before = (state / "supd.db").read_bytes()
    result = run_supd("--socket", str(tmp_path / "run" / "s.sock"), "--state-dir", str(state))
    assert result.returncode == 5, result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("supd: ")]
    assert str(state / "supd.db") in line and "Traceback" not in result.stderr
    assert (state / "supd.db").read_bytes() == before, "a store supd cannot read is never replaced"


def test_a_second_supd_on_the_same_store_is_refused(sup, tmp_path: pathlib.Path):
    result = run_supd("--socket", str(tmp_path / "other" / "s.sock"), "--state-dir", str(tmp_path / "state"))
    assert result.returncode == 5, result.stderr
    assert str(sup.proc.pid) in result.stderr and "Traceback" not in result.stderr


def test_children_start_by_start_order_and_stop_in_reverse(tmp_path: pathlib.Path):
    log = tmp_path / "order.log"

    def child(name: str, order: int) -> str:
        script = (
            f"echo start {name} >> {log}; trap 'echo stop {name} >> {log}; exit 0' TERM;"
            " while :; do sleep 0.05; done"
        )
        return f'[children.{name}]\nargv = ["/bin/sh", "-c", "{script}"]\nstart_order = {order}\n'

    config = tmp_path / "supd.toml"
    config.write_text(child("db", -1) + child("app", 0) + child("proxy", 5) + child("web", 0))
    with running_supervisor(tmp_path, ["--config", str(config)]) as sup:
        wait_for(lambda: log.exists() and log.read_text().count("start") == 4, 20, what="four starts")
        sup.proc.send_signal(signal.SIGTERM)
        assert sup.proc.wait(30) == 0
    lines = log.read_text().split("\n")
    starts = [line.split()[1] for line in lines if line.startswith("start")]
    stops = [line.split()[1] for line in lines if line.startswith("stop")]
    assert starts[0] == "db" and set(starts[1:3]) == {"app", "web"} and starts[3] == "proxy"
    assert stops[0] == "proxy" and set(stops[1:3]) == {"app", "web"} and stops[3] == "db"
