"""The Caddy seed story, end to end, against the real Caddy 2.6 run from ``examples/caddy/`` (ports replaced).

A team that ran Caddy as a child process needed five fixes before it was
reliable (seeds 01 and 02): drain its stderr, kill the stale Caddy holding the
admin port, retry ``POST /load`` on connection errors and 5xx but never on 4xx,
re-apply the routes after Caddy or the manager restarts, and treat a failed
route delivery as soft. Each test below is one step of that story, served by
supd from configuration alone. Steps share one supd and one Caddy (with a real
OTLP receiver) where they can; the supd SIGKILL step has its own.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

import grpc
import pytest
from caddy_peer import Example, fetch, skip_without_caddy

from supervisor.testing import SupervisorProcess, accepting, free_port, running_supervisor
from supervisor.v1 import supervisor_pb2 as pb
from supervisor.v1 import supervisor_pb2_grpc as pb_grpc

from conftest import process_gone, wait_for
from otlp_receiver import GrpcReceiver, attributes

pytestmark = skip_without_caddy

SERVERS = str(pathlib.Path(__file__).with_name("probe_servers.py"))
# Caddy's (zap's) level names and the OTLP severity numbers supd gives them.
SEVERITY = {"debug": 5, "info": 9, "warn": 13, "error": 17}
PIPE_MAX = 1 << 20  # supd enlarges each pipe to 1 MiB at most: a Caddy nobody drained would block past that


@dataclasses.dataclass
class Story:
    example: Example
    sup: SupervisorProcess
    stub: pb_grpc.SupervisorStub
    receiver: GrpcReceiver

    def info(self) -> pb.ChildInfo:
        return info(self.stub)

    def reload(self, state: bytes) -> pb.ReloadResponse:
        return self.stub.Reload(pb.ReloadRequest(name="caddy", state=state), timeout=30)

    def served(self, path: str = "/hello") -> tuple[int, bytes]:
        return fetch(self.example.http, path)

    def caddy_records(self) -> list:
        return [r for r in list(self.receiver.received.records)
                if attributes(r.attributes).get("supd.child.name") == "caddy"]


def info(stub: pb_grpc.SupervisorStub) -> pb.ChildInfo:
    return stub.Health(pb.HealthRequest(name="caddy"), timeout=5).children[0]


def replay_target(example: Example) -> float:
    """The longest a restart may take to serve the routes again by the example's own config: the longest
    backoff, then the time the replay may wait for the new Caddy, then the startup probe's whole allowance."""
    spec = example.spec
    startup = spec["startup_probe"]
    return (spec["backoff"]["max_seconds"] + spec["state_delivery"]["ready_timeout_seconds"]
            + startup["period_seconds"] * startup["failure_threshold"])


def restart_target(example: Example) -> float:
    """The longest the example allows from a frozen Caddy to a new one serving: the liveness probe's failures
    in a row (each cut at its timeout), the stop grace, then the replay target."""
    live = example.spec["liveness_probe"]
    detect = live["failure_threshold"] * (live["period_seconds"] + live["timeout_seconds"])
    return detect + example.spec["stop_grace_seconds"] + replay_target(example)


def events(stub: pb_grpc.SupervisorStub, kind: int) -> list[pb.Event]:
    stream = stub.Stream(pb.StreamRequest(name="caddy"), timeout=10)
    return [m.event for m in stream if m.HasField("event") and m.event.kind == kind]


def running(stub: pb_grpc.SupervisorStub, example: Example, after: int = 0) -> pb.ChildInfo:
    """The Caddy of a generation after ``after`` once it runs and answers its admin API."""
    return wait_for(
        lambda: (c := info(stub)).state == pb.CHILD_STATE_RUNNING and c.generation > after
        and fetch(example.admin, "/config/")[0] == 200 and c,
        replay_target(example), what="caddy running with its admin API up",
    )


