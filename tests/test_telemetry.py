"""Telemetry settings from OTEL_* variables, and supd's own events and spans through the SDK pipeline.

Guards: a bad variable silently exporting nowhere (it must name the variable), export being off
without saying so, and supd's own events losing their span context.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import structlog
from opentelemetry.sdk.trace import TracerProvider

from supervisor._daemon.output.sinks import STDOUT, Origin, Segment
from supervisor._daemon.telemetry import configure as telemetry_module
from supervisor._daemon.telemetry.configure import TelemetrySettings, configure_logging
from supervisor._daemon.telemetry.otlp.transport import ExportTarget
from supervisor.errors import InvalidArgument
from supervisor.testing import running_supervisor, supd_command, wait_until
from supervisor.v1 import supervisor_pb2 as pb
from supervisor.v1 import supervisor_pb2_grpc as pb_grpc

from otlp_receiver import BlackHole, GrpcReceiver, attributes, value

WEB = Origin("web", 1, 4242, "/usr/bin/web")

# -- settings ------------------------------------------------------------------


def test_settings_without_endpoint_disable_export() -> None:
    settings = TelemetrySettings.from_env({})
    assert settings.logs is None and settings.traces is None and not settings.enabled
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in (settings.disabled_reason or "")
    assert settings.resource["service.name"] == "supd"
    assert isinstance(settings.resource["process.pid"], int) and settings.resource["host.name"]


def test_settings_sdk_disabled_wins() -> None:
    settings = TelemetrySettings.from_env({"OTEL_SDK_DISABLED": "TRUE", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"})
    assert settings.logs is None and "OTEL_SDK_DISABLED" in (settings.disabled_reason or "")


def test_settings_grpc_defaults() -> None:
    s = TelemetrySettings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"})
    assert s.logs == ExportTarget("http://collector:4317", "grpc", (), 10.0, insecure=True)
    assert s.traces is not None and s.traces.endpoint == "http://collector:4317"
    bare = TelemetrySettings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317"}).logs
    assert bare is not None and bare.insecure is False
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317", "OTEL_EXPORTER_OTLP_INSECURE": "true"}
    assert TelemetrySettings.from_env(env).logs.insecure is True  # type: ignore[union-attr]
    tls = TelemetrySettings.from_env(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "https://c:4317", "OTEL_EXPORTER_OTLP_INSECURE": "true"}
    )
    assert tls.logs is not None and tls.logs.insecure is False


def test_settings_http_endpoints_follow_the_spec() -> None:
    env = {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}
    s = TelemetrySettings.from_env(env)
    assert s.logs is not None and s.logs.endpoint == "http://c:4318/v1/logs"
    assert s.traces is not None and s.traces.endpoint == "http://c:4318/v1/traces"
    s = TelemetrySettings.from_env({**env, "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "https://logs:443/custom"})
    assert s.logs is not None and s.logs.endpoint == "https://logs:443/custom"  # signal-specific: as is
    s = TelemetrySettings.from_env({**env, "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "grpc"})
    assert s.logs is not None and (s.logs.protocol, s.logs.endpoint) == ("grpc", "http://c:4318/")


def test_settings_headers_timeout_resource() -> None:
    s = TelemetrySettings.from_env(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317",
            "OTEL_EXPORTER_OTLP_HEADERS": "api-key=generic",
            "OTEL_EXPORTER_OTLP_LOGS_HEADERS": " Authorization = Basic%20abc%3D , x-tenant=a%2Cb ",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
            "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT": "750",
            "OTEL_SERVICE_NAME": "edge-supd",
            "OTEL_RESOURCE_ATTRIBUTES": "service.name=ignored,deployment.environment=prod,team=a%20b",
        }
    )
    assert s.logs is not None and s.traces is not None
    assert s.logs.headers == (("Authorization", "Basic abc="), ("x-tenant", "a,b"))
    assert s.traces.headers == (("api-key", "generic"),)
    assert (s.logs.timeout, s.traces.timeout) == (0.75, 2.5)
    assert s.resource["service.name"] == "edge-supd"  # OTEL_SERVICE_NAME wins
    assert s.resource["deployment.environment"] == "prod" and s.resource["team"] == "a b"


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "ten"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "-5"),
        ("OTEL_EXPORTER_OTLP_LOGS_TIMEOUT", "0"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "udp"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "no-equals-sign"),
        ("OTEL_RESOURCE_ATTRIBUTES", "=value"),
        ("OTEL_EXPORTER_OTLP_INSECURE", "yes"),
        ("OTEL_SDK_DISABLED", "maybe"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "ftp://c:21"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:port"),
        ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://"),
        # Issue 15 item 16: a bare word was accepted and supd exported nowhere.
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "notaurl"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317/v1/logs"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:0"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:99999"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://col lector:4317"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://:4317"),
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "localhost"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "unix:///tmp/otel.sock"),
    ],
)
def test_settings_bad_values_name_the_variable(name: str, bad: str) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", name: bad}
    with pytest.raises(InvalidArgument, match=name):
        TelemetrySettings.from_env(env)


def test_settings_http_needs_a_url() -> None:
    env = {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "c:4318"}
    with pytest.raises(InvalidArgument, match="OTEL_EXPORTER_OTLP_LOGS_ENDPOINT"):
        TelemetrySettings.from_env(env)


# -- supd's own events ---------------------------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()
    if telemetry_module._handler is not None:
        logging.getLogger().removeHandler(telemetry_module._handler)
        telemetry_module._handler = None
    telemetry_module._active = None
    sdk_logger = logging.getLogger("opentelemetry")
    for handler in list(sdk_logger.handlers):
        sdk_logger.removeHandler(handler)
    sdk_logger.propagate = True
    logging.captureWarnings(False)


def test_disabled_export_says_so_once(restore_logging: None) -> None:
    out = io.StringIO()
    telemetry = configure_logging(TelemetrySettings.from_env({}), stream=out)
    assert telemetry.line_exporter is None
    assert telemetry_module.get_tracer().start_span("x").get_span_context().is_valid is False
    structlog.get_logger().warning("child.spawn.failed", child="web")
    logging.getLogger("some.library").warning("a %s from stdlib", "warning")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(e["event"], e["level"]) for e in lines] == [
        ("otlp.export.disabled", "info"),
        ("child.spawn.failed", "warning"),
        ("a warning from stdlib", "warning"),
    ]
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in lines[0]["reason"]
    assert lines[1]["timestamp"].endswith("Z") and lines[1]["child"] == "web"
    assert telemetry.shutdown(1.0) is True


def test_own_events_and_spans_reach_the_receiver(restore_logging: None) -> None:
    with GrpcReceiver() as receiver:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_SERVICE_NAME": "supd-under-test"}
        out = io.StringIO()
        telemetry = configure_logging(TelemetrySettings.from_env(env), stream=out)
        assert telemetry.line_exporter is not None
        tracer = telemetry_module.get_tracer()
        with tracer.start_as_current_span("Spawn") as span:
            structlog.get_logger().info("child.spawned", child="web", pid=4242, argv=["a", "b"])
        trace_id = span.get_span_context().trace_id
        assert telemetry.shutdown(10.0) is True

    own = [r for r in receiver.received.records if value(r.body) == "child.spawned"]
    assert len(own) == 1
    rec = own[0]
    assert int.from_bytes(rec.trace_id, "big") == trace_id
    assert (rec.severity_number, rec.severity_text) == (9, "INFO")
    attrs = attributes(rec.attributes)
    assert attrs["child"] == "web" and attrs["pid"] == 4242
    assert {"service.name": "supd-under-test"}.items() <= receiver.received.resources[0].items()
    assert "Spawn" in receiver.received.span_names
    events = [json.loads(line)["event"] for line in out.getvalue().splitlines()]
    assert events[0] == "otlp.export.enabled" and "child.spawned" in events


def test_span_context_is_taken_from_any_provider(restore_logging: None) -> None:
    """Correlation reads the current context, so a span from another provider correlates too."""
    with GrpcReceiver() as receiver:
        settings = TelemetrySettings.from_env({"OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": receiver.endpoint})
        telemetry = configure_logging(settings, stream=io.StringIO())
        with TracerProvider().get_tracer("t").start_as_current_span("Stop") as span:
            structlog.get_logger().error("child.stop.escalated", child="web")
        assert telemetry.shutdown(10.0) is True
    (rec,) = [r for r in receiver.received.records if value(r.body) == "child.stop.escalated"]
    assert rec.span_id == span.get_span_context().span_id.to_bytes(8, "big")
    assert rec.severity_number == 17


def test_shutdown_is_bounded_when_the_endpoint_is_a_black_hole(restore_logging: None) -> None:
    with BlackHole() as hole:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": hole.endpoint, "OTEL_EXPORTER_OTLP_TIMEOUT": "300"}
        telemetry = configure_logging(TelemetrySettings.from_env(env), stream=io.StringIO())
        assert telemetry.line_exporter is not None
        seg = Segment(first_seq=0, count=1, stream=STDOUT, generation=1, time_ns=1, data=b"never delivered\n")
        telemetry.line_exporter.offer(WEB, seg)
        with telemetry.get_tracer().start_as_current_span("Spawn"):
            structlog.get_logger().info("child.spawned", child="web")
        start = time.monotonic()
        assert telemetry.shutdown(2.0) is False
        assert time.monotonic() - start < 4.0
    stats = telemetry.line_exporter.statistics()
    assert (stats.offered, stats.exported, stats.dropped) == (1, 0, 1)


# -- the SDK's own words (issue 15 item 16) -------------------------------------------


def test_a_collector_without_traces_gives_one_supd_event_per_cause(restore_logging: None) -> None:
    """A collector that takes logs but not traces: each span batch made the SDK log its own sentence as an event."""
    receiver = GrpcReceiver()
    receiver.serve_traces = False
    with receiver:
        out = io.StringIO()
        telemetry = configure_logging(
            TelemetrySettings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}), stream=out
        )
        for _ in range(4):
            with telemetry.get_tracer().start_as_current_span("Spawn"):
                structlog.get_logger().info("child.spawned", child="web")
            telemetry.force_flush()
        assert telemetry.shutdown(10.0) is True
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    names = [e["event"] for e in events]
    assert all(not n.startswith(("Failed", "Transient", "Exception")) for n in names), names
    assert not [e for e in events if str(e.get("logger", "")).startswith("opentelemetry")]
    (failed,) = [e for e in events if e["event"] == "otlp.spans.export.failed"]
    assert failed["level"] == "error" and failed["endpoint"] == receiver.endpoint
    assert "UNIMPLEMENTED" in failed["detail"]
    (repeated,) = [e for e in events if e["event"] == "otlp.spans.export.failed.repeated"]
    assert repeated["times"] == 3 and repeated["detail"] == failed["detail"]
    # supd's own events still reach the collector that accepts them.
    assert len([r for r in receiver.received.records if value(r.body) == "child.spawned"]) == 4


def test_other_sdk_words_become_a_field_of_a_supd_event_once(restore_logging: None) -> None:
    with GrpcReceiver() as receiver:
        out = io.StringIO()
        telemetry = configure_logging(
            TelemetrySettings.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint}), stream=out
        )
        for _ in range(3):
            logging.getLogger("opentelemetry.sdk.trace").warning("Queue full, dropping %s.", "span")
        assert telemetry.shutdown(10.0) is True
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    sdk = [e for e in events if e["event"].startswith("otel.sdk")]
    assert sdk == [
        {
            "detail": "Queue full, dropping span.",
            "logger": "opentelemetry.sdk.trace",
            "event": "otel.sdk.warning",
            "level": "warning",
            "timestamp": sdk[0]["timestamp"],
        }
    ]


@pytest.mark.parametrize("endpoint", ["notaurl", "localhost", "http://collector:0"])
def test_supd_refuses_a_malformed_endpoint_at_start(tmp_path: pathlib.Path, endpoint: str) -> None:
    result = subprocess.run(
        [*supd_command(), "--socket", str(tmp_path / "s.sock")],
        env={**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("supd: OTEL_EXPORTER_OTLP_ENDPOINT: ") and result.stderr.count("\n") == 1
    assert repr(endpoint) in result.stderr


def test_export_off_never_imports_the_sdk() -> None:
    """Issue 16 target 5: the SDK and its exporters loaded even with export off (a third of the idle RSS over 35 MB)."""
    code = (
        "import io, sys\n"
        "from supervisor._daemon.telemetry.configure import TelemetrySettings, configure_logging\n"
        "t = configure_logging(TelemetrySettings.from_env({}), stream=io.StringIO())\n"
        "with t.span_tracer().start_as_current_span('Spawn', attributes={'supd.child.name': 'web'}):\n"
        "    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry', 'importlib.metadata'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout


def test_python_warnings_are_log_events_not_direct_stderr_writes() -> None:
    code = (
        "import io, sys, warnings, json\n"
        "from supervisor._daemon.telemetry.configure import TelemetrySettings, configure_logging\n"
        "out = io.StringIO()\n"
        "configure_logging(TelemetrySettings.from_env({}), stream=out)\n"
        "warnings.warn('something is deprecated', DeprecationWarning, stacklevel=1)\n"
        "sys.stdout.write(out.getvalue())\n"
    )
    out = subprocess.run(
        [sys.executable, "-W", "always", "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stderr == ""
    (event,) = [json.loads(line) for line in out.stdout.splitlines() if "deprecated" in line]
    assert event["logger"] == "py.warnings" and event["level"] == "warning"


def test_supd_tells_a_traceless_collector_once_in_its_own_words(tmp_path: pathlib.Path) -> None:
    """A real supd against a collector that takes logs but not traces: one supd event, the SDK's text as detail."""
    receiver = GrpcReceiver()
    receiver.serve_traces = False
    with receiver:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50"}
        with running_supervisor(tmp_path, env=env) as sup, sup.channel() as channel:
            stub = pb_grpc.SupervisorStub(channel)
            for n in range(3):
                spec = pb.ChildSpec(name=f"c{n}", argv=["true"], restart=pb.RESTART_POLICY_NEVER)
                stub.Spawn(pb.SpawnRequest(spec=spec), timeout=10)
                # Each Spawn's event arrives at the collector; its span, exported on the same schedule, is refused.
                wait_until(
                    lambda n=n: any(  # type: ignore[misc]  # mypy cannot type a default-bound lambda
                        value(r.body) == "child.spawned" and attributes(r.attributes).get("child") == f"c{n}"
                        for r in list(receiver.received.records)
                    ),
                    20,
                    what=f"the event of c{n} at the collector",
                )
            wait_until(lambda: "otlp.spans.export.failed" in sup.stderr_text(), 20, what="the failure event")
    assert sup.proc.returncode == 0
    events = [json.loads(line) for line in sup.stderr_text().splitlines() if line.startswith("{")]
    leaked = [e for e in events if "Failed to export" in e["event"] or "opentelemetry" in str(e.get("logger", ""))]
    assert leaked == []
    failed = [e for e in events if e["event"] == "otlp.spans.export.failed"]
    assert len(failed) == 1 and "UNIMPLEMENTED" in failed[0]["detail"], failed
    assert failed[0]["endpoint"] == receiver.endpoint
