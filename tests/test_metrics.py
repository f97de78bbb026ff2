"""supd's OpenTelemetry metrics: read from a real OTLP receiver, and nothing loaded while metrics are off."""

from __future__ import annotations

import json
import pathlib
import socket
import subprocess
import sys

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from supervisor._daemon.output.records import ExitRecord
from supervisor._daemon.settings import ConfigError, parse_args
from supervisor._daemon.telemetry.settings import TelemetrySettings
from supervisor.errors import InvalidArgument
from supervisor.testing import free_port, running_supervisor, supd_command, wait_until
from supervisor.v1 import supervisor_pb2 as pb
from supervisor.v1 import supervisor_pb2_grpc as pb_grpc

from conftest import Follower, spawn, wait_for, wait_state, zoo
from otlp_receiver import GrpcReceiver, HttpReceiver

LINES = 500
RING_BYTES = 1 << 20
# supd's metrics modules, loaded only when metrics are on; a line of code for a subprocess.
OURS = (
    "OURS = ('supervisor._daemon.telemetry.metrics', 'supervisor._daemon.telemetry.rpc_metrics',"
    " 'supervisor._daemon.telemetry.prometheus', 'prometheus_client')\n"
)


def value(receiver: GrpcReceiver | HttpReceiver, name: str, **attrs: object) -> float | None:
    """The value of the point of ``name`` whose attributes include ``attrs`` (a histogram's count), or None."""
    for got, point in receiver.received.points(name):
        if all(got.get(k) == v for k, v in attrs.items()):
            if hasattr(point, "bucket_counts"):
                return point.count
            return point.as_int if point.WhichOneof("value") == "as_int" else point.as_double
    return None