def serving(story: Story, body: bytes, after: int, within: float) -> pb.ChildInfo:
    """Wait, ``within`` s at most, until a Caddy newer than generation ``after`` serves ``body`` and is ready."""
    wait_for(lambda: story.served() == (200, body), within, what=f"/hello to serve {body!r} again")
    child = wait_for(lambda: (c := story.info()).ready and c.generation > after and c, 10,
                     what="the new caddy to be ready")
    assert child.state_applied_revision == child.state_revision and child.state_error == ""
    assert story.example.pids() == [child.pid], "one Caddy runs, the one supd knows: none orphaned or duplicated"
    return child


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    tmp = tmp_path_factory.mktemp("caddy-story")
    example = Example(tmp / "example", free_port(), free_port())
    try:
        with GrpcReceiver() as receiver:
            env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_EXPORTER_OTLP_INSECURE": "true"}
            with running_supervisor(tmp, ["--config", str(example.config)], env=env) as sup, sup.channel() as ch:
                stub = pb_grpc.SupervisorStub(ch)
                running(stub, example)
                yield Story(example, sup, stub, receiver)
    finally:
        example.kill_all()


def test_1_caddy_logging_heavily_with_nobody_reading_stays_responsive_and_its_lines_reach_otlp(story: Story) -> None:
    """Seed 01: Caddy froze once 16 KB of its stderr sat unread. Here its access log (routes.json turns it on)
    carries ~3 MB through a pipe of at most 1 MiB while nobody reads, and its admin API never stops answering."""
    story.reload(story.example.routes())
    before = story.info()
    admin: list[int] = []
    done = threading.Event()

    def poll_admin() -> None:
        while not done.is_set():
            admin.append(fetch(story.example.admin, "/config/", timeout=2)[0])
            done.wait(0.05)

    poller = threading.Thread(target=poll_admin)
    poller.start()
    requests, pad = 400, "x" * 8192  # each access log line carries the request's headers: ~8.7 KB a line
    try:
        conn = http.client.HTTPConnection("127.0.0.1", story.example.http, timeout=5)
        for n in range(requests):
            conn.request("GET", f"/hello?n={n}", headers={"X-Pad": pad})
            reply = conn.getresponse()
            assert (reply.status, reply.read()) == (200, b"hello from caddy\n")
        conn.close()
    finally:
        done.set()
        poller.join()
    after = story.info()
    assert (after.pid, after.generation) == (before.pid, before.generation), "Caddy was never restarted"
    assert after.bytes_drained - before.bytes_drained > 2 * PIPE_MAX, "more than the pipe holds went through"
    assert after.stderr_lines - before.stderr_lines >= requests, "Caddy logs on stderr (its stdout is drained too)"
    assert admin and set(admin) == {200}, f"the admin API answered every poll: {admin}"

    def access_lines() -> list:
        return [r for r in story.caddy_records()
                if attributes(r.attributes)["supd.child.generation"] == after.generation
                and '"handled request"' in r.body.string_value and "/hello?n=" in r.body.string_value]

    lines = wait_for(lambda: len(found := access_lines()) >= requests and found, 30, what="the access log in OTLP")
    uris = {json.loads(r.body.string_value)["request"]["uri"] for r in lines}
    assert uris == {f"/hello?n={n}" for n in range(requests)}, "every request's line, none lost"
    assert {r.severity_number for r in lines} == {SEVERITY["info"]}
    assert all(attributes(r.attributes)["log.iostream"] == "stderr" for r in lines)
    records = story.caddy_records()
    levels = {json.loads(r.body.string_value)["level"]: r.severity_number for r in records}
    assert all(SEVERITY[level] == number for level, number in levels.items()), levels


