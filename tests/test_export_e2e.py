"""Child lines through a real supd into a real OTLP receiver, including when the receiver is gone."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from collections.abc import Iterator

import pytest

from supervisor.testing import SupervisorProcess, running_supervisor
from supervisor.v1 import supervisor_pb2 as pb
from supervisor.v1 import supervisor_pb2_grpc as pb_grpc

from conftest import spawn, wait_for, wait_state, zoo
from otlp_receiver import BlackHole, GrpcReceiver, HttpReceiver, attributes


def export_env(endpoint: str, protocol: str) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "1000",
        "OTEL_SERVICE_NAME": "supd-under-test",
    }


def health(stub: pb_grpc.SupervisorStub, name: str) -> pb.ChildInfo:
    return stub.Health(pb.HealthRequest(name=name), timeout=5).children[0]


def records_of(receiver: GrpcReceiver | HttpReceiver, child: str) -> list:
    return [r for r in list(receiver.received.records) if attributes(r.attributes).get("supd.child.name") == child]


def log_events(sup: SupervisorProcess, event: str) -> list[dict]:
    lines = sup.stderr_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{") and f'"{event}"' in line]


@pytest.fixture(params=["grpc", "http/protobuf"])
def receiver(request) -> Iterator[GrpcReceiver | HttpReceiver]:
    with (GrpcReceiver() if request.param == "grpc" else HttpReceiver()) as r:
        yield r


def test_every_line_of_a_100000_line_child_reaches_the_receiver(tmp_path: pathlib.Path, receiver):
    # The generic variable takes the base URL; supd appends /v1/logs for OTLP/HTTP.
    env = export_env(f"http://{receiver.address}", receiver.protocol)
    with running_supervisor(tmp_path, env=env) as sup, sup.channel() as channel:
        stub = pb_grpc.SupervisorStub(channel)
        info = spawn(stub, "hundred", zoo("lines", "100000"))
        receiver.received.wait_for(100_000, timeout=60)
        records = records_of(receiver, "hundred")
        assert len(records) == 100_000
        seqs = sorted(attributes(r.attributes)["supd.log.seq"] for r in records)
        assert seqs == list(range(2, 100_002)), "every line once, numbered as in the ring"
        first = next(r for r in records if attributes(r.attributes)["supd.log.seq"] == 2)
        attrs = attributes(first.attributes)
        assert first.body.string_value == "line 000000"
        assert attrs["log.iostream"] == "stdout"
        assert attrs["process.pid"] == info.pid
        assert attrs["process.executable.name"] == pathlib.Path(sys.executable).name
        assert attrs["supd.child.generation"] == 1
        assert first.time_unix_nano > 0 and first.observed_time_unix_nano > 0
        assert any(r.get("service.name") == "supd-under-test" for r in receiver.received.resources)
        done = wait_for(lambda: (h := health(stub, "hundred")).export_queued_lines == 0 and h)
        assert (done.export_offered_lines, done.export_exported_lines, done.export_dropped_lines) == (
            100_000, 100_000, 0,
        )
        shown = subprocess.run(
            [sys.executable, "-m", "supervisor.cli", "--addr", sup.address, "health", "hundred"],
            capture_output=True, text=True, check=False,
        )
        # The child has exited: asked about by name, it is not healthy (exit 8), and its counts are shown.
        assert shown.returncode == 8, shown.stderr
        assert "export:      100000 of 100000 lines exported, 0 dropped, 0 queued" in shown.stdout
        # supd's own events travel the same pipeline, and those a Spawn causes carry its span's context.
        wait_for(lambda: any(r.body.string_value == "child.exited" for r in receiver.received.records))
        spawned = next(r for r in receiver.received.records if r.body.string_value == "child.spawned")
        assert attributes(spawned.attributes)["child"] == "hundred"
        assert len(spawned.trace_id) == 16 and any(spawned.trace_id)
        wait_for(lambda: "Spawn" in receiver.received.span_names, what="the Spawn span")


def test_receiver_down_midway_drops_are_counted_and_export_resumes(tmp_path: pathlib.Path):
    with GrpcReceiver() as receiver:
        env = export_env(receiver.endpoint, "grpc")
        args = ["--export-queue-lines", "5000", "--export-summary-seconds", "0.2"]
        with running_supervisor(tmp_path, args, env=env) as sup, sup.channel() as channel:
            stub = pb_grpc.SupervisorStub(channel)
            spawn(stub, "before", zoo("lines", "20000"))
            receiver.received.wait_for(20_000, timeout=30)
            receiver.stop()
            spawn(stub, "during", zoo("lines", "1000000"))
            # The child is never held up by the dead endpoint.
            assert wait_state(stub, "during", pb.CHILD_STATE_EXITED, timeout=30).last_exit.code == 0
            during = health(stub, "during")
            assert during.export_dropped_lines > 0
            assert during.export_offered_lines == 1_000_000 == (
                during.export_exported_lines + during.export_dropped_lines + during.export_queued_lines
            )
            summaries = wait_for(lambda: log_events(sup, "otlp.export.dropped"), what="a drop summary")
            assert "during" in json.dumps(summaries[-1]), "the summary gives counts per child"
            assert len(log_events(sup, "otlp.export.failed")) >= 1, "the export error itself is logged"
            receiver.start()
            # What the queue held is delivered once the receiver is back, within seconds.
            final = wait_for(lambda: (h := health(stub, "during")).export_queued_lines == 0 and h, timeout=20)
            assert len(records_of(receiver, "during")) + final.export_dropped_lines == 1_000_000
            assert log_events(sup, "otlp.export.recovered")
            spawn(stub, "after", zoo("lines", "1000"))
            wait_for(lambda: len(records_of(receiver, "after")) == 1000, timeout=20, what="new lines to be exported")


def test_black_hole_endpoint_never_holds_up_the_child(tmp_path: pathlib.Path):
    with BlackHole() as hole:
        env = export_env(hole.endpoint, "http/protobuf")
        args = ["--export-queue-lines", "5000", "--export-summary-seconds", "0.2"]
        with running_supervisor(tmp_path, args, env=env) as sup, sup.channel() as channel:
            stub = pb_grpc.SupervisorStub(channel)
            spawn(stub, "void", zoo("lines", "200000"))
            assert wait_state(stub, "void", pb.CHILD_STATE_EXITED, timeout=30).last_exit.code == 0
            info = health(stub, "void")
            assert info.export_exported_lines == 0 and info.export_dropped_lines > 0
            assert info.export_offered_lines == 200_000 == info.export_dropped_lines + info.export_queued_lines
            wait_for(lambda: log_events(sup, "otlp.export.dropped"), what="a drop summary")
            assert hole.accepted >= 1


def test_a_respawned_child_of_the_same_name_counts_afresh(tmp_path: pathlib.Path):
    with GrpcReceiver() as receiver:
        env = export_env(receiver.endpoint, "grpc")
        with running_supervisor(tmp_path, env=env) as sup, sup.channel() as channel:
            stub = pb_grpc.SupervisorStub(channel)
            spawn(stub, "again", zoo("lines", "1000"))
            wait_for(lambda: health(stub, "again").export_exported_lines == 1000, what="the first child's lines")
            again = stub.Spawn(pb.SpawnRequest(spec=pb.ChildSpec(
                name="again", argv=zoo("lines", "10"), restart=pb.RESTART_POLICY_NEVER), replace=True), timeout=10)
            assert again.child.stdout_lines <= 10
            done = wait_for(lambda: (h := health(stub, "again")).export_exported_lines == 10 and h)
            assert (done.export_offered_lines, done.export_dropped_lines, done.stdout_lines) == (10, 0, 10)