def test_a_childs_lines_exits_restarts_probes_and_rpcs_reach_a_real_otlp_receiver(tmp_path: pathlib.Path) -> None:
    with GrpcReceiver() as receiver:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_METRICS_EXPORTER": "otlp",
            "OTEL_METRIC_EXPORT_INTERVAL": "200",
        }
        with running_supervisor(tmp_path, env=env) as sup, sup.channel() as channel:
            stub = pb_grpc.SupervisorStub(channel)
            spawn(stub, "printer", zoo("lines", str(LINES), "", "3"), ring_bytes=RING_BYTES)
            exited = lambda generation: (  # noqa: E731
                (c := stub.Health(pb.HealthRequest(name="printer"), timeout=5).children[0]).state
                == pb.CHILD_STATE_EXITED and c.generation == generation
            )
            wait_for(lambda: exited(1), what="the first run to exit")
            stub.Restart(pb.RestartRequest(name="printer"), timeout=10)
            wait_for(lambda: exited(2), what="the second run to exit")
            probe = pb.Probe(exec=pb.ExecAction(argv=["/usr/bin/true"]), period_seconds=0.1)
            delivery = pb.StateDelivery(exec=pb.ExecDelivery(argv=["/usr/bin/true"]))
            spawn(stub, "steady", zoo("ticker", "1"), readiness_probe=probe, state_delivery=delivery)
            wait_state(stub, "steady", pb.CHILD_STATE_RUNNING)
            stub.Reload(pb.ReloadRequest(name="steady", state=b"routes"), timeout=10)
            with pytest.raises(grpc.RpcError) as stale:
                stub.Reload(pb.ReloadRequest(name="steady", state=b"routes", expected_revision=7), timeout=10)
            assert stale.value.code() == grpc.StatusCode.ABORTED
            stub.Restart(pb.RestartRequest(name="steady"), timeout=10)  # the accepted state is replayed
            with pytest.raises(grpc.RpcError) as missing:
                stub.Health(pb.HealthRequest(name="nobody"), timeout=5)
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND
            health_stub = health_pb2_grpc.HealthStub(channel)
            check = health_stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            assert check.status == health_pb2.HealthCheckResponse.SERVING
            watch = health_stub.Watch(health_pb2.HealthCheckRequest(service=""), timeout=5)
            assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
            watch.cancel()
            unknown = channel.unary_unary("/supervisor.v1.Supervisor/NoSuchMethod")
            with pytest.raises(grpc.RpcError) as unimplemented:
                unknown(b"", timeout=5)
            assert unimplemented.value.code() == grpc.StatusCode.UNIMPLEMENTED

            def exported() -> bool:
                return (
                    value(receiver, "supd.child.output.lines", **{"supd.child.name": "printer"}) == 2 * LINES
                    and value(receiver, "supd.child.exits", **{"supd.child.name": "printer"}) == 2
                    and value(receiver, "supd.child.probe.duration", **{"supd.child.name": "steady"}) is not None
                    and value(receiver, "supd.child.state.duration", **{"supd.state.operation": "replay"}) == 1
                    and value(receiver, "rpc.server.call.duration", **{"rpc.response.status_code": "NOT_FOUND"})
                    is not None
                )

            wait_until(exported, 20, what="the metrics of both runs at the receiver")
            child = {"supd.child.name": "printer"}
            assert value(receiver, "supd.child.output.lines", **child, **{"log.iostream": "stdout"}) == 2 * LINES
            assert value(receiver, "supd.child.output.lines", **child, **{"log.iostream": "stderr"}) == 0
            assert value(receiver, "supd.child.output.bytes", **child, **{"log.iostream": "stdout"}) == 2 * LINES * 12
            assert value(
                receiver, "supd.child.exits", **child, **{"supd.exit.cause": "exited", "process.exit.code": 3}
            ) == 2
            assert value(receiver, "supd.child.restarts", **child, **{"supd.restart.trigger": "request"}) == 1
            assert value(receiver, "supd.child.output.dropped", **child, **{"supd.drop.stage": "ring"}) == 0
            assert value(receiver, "supd.child.output.dropped", **child, **{"supd.drop.stage": "export"}) == 0
            assert value(receiver, "supd.child.ring.limit", **child) == RING_BYTES
            assert 2 * LINES * 12 < value(receiver, "supd.child.ring.usage", **child) < RING_BYTES  # type: ignore[operator]
            assert value(
                receiver, "supd.child.probe.duration",
                **{"supd.child.name": "steady", "supd.probe.type": "readiness", "supd.probe.handler": "exec",
                   "supd.probe.result": "success"},
            )
            state = {"supd.child.name": "steady", "supd.state.operation": "reload"}
            assert value(receiver, "supd.child.state.duration", **state, **{"supd.state.outcome": "applied"}) == 1
            assert value(receiver, "supd.child.state.duration", **state, **{"supd.state.outcome": "aborted"}) == 1
            replay = {"supd.child.name": "steady", "supd.state.operation": "replay", "supd.state.outcome": "applied"}
            assert value(receiver, "supd.child.state.duration", **replay) == 1
            rpc = {"rpc.system.name": "grpc", "rpc.method": "supervisor.v1.Supervisor/Spawn"}
            assert value(receiver, "rpc.server.call.duration", **rpc, **{"rpc.response.status_code": "OK"}) == 2
            health = {"rpc.method": "supervisor.v1.Supervisor/Health", "rpc.response.status_code": "NOT_FOUND"}
            assert value(receiver, "rpc.server.call.duration", **health, **{"error.type": "NOT_FOUND"}) == 1
            (point,) = [p for a, p in receiver.received.points("rpc.server.call.duration") if a == {
                "rpc.system.name": "grpc", "rpc.method": "supervisor.v1.Supervisor/Restart",
                "rpc.response.status_code": "OK",
            }]
            assert point.count == 2 and 0 < point.sum < 20, "two Restarts, timed in seconds"
            assert receiver.received.metrics["rpc.server.call.duration"].unit == "s"
            check_ok = {"rpc.method": "grpc.health.v1.Health/Check", "rpc.response.status_code": "OK"}
            assert value(receiver, "rpc.server.call.duration", **check_ok) == 1
            wait_until(
                lambda: value(receiver, "rpc.server.call.duration", **{"rpc.method": "grpc.health.v1.Health/Watch"}),
                10, what="the cancelled Watch, timed",
            )
            other = {"rpc.method": "_OTHER", "rpc.response.status_code": "UNIMPLEMENTED"}
            assert value(receiver, "rpc.server.call.duration", **other) == 1, "a method supd does not serve"
            assert value(receiver, "supd.export.queue.size") is not None
            follower = Follower(stub, pb.StreamRequest(name="steady", follow=True))
            wait_until(lambda: value(receiver, "supd.stream.subscribers") == 1, 10, what="one open Stream")
            follower.cancel()
            stream = {"rpc.method": "supervisor.v1.Supervisor/Stream", "rpc.response.status_code": "CANCELLED"}
            wait_until(
                lambda: value(receiver, "supd.stream.subscribers") == 0
                and value(receiver, "rpc.server.call.duration", **stream) == 1,
                10, what="the Stream's end, CANCELLED",
            )
            wait_state(stub, "steady", pb.CHILD_STATE_RUNNING)
            steady_pid = stub.Health(pb.HealthRequest(name="steady"), timeout=5).children[0].pid
            wait_until(
                lambda: (value(receiver, "process.memory.usage", **{"process.pid": steady_pid}) or 0) > 0, 10,
                what="the running child's resident memory",
            )