def test_2_a_stored_route_config_is_served_and_invalid_json_gets_caddys_400_committing_nothing(story: Story) -> None:
    """Seed 02, fix 2: a 4xx is never retried; and fix 5: a rejected config leaves the routes Caddy serves."""
    good = story.example.routes(hello="the good revision\n")
    revision = story.reload(good).revision
    assert story.served() == (200, b"the good revision\n")
    assert story.served("/healthz") == (200, b"ok\n")
    with pytest.raises(grpc.RpcError) as err:
        story.reload(b"{bad")
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = err.value.details() or ""
    assert f"rejected state revision {revision + 1}: HTTP 400" in details, details
    # Caddy's (Go's) own words, which no part of supd writes.
    assert "invalid character 'b' looking for beginning of object key string" in details, details
    got = story.stub.GetState(pb.GetStateRequest(name="caddy"), timeout=5)
    assert got.revision.revision == revision and got.revision.state == good, "nothing committed"
    assert [(h.revision, h.accepted) for h in got.history[:2]] == [(revision + 1, False), (revision, True)]
    failed = [e for e in events(story.stub, pb.Event.KIND_STATE_FAILED) if e.revision == revision + 1]
    assert len(failed) == 1 and "HTTP 400" in failed[0].message, "a 400 is answered at once, never retried"
    # Ready again once its readiness probe says so (on a loaded machine a probe may have run while the good
    # revision's listener was being swapped in, or Caddy been restarted): the good revision stays applied.
    child = wait_for(lambda: (c := story.info()).ready and c, 15, what="caddy to be ready")
    assert (child.state_revision, child.state_applied_revision) == (revision, revision)
    assert story.served() == (200, b"the good revision\n"), "Caddy keeps the routes it had"
    # Caddy's own report of the bad request reaches OTLP at ERROR.
    wait_for(lambda: [r for r in story.caddy_records() if r.severity_number == SEVERITY["error"]
                      and "invalid character 'b'" in r.body.string_value], 10, what="caddy's error line in OTLP")


def test_3_a_sigkilled_caddy_serves_its_routes_again_with_no_client_call(story: Story) -> None:
    """Seed 02, fix 4: a Caddy that crashed comes back with the routes, nobody calling Reload again."""
    body = b"back after a SIGKILL\n"
    story.reload(story.example.routes(hello=body.decode()))
    old = story.info()
    seen: list[pb.ChildInfo] = []
    os.kill(old.pid, signal.SIGKILL)
    wait_for(lambda: process_gone(old.pid), 10, what="the killed caddy to be gone")
    wait_for(lambda: seen.append(c := story.info()) or (c.ready and c.generation > old.generation),
             replay_target(story.example), what="the restarted caddy to be ready")
    early = [(c.generation, c.state_revision, c.state_applied_revision)
             for c in seen if c.ready and c.state_applied_revision != c.state_revision]
    assert not early, f"ready before its routes were applied (generation, revision, applied): {early}"
    child = serving(story, body, old.generation, replay_target(story.example))
    assert child.pid != old.pid and child.last_exit.signal_name == "SIGKILL"
    applied = events(story.stub, pb.Event.KIND_STATE_APPLIED)
    assert any(e.generation == child.generation and e.revision == child.state_revision for e in applied)


def test_4_a_port_holder_that_is_not_caddy_is_named_and_never_signalled(story: Story) -> None:
    """Seed 02, fix 1, the safe half: supd never kills by name, so a stranger on the admin port is left alone."""
    body = b"after the stranger left\n"
    story.reload(story.example.routes(hello=body.decode()))
    story.stub.Stop(pb.StopRequest(name="caddy"), timeout=30)
    stranger = subprocess.Popen([sys.executable, SERVERS, "tcp", "--port", str(story.example.admin)],
                                stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: accepting(story.example.admin), 20, what="the stranger on caddy's admin port")
        old = story.info()
        story.stub.Restart(pb.RestartRequest(name="caddy"), timeout=30)
        child = wait_for(lambda: (c := story.info()).last_start_error and c, 10, what="caddy's start to fail")
        reason = child.last_start_error
        assert f"port {story.example.admin}/tcp is held by pid {stranger.pid}" in reason, reason
        assert "probe_servers.py tcp" in reason and "leaves it alone" in reason, reason
        assert stranger.poll() is None, "a process supd cannot prove is its own is never signalled"
        assert story.example.pids() == [], "no Caddy started beside the stranger"
    finally:
        stranger.kill()
        stranger.wait()
    serving(story, body, old.generation, replay_target(story.example))


