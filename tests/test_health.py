"""Health end to end: probes against children that are real servers, restarts, readiness, grpc.health.v1.

The children are ``probe_servers.py`` (an HTTP server whose /healthz can be told
to fail or hang, a grpc.health.v1 server toggled by SIGUSR1, a TCP server), run
by a real supd; clients talk to supd and to grpc.health.v1 over its socket.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import urllib.request
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from supervisor.testing import SupervisorProcess, free_port
from supervisor.v1 import supervisor_pb2 as pb
from supervisor.v1 import supervisor_pb2_grpc as pb_grpc

from conftest import Follower, spawn, wait_for

SERVERS = str(pathlib.Path(__file__).with_name("probe_servers.py"))
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING



def server(kind: str, port: int, *extra: str) -> list[str]:
    return [sys.executable, SERVERS, kind, "--port", str(port), *extra]


def fast(**fields: Any) -> pb.Probe:
    """A probe every 0.1 s with a short timeout: tests measure behaviour, not the defaults."""
    fields.setdefault("period_seconds", 0.1)
    fields.setdefault("timeout_seconds", 0.5)
    return pb.Probe(**fields)


def info(stub: pb_grpc.SupervisorStub, name: str) -> pb.ChildInfo:
    return stub.Health(pb.HealthRequest(name=name), timeout=5).children[0]


def control(port: int, what: str) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/control/{what}", method="POST")
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert answer.status == 200


def probe(child: pb.ChildInfo, name: str) -> pb.ProbeStatus:
    return next(p for p in child.probes if p.probe == name)


def test_a_child_that_stops_answering_its_health_url_is_restarted_and_the_event_says_why(
    stub: pb_grpc.SupervisorStub,
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/healthz"
    spawn(
        stub, "web", server("http", port), restart=pb.RESTART_POLICY_ALWAYS,
        backoff=pb.Backoff(initial_seconds=0.05), stop_grace_seconds=2,
        # Without the startup probe, a server slower to bind than two liveness periods would be restarted in a loop.
        startup_probe=fast(http=pb.HttpAction(url=url), failure_threshold=200),
        liveness_probe=fast(http=pb.HttpAction(url=url), failure_threshold=2),
    )
    first = wait_for(
        lambda: (c := info(stub, "web")).health == pb.CHILD_HEALTH_READY and probe(c, "liveness").runs and c,
        20, what="a first liveness probe",
    )
    assert first.health == pb.CHILD_HEALTH_READY, "without a readiness probe, a running child is ready"
    assert probe(first, "liveness").success and probe(first, "liveness").message == "HTTP 200"
    follower = Follower(stub, pb.StreamRequest(name="web", follow=True, tail=0))
    control(port, "fail")
    (unhealthy,) = [e for e in follower.wait_event(pb.Event.KIND_UNHEALTHY) if e.kind == pb.Event.KIND_UNHEALTHY]
    assert unhealthy.probe == "liveness" and "failed 2 times in a row: HTTP 500" in unhealthy.message
    assert "told to fail" in unhealthy.message, "the body of the failing answer reaches the event"
    again = wait_for(
        lambda: (c := info(stub, "web")).generation > first.generation and c.health == pb.CHILD_HEALTH_READY and c,
        20, what="the restarted child to be ready",
    )
    assert again.restart_count == first.restart_count + 1, "a liveness restart counts like any other"
    assert again.last_exit.requested is False
    follower.cancel()


def test_a_frozen_child_is_restarted_by_a_probe_that_times_out(stub: pb_grpc.SupervisorStub) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/healthz"
    spawn(
        stub, "frozen", server("http", port), restart=pb.RESTART_POLICY_ALWAYS,
        backoff=pb.Backoff(initial_seconds=0.05), stop_grace_seconds=0.5,
        startup_probe=fast(http=pb.HttpAction(url=url), failure_threshold=200),
        liveness_probe=fast(http=pb.HttpAction(url=url), timeout_seconds=0.3, failure_threshold=2),
    )
    first = wait_for(
        lambda: (c := info(stub, "frozen")).health == pb.CHILD_HEALTH_READY and probe(c, "liveness").runs and c,
        20, what="a liveness probe to pass",
    )
    os.kill(first.pid, signal.SIGSTOP)
    again = wait_for(
        lambda: (c := info(stub, "frozen")).generation > first.generation and c.health == pb.CHILD_HEALTH_READY and c,
        20, what="the frozen child to be replaced",
    )
    # SIGCONT follows the stop signal, so the server may exit on SIGTERM by itself, or by it, or by SIGKILL.
    ended = again.last_exit.exited or again.last_exit.signal in (signal.SIGTERM, signal.SIGKILL)
    assert ended and not again.last_exit.requested, again.last_exit
    stream = stub.Stream(pb.StreamRequest(name="frozen"), timeout=10)
    reasons = [m.event.message for m in stream if m.HasField("event") and m.event.kind == pb.Event.KIND_UNHEALTHY]
    assert reasons and "timed out after 0.3s" in reasons[0]


def test_readiness_through_grpc_health_for_supd_and_for_a_named_child(
    stub: pb_grpc.SupervisorStub, sup: SupervisorProcess
) -> None:
    port = free_port()
    spawn(stub, "api", server("grpc", port), readiness_probe=fast(grpc=pb.GrpcAction(port=port)))
    health = health_pb2_grpc.HealthStub(sup.channel())
    watch = health.Watch(health_pb2.HealthCheckRequest(service="api"), timeout=30)
    seen: list[int] = []

    def next_status(wanted: int) -> None:
        for reply in watch:
            seen.append(reply.status)
            if reply.status == wanted:
                return
        raise AssertionError(f"the watch ended before {wanted}: {seen}")

    next_status(SERVING)
    assert health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status == SERVING
    pid = info(stub, "api").pid
    os.kill(pid, signal.SIGUSR1)  # the server says NOT_SERVING
    next_status(NOT_SERVING)
    child = info(stub, "api")
    assert child.health == pb.CHILD_HEALTH_NOT_READY and "NOT_SERVING" in child.health_reason
    assert health.Check(health_pb2.HealthCheckRequest(service="api"), timeout=5).status == NOT_SERVING
    os.kill(pid, signal.SIGUSR1)
    next_status(SERVING)
    watch.cancel()
    with pytest.raises(grpc.RpcError) as err:
        health.Check(health_pb2.HealthCheckRequest(service="nobody"), timeout=5)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    stub.Remove(pb.RemoveRequest(name="api"), timeout=10)
    gone = health.Watch(health_pb2.HealthCheckRequest(service="api"), timeout=10)
    assert next(iter(gone)).status == health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
    gone.cancel()


def test_grpcurl_watches_a_child_go_not_serving_and_back(stub: pb_grpc.SupervisorStub, sup: SupervisorProcess) -> None:
    grpcurl = pathlib.Path(sys.executable).with_name("grpcurl")
    port = free_port()
    spawn(stub, "api", server("grpc", port), readiness_probe=fast(grpc=pb.GrpcAction(port=port)))
    with subprocess.Popen(
        [str(grpcurl), "-plaintext", "-unix", "-max-time", "60", "-d", '{"service": "api"}', str(sup.socket),
         "grpc.health.v1.Health/Watch"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    ) as watch:
        _watch_with_grpcurl(stub, watch)


def _watch_with_grpcurl(stub: pb_grpc.SupervisorStub, watch: subprocess.Popen[str]) -> None:
    try:
        statuses: list[str] = []

        def until_status(wanted: str) -> None:
            for line in watch.stdout:  # type: ignore[union-attr]
                if '"status"' in line:
                    statuses.append(line.split(":")[1].strip().strip('",'))
                    if statuses[-1] == wanted:
                        return
            raise AssertionError(f"grpcurl's watch ended before {wanted}: {statuses}")

        until_status("SERVING")
        pid = info(stub, "api").pid
        os.kill(pid, signal.SIGUSR1)
        until_status("NOT_SERVING")
        os.kill(pid, signal.SIGUSR1)
        until_status("SERVING")
    finally:
        watch.kill()


def test_grpcurl_sees_a_child_serving(stub: pb_grpc.SupervisorStub, sup: SupervisorProcess) -> None:
    grpcurl = pathlib.Path(sys.executable).with_name("grpcurl")
    port = free_port()
    spawn(stub, "tcpd", server("tcp", port), readiness_probe=fast(tcp=pb.TcpAction(port=port)))
    wait_for(lambda: info(stub, "tcpd").health == pb.CHILD_HEALTH_READY, 20, what="ready")
    result = subprocess.run(
        [str(grpcurl), "-plaintext", "-unix", "-d", '{"service": "tcpd"}', str(sup.socket),
         "grpc.health.v1.Health/Check"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert result.returncode == 0 and '"status": "SERVING"' in result.stdout, result.stderr


def test_a_startup_probe_keeps_a_slow_starter_from_being_killed(stub: pb_grpc.SupervisorStub) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/healthz"
    spawn(
        stub, "slow", server("http", port, "--ready-after", "1.5"), restart=pb.RESTART_POLICY_ALWAYS,
        startup_probe=fast(http=pb.HttpAction(url=url), failure_threshold=60),
        liveness_probe=fast(http=pb.HttpAction(url=url), failure_threshold=1),
    )
    early = info(stub, "slow")
    assert early.health == pb.CHILD_HEALTH_NOT_READY and "startup probe" in early.health_reason
    ready = wait_for(lambda: (c := info(stub, "slow")).health == pb.CHILD_HEALTH_READY and c, 20, what="ready")
    assert ready.generation == 1 and ready.restart_count == 0, "liveness waited for the startup probe"
    assert probe(ready, "startup").consecutive_successes == 1


def test_a_child_that_never_passes_its_startup_probe_is_restarted(stub: pb_grpc.SupervisorStub) -> None:
    spawn(
        stub, "never", ["sleep", "100"], restart=pb.RESTART_POLICY_ALWAYS, backoff=pb.Backoff(initial_seconds=0.05),
        stop_grace_seconds=1,
        startup_probe=fast(exec=pb.ExecAction(argv=["/bin/sh", "-c", "echo still warming up; exit 3"]),
                           failure_threshold=3),
    )
    wait_for(lambda: info(stub, "never").restart_count >= 1, 20, what="a restart after the startup threshold")
    stream = stub.Stream(pb.StreamRequest(name="never"), timeout=10)
    events = [m.event for m in stream if m.HasField("event")]
    unhealthy = [e for e in events if e.kind == pb.Event.KIND_UNHEALTHY]
    assert unhealthy and unhealthy[0].probe == "startup"
    assert "exit 3" in unhealthy[0].message and "still warming up" in unhealthy[0].message


def test_an_exec_readiness_failure_and_its_output_reach_the_report_and_supctl(
    stub: pb_grpc.SupervisorStub, sup: SupervisorProcess
) -> None:
    spawn(stub, "job", ["sleep", "100"], readiness_probe=fast(
        exec=pb.ExecAction(argv=["/bin/sh", "-c", "echo backend unreachable >&2; exit 3"]), failure_threshold=2))
    child = wait_for(lambda: (c := info(stub, "job")).probes and c.probes[0].runs >= 2 and c, 20, what="two runs")
    status = probe(child, "readiness")
    assert not status.success and status.consecutive_failures >= 2
    assert "exit 3" in status.message and "backend unreachable" in status.message
    assert child.health == pb.CHILD_HEALTH_NOT_READY and child.state == pb.CHILD_STATE_RUNNING

    def supctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "supervisor.cli", "--addr", sup.address, *args],
            capture_output=True, text=True, timeout=60, check=False,
        )

    shown = supctl("health", "job")
    assert shown.returncode == 8, shown.stderr
    assert "NOT_READY" in shown.stdout and "backend unreachable" in shown.stdout
    assert shown.stderr.strip() == "supctl: not healthy: job"
    spawn(stub, "fine", ["sleep", "100"])
    wait_for(lambda: info(stub, "fine").health == pb.CHILD_HEALTH_READY, 10, what="fine to be ready")
    assert supctl("health", "fine").returncode == 0


def test_a_hanging_probe_is_cut_at_its_timeout(stub: pb_grpc.SupervisorStub) -> None:
    port = free_port()
    spawn(stub, "hang", server("http", port), readiness_probe=fast(
        http=pb.HttpAction(url=f"http://127.0.0.1:{port}/healthz"), timeout_seconds=0.2, failure_threshold=1))
    wait_for(lambda: info(stub, "hang").health == pb.CHILD_HEALTH_READY, 20, what="ready")
    control(port, "hang")
    child = wait_for(lambda: (c := info(stub, "hang")).health == pb.CHILD_HEALTH_NOT_READY and c, 20,
                     what="not ready")
    assert "timed out after 0.2s" in probe(child, "readiness").message
    control(port, "ok")
    wait_for(lambda: info(stub, "hang").health == pb.CHILD_HEALTH_READY, 20, what="ready again")


def test_probe_fields_are_validated_with_their_names(stub: pb_grpc.SupervisorStub) -> None:
    with pytest.raises(grpc.RpcError) as err:
        spawn(stub, "bad", ["sleep", "1"], liveness_probe=pb.Probe(tcp=pb.TcpAction(port=70000)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "spec.liveness_probe.tcp.port" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        spawn(stub, "bad", ["sleep", "1"], liveness_probe=fast(tcp=pb.TcpAction(port=1), success_threshold=2))
    assert "spec.liveness_probe.success_threshold: must be 1" in err.value.details()


def test_grpc_health_follows_every_probe_result_not_only_verdicts(
    stub: pb_grpc.SupervisorStub, sup: SupervisorProcess
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/healthz"
    # Both probes fail at first (the server answers 503 for 1 s): liveness failing makes the child UNHEALTHY, then
    # a passing liveness probe alone (no verdict, no event) must bring SERVING back once readiness passed too.
    spawn(stub, "both", server("http", port, "--ready-after", "1"),
          # Liveness runs less often: readiness turns ready while liveness still counts failures.
          liveness_probe=fast(http=pb.HttpAction(url=url), failure_threshold=100, period_seconds=0.35),
          readiness_probe=fast(http=pb.HttpAction(url=url)))
    health = health_pb2_grpc.HealthStub(sup.channel())
    wait_for(lambda: info(stub, "both").health == pb.CHILD_HEALTH_READY, 20, what="ready")
    wait_for(lambda: health.Check(health_pb2.HealthCheckRequest(service="both"), timeout=5).status == SERVING, 10,
             what="grpc.health.v1 to say SERVING")
    control(port, "fail")
    wait_for(lambda: info(stub, "both").health == pb.CHILD_HEALTH_UNHEALTHY, 20, what="unhealthy")
    wait_for(lambda: health.Check(health_pb2.HealthCheckRequest(service="both"), timeout=5).status == NOT_SERVING, 10,
             what="grpc.health.v1 to say NOT_SERVING while unhealthy")