def test_metrics_over_http_protobuf_go_to_v1_metrics_of_the_base_url(tmp_path: pathlib.Path) -> None:
    with HttpReceiver() as receiver:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{receiver.address}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_METRIC_EXPORT_INTERVAL": "200",
        }
        with running_supervisor(tmp_path, env=env) as sup, sup.channel() as channel:
            spawn(pb_grpc.SupervisorStub(channel), "printer", zoo("lines", str(LINES)))
            wait_until(
                lambda: value(receiver, "supd.child.output.lines", **{"log.iostream": "stdout"}) == LINES, 20,
                what="the line count at the receiver's /v1/metrics",
            )


def test_a_metricless_collector_is_told_once_in_supds_own_event(tmp_path: pathlib.Path) -> None:
    receiver = GrpcReceiver()
    receiver.serve_metrics = False
    with receiver:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_METRIC_EXPORT_INTERVAL": "100"}
        with running_supervisor(tmp_path, env=env) as sup:
            wait_until(lambda: events(sup.stderr_text(), "otlp.metrics.export.failed"), 20, what="the failure")
            # supd's own events go on being exported meanwhile (their batch leaves after about 1 s: by then
            # several metric exports have been refused, and each repeat is counted, not logged).
            wait_until(lambda: len(receiver.received.records) > 0, 20, what="supd's events at the collector")
    (failed,) = events(sup.stderr_text(), "otlp.metrics.export.failed")
    assert "UNIMPLEMENTED" in failed["detail"] and failed["endpoint"] == receiver.endpoint
    leaked = [e for e in events(sup.stderr_text()) if "Failed to export" in e["event"]
              or "opentelemetry" in str(e.get("logger", ""))]
    assert leaked == []


def events(stderr: str, name: str = "") -> list[dict[str, object]]:
    """supd's JSON events on stderr (those named ``name`` if given)."""
    found = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return [e for e in found if not name or e["event"] == name]