def test_4_after_supd_is_sigkilled_the_old_caddy_is_reaped_and_the_new_one_serves_the_routes(
    tmp_path: pathlib.Path,
) -> None:
    """Seed 02, fixes 1 and 3: a restarted manager finds its old Caddy on the admin port, stops it (never by
    name: by its recorded pid and start time, or its marks), starts one Caddy and gives it the stored routes;
    whatever TLS settings the new supd has, for an admin API that is plain HTTP."""
    example = Example(tmp_path / "example", free_port(), free_port())
    body = b"across a supd crash\n"
    try:
        with running_supervisor(tmp_path, ["--config", str(example.config)]) as first:
            stub = first.stub()
            running(stub, example)
            stub.Reload(pb.ReloadRequest(name="caddy", state=example.routes(hello=body.decode())), timeout=30)
            old = info(stub)
            first.proc.kill()
            first.proc.wait(10)
        assert not process_gone(old.pid) and accepting(example.admin), "the old Caddy still holds the admin port"
        # Caddy's admin API is plain HTTP: a CA bundle setting that does not fit (a pod's SSL_CERT_FILE for
        # another image) must neither fail the replay nor a Reload, nor take supd down.
        env = {"SSL_CERT_FILE": str(tmp_path / "missing-ca.pem")}
        with running_supervisor(tmp_path, ["--config", str(example.config)], env=env) as second:
            stub = second.stub()
            wait_for(lambda: process_gone(old.pid), 20, what="the old caddy to be stopped")
            wait_for(lambda: second.proc.poll() is not None or fetch(example.http, "/hello") == (200, body),
                     replay_target(example), what="the stored routes served by the new caddy")
            assert second.proc.poll() is None, f"supd exited while replaying: {second.stderr_text()[-2000:]}"
            child = wait_for(lambda: (c := info(stub)).ready and c, 10, what="the new caddy to be ready")
            assert child.pid != old.pid and child.generation == 1 and child.restart_count == 0
            assert child.state_applied_revision == child.state_revision == 1
            assert example.pids() == [child.pid], "one Caddy: the old one is gone, none started twice"
            found = [json.loads(line) for line in second.stderr_text().splitlines()
                     if '"supd.previous_children.found"' in line]
            assert found and str(old.pid) in json.dumps(found), "the old Caddy was found as ours, by pid"
            reply = stub.Reload(pb.ReloadRequest(name="caddy", state=example.routes(hello="reloaded")), timeout=30)
            assert reply.revision == 2 and fetch(example.http, "/hello") == (200, b"reloaded")
    finally:
        example.kill_all()


def test_5_a_frozen_caddy_fails_liveness_and_is_restarted_through_the_stop_escalation(story: Story) -> None:
    """Seed 01's symptom, without its cause: a Caddy alive but not answering (SIGSTOP) is restarted by its
    liveness probe on the admin API; the SIGCONT that follows the stop signal lets it act on SIGTERM and exit
    cleanly, without waiting out the grace."""
    body = b"back after a freeze\n"
    story.reload(story.example.routes(hello=body.decode()))
    old = story.info()
    os.kill(old.pid, signal.SIGSTOP)
    try:
        child = serving(story, body, old.generation, restart_target(story.example))
    finally:
        if not process_gone(old.pid):
            os.kill(old.pid, signal.SIGCONT)
    assert not child.last_exit.killed_after_grace and child.last_exit.exited, child.last_exit
    unhealthy = [e for e in events(story.stub, pb.Event.KIND_UNHEALTHY) if e.generation == old.generation]
    assert unhealthy and "liveness probe failed" in unhealthy[0].message, unhealthy


def test_the_story_left_no_caddy_and_supd_stops_the_last_one(story: Story) -> None:
    """Last: supd's Stop ends its Caddy with SIGTERM, exit 0, Caddy's goodbye at WARN in OTLP."""
    child = running(story.stub, story.example)
    reply = story.stub.Stop(pb.StopRequest(name="caddy"), timeout=30)
    assert reply.exit.exited and reply.exit.code == 0 and not reply.exit.killed_after_grace
    assert story.example.pids() == [] and process_gone(child.pid)
    bye = wait_for(lambda: [r for r in story.caddy_records() if "byeee" in r.body.string_value], 10,
                   what="caddy's goodbye")
    assert bye[-1].severity_number == SEVERITY["warn"]