def test_metrics_off_loads_neither_the_sdk_nor_the_metrics_modules() -> None:
    code = OURS + (
        "import io, sys\n"
        "from supervisor._daemon.telemetry.configure import TelemetrySettings, configure_logging\n"
        "from supervisor._daemon.telemetry import recorder\n"
        "t = configure_logging(TelemetrySettings.from_env({}), stream=io.StringIO())\n"
        "t.observe(lambda: [])\n"
        "assert t.rpc_interceptors() == [] and type(recorder.active) is recorder.Recorder\n"
        "import supervisor._daemon.main\n"
        "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry', 'importlib.metadata'))\n"
        "             or m.startswith(OURS)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout


def test_metrics_exporter_none_keeps_supds_metrics_out_while_logs_export() -> None:
    # (The SDK's OTLP exporters load opentelemetry.sdk.metrics themselves: only supd's own modules can stay out.)
    code = OURS + (
        "import io, sys\n"
        "from supervisor._daemon.telemetry.configure import TelemetrySettings, configure_logging\n"
        "from supervisor._daemon.telemetry import recorder\n"
        "env = {'OTEL_EXPORTER_OTLP_ENDPOINT': 'http://127.0.0.1:1', 'OTEL_METRICS_EXPORTER': 'none'}\n"
        "t = configure_logging(TelemetrySettings.from_env(env), stream=io.StringIO())\n"
        "assert t.line_exporter is not None and t.rpc_interceptors() == []\n"
        "assert type(recorder.active) is recorder.Recorder\n"
        "print(sorted(m for m in sys.modules if m.startswith(OURS)))\n"
        "t.shutdown(1)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout


def test_metrics_settings_follow_the_sdk_variables() -> None:
    assert TelemetrySettings.from_env({}).metrics is None, "no endpoint: metrics off, as the logs"
    on = TelemetrySettings.from_env(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
    ).metrics
    assert on is not None and on.exporter == "otlp" and on.interval == 60.0 and on.timeout == 30.0
    assert on.target is not None and on.target.endpoint == "http://collector:4318/v1/metrics"
    own = TelemetrySettings.from_env(
        {"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "metrics:4317", "OTEL_METRIC_EXPORT_INTERVAL": "500"}
    )
    assert own.logs is None and own.metrics is not None and own.metrics.target is not None
    assert (own.metrics.target.endpoint, own.metrics.interval) == ("metrics:4317", 0.5)
    console = TelemetrySettings.from_env({"OTEL_METRICS_EXPORTER": "console"}).metrics
    assert console is not None and console.exporter == "console" and console.target is None
    assert TelemetrySettings.from_env(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_METRICS_EXPORTER": "none"}
    ).metrics is None
    assert TelemetrySettings.from_env(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_SDK_DISABLED": "true"}
    ).metrics is None


@pytest.mark.parametrize(
    ("variable", "bad"),
    [("OTEL_METRICS_EXPORTER", "prometheus"), ("OTEL_METRIC_EXPORT_INTERVAL", "0"),
     ("OTEL_METRIC_EXPORT_TIMEOUT", "soon")],
)
def test_a_bad_metrics_variable_is_refused_by_name(variable: str, bad: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        TelemetrySettings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", variable: bad})
    assert refused.value.message.startswith(f"{variable}: ") and repr(bad) in refused.value.message


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        (ExitRecord(10, True, 3, 0, False, 0), {"supd.exit.cause": "exited", "process.exit.code": 3}),
        (ExitRecord(10, False, 0, 11, True, 0), {"supd.exit.cause": "signaled", "supd.exit.signal": "SIGSEGV"}),
        (
            ExitRecord(10, False, 0, 9, False, 0, killed_after_grace=True, requested=True),
            {"supd.exit.cause": "killed_after_grace", "supd.exit.signal": "SIGKILL", "supd.exit.requested": True},
        ),
        (ExitRecord(10, False, 0, 0, False, 0, collected_elsewhere=True), {"supd.exit.cause": "unknown"}),
    ],
)
def test_an_exit_is_counted_by_its_cause(record: ExitRecord, expected: dict[str, object]) -> None:
    from supervisor._daemon.telemetry.metrics import exit_attributes

    attrs = exit_attributes("web", record)
    assert attrs == {"supd.child.name": "web", "supd.exit.requested": False, **expected}


def scraped(address: str, series: str) -> float | None:
    """The value of ``series`` (a name with its labels in the exporter's order) on the scrape endpoint, or None."""
    text = httpx.get(f"http://{address}/metrics", timeout=5).text
    for line in text.splitlines():
        name, _, number = line.rpartition(" ")
        if name == series:
            return float(number)
    return None


def test_the_prometheus_endpoint_serves_the_same_metrics(tmp_path: pathlib.Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    scope = 'otel_scope_name="supd",otel_scope_schema_url="",otel_scope_version="0.1.0"'
    stdout = f'supd_child_output_lines_total{{log_iostream="stdout",{scope},supd_child_name="printer"}}'
    exits = (
        f'supd_child_exits_total{{{scope},process_exit_code="3",supd_child_name="printer",supd_exit_cause="exited",'
        'supd_exit_requested="false"}'
    )
    with running_supervisor(tmp_path, ["--metrics-listen", address]) as sup, sup.channel() as channel:
        stub = pb_grpc.SupervisorStub(channel)
        spawn(stub, "printer", zoo("lines", str(LINES), "", "3"))
        wait_until(lambda: scraped(address, exits) == 1, 10, what="the exit on the scrape endpoint")
        assert scraped(address, stdout) == LINES
        spawn_ok = 'rpc_method="supervisor.v1.Supervisor/Spawn",rpc_response_status_code="OK",rpc_system_name="grpc"'
        assert scraped(address, f"rpc_server_call_duration_seconds_count{{{scope},{spawn_ok}}}") == 1
        assert "otel.metrics.enabled" not in sup.stderr_text(), "no OTLP push without an endpoint"


def test_a_bad_or_busy_metrics_address_stops_supd_at_start(tmp_path: pathlib.Path) -> None:
    bad = subprocess.run(
        [*supd_command(), "--socket", str(tmp_path / "a.sock"), "--metrics-listen", "9464"],
        capture_output=True, text=True, timeout=30, check=False,
    )
    assert bad.returncode == 2
    assert bad.stderr.startswith("supd: --metrics-listen: must be HOST:PORT"), bad.stderr
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = f"127.0.0.1:{holder.getsockname()[1]}"
        result = subprocess.run(
            [*supd_command(), "--socket", str(tmp_path / "run" / "b.sock"), "--state-dir", str(tmp_path / "st"),
             "--metrics-listen", busy],
            capture_output=True, text=True, timeout=30, check=False,
        )
    assert result.returncode == 3, result.stderr
    assert result.stderr.splitlines()[-1] == f"supd: --metrics-listen {busy}: cannot listen: Address already in use"


def test_the_scrape_address_comes_from_the_flag_else_the_config_file(tmp_path: pathlib.Path) -> None:
    config = tmp_path / "supd.toml"
    config.write_text('[supervisor]\nmetrics_listen = "0.0.0.0:9464"\n')
    socket_args = ["--socket", str(tmp_path / "s.sock")]
    assert parse_args([*socket_args, "--config", str(config)]).metrics_listen == "0.0.0.0:9464"
    flag = [*socket_args, "--config", str(config), "--metrics-listen", "[::1]:9465"]
    assert parse_args(flag).metrics_listen == "[::1]:9465"
    assert parse_args(socket_args).metrics_listen == ""
    config.write_text("[supervisor]\nmetrics_listen = 9464\n")
    with pytest.raises(ConfigError) as refused:
        parse_args([*socket_args, "--config", str(config)])
    assert str(refused.value) == f"{config}: supervisor.metrics_listen: must be a string HOST:PORT, got 9464"
