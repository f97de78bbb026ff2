"""The OTLP line exporter against real receivers (tests/otlp_receiver.py), and telemetry settings.

Guards, among others: lines dropped without a count (the SDK's "Queue full, dropping Log"), an
exporter that stalls the drain while its endpoint is down or a black hole, errors swallowed
instead of logged with the endpoint's words (seed 04), and a close that abandons queued lines
without saying so (seed 05).
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import structlog
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.sdk.trace import TracerProvider
from structlog.testing import capture_logs

from supervisor._daemon import telemetry as telemetry_module
from supervisor._daemon.otlp import SCOPE_NAME, ExporterStatistics, LineExporter
from supervisor._daemon.otlp_encode import BatchEncoder, origin_attributes
from supervisor._daemon.otlp_transport import ExportTarget, RetryPolicy
from supervisor._daemon.severity import Severity
from supervisor._daemon.sinks import STDERR, STDOUT, Origin, Segment
from supervisor._daemon.telemetry import TelemetrySettings, configure_logging
from supervisor.errors import InvalidArgument
from otlp_receiver import BlackHole, GrpcReceiver, HttpReceiver, attributes, poll, value

RESOURCE = {"service.name": "supd-test", "host.name": "test-host"}
FAST_RETRY = RetryPolicy(initial=0.05, maximum=0.2, give_up_after=30.0)
WEB = Origin("web", 2, 4242, "/usr/bin/web-server")
WORKER = Origin("worker", 1, 4343, "worker")
Receiver = GrpcReceiver | HttpReceiver


def segments(origin: Origin, lines: list[bytes], *, stream: int = STDOUT, first_seq: int = 0,
             per_segment: int = 1000, partial_tail: bool = False) -> list[Segment]:  # fmt: skip
    """Real segments as the drain makes them: runs of newline-terminated lines (the last maybe not)."""
    out = []
    for start in range(0, len(lines), per_segment):
        chunk = lines[start : start + per_segment]
        data = b"\n".join(chunk)
        if not (partial_tail and start + per_segment >= len(lines)):
            data += b"\n"
        out.append(
            Segment(
                first_seq=first_seq + start,
                count=len(chunk),
                stream=stream,
                generation=origin.generation,
                time_ns=time.time_ns(),
                data=data,
            )  # fmt: skip
        )
    return out


def offer_all(exporter: LineExporter, origin: Origin, segs: list[Segment]) -> float:
    """Offer every segment; return how long offering took."""
    start = time.perf_counter()
    for seg in segs:
        exporter.offer(origin, seg)
    return time.perf_counter() - start


def assert_balanced(stats: ExporterStatistics) -> None:
    for name, c in stats.children.items():
        assert c.exported + c.dropped + c.queued == c.offered, (name, c)


def make_exporter(endpoint: str, protocol: str, *, timeout: float = 5.0, **kwargs: Any) -> LineExporter:
    kwargs.setdefault("retry", FAST_RETRY)
    kwargs.setdefault("linger", 0.02)
    kwargs.setdefault("summary_interval", 0.2)
    return LineExporter.for_target(ExportTarget(endpoint, protocol, timeout=timeout), resource=RESOURCE, **kwargs)


@pytest.fixture(params=["grpc", "http"])
def receiver(request: pytest.FixtureRequest) -> Iterator[Receiver]:
    with GrpcReceiver() if request.param == "grpc" else HttpReceiver() as r:
        yield r


@pytest.fixture
def exporters() -> Iterator[list[LineExporter]]:
    """Exporters a test made; each is closed afterwards, so no worker thread outlives its test."""
    made: list[LineExporter] = []
    yield made
    for ex in made:
        ex.close(2.0)


# -- encoding ----------------------------------------------------------------


def test_hand_encoding_parses_as_the_generated_message() -> None:
    """The hand-written wire bytes are exactly the message the generated classes describe."""
    lines = [b"ERROR first", b"", "caf\u00e9 ok".encode(), b"bad \xff\xfe bytes", b"y" * 20000, b"tail"]
    seg = Segment(first_seq=2**40, count=len(lines), stream=STDERR, generation=2, time_ns=1_700_000_000_123_456_789,
                  data=b"\n".join(lines))  # fmt: skip
    enc = BatchEncoder(RESOURCE, SCOPE_NAME, "1.2.3")
    assert enc.add(WEB, seg, list(lines), 0, max_records=100, max_size=1 << 20) == len(lines)
    request = ExportLogsServiceRequest.FromString(enc.take())

    (rl,) = request.resource_logs
    assert attributes(rl.resource.attributes) == RESOURCE
    (sl,) = rl.scope_logs
    assert (sl.scope.name, sl.scope.version) == (SCOPE_NAME, "1.2.3")
    origin_kvs = [KeyValue(key=k, value=_any(v)) for k, v in origin_attributes(WEB, STDERR).items()]
    for i, (line, got) in enumerate(zip(lines, sl.log_records, strict=True)):
        sev = Severity.ERROR if i == 0 else Severity.UNSPECIFIED
        extra = [KeyValue(key="supd.log.partial", value=AnyValue(bool_value=True))] if i == len(lines) - 1 else []
        expected = LogRecord(
            time_unix_nano=seg.time_ns,
            observed_time_unix_nano=seg.time_ns,
            severity_number=int(sev),  # type: ignore[arg-type]
            severity_text=sev.text,
            body=AnyValue(string_value=line.decode("utf-8", "replace")),
            attributes=[*origin_kvs, *extra, KeyValue(key="supd.log.seq", value=AnyValue(int_value=2**40 + i))],
        )
        assert got == expected, i
    assert attributes(sl.log_records[0].attributes)["process.executable.name"] == "web-server"


def _any(v: object) -> AnyValue:
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    return AnyValue(string_value=str(v))


# -- delivery ----------------------------------------------------------------


def test_100k_lines_arrive_with_their_attributes(receiver: Receiver, exporters: list[LineExporter]) -> None:
    ex = make_exporter(receiver.endpoint, receiver.protocol)
    exporters.append(ex)
    expected: dict[tuple[str, str, int], str] = {}
    feeds = []
    for origin in (WEB, WORKER):
        for stream, name in ((STDOUT, "stdout"), (STDERR, "stderr")):
            raw = [(b"ERROR " if i % 100 == 0 else b"") + f"{origin.child} {name} line {i} \u00fc".encode()
                   + (b" \xff" if i % 777 == 0 else b"") for i in range(25_000)]  # fmt: skip
            for i, line in enumerate(raw):
                expected[(origin.child, name, 10 + i)] = line.decode("utf-8", "replace")
            feeds.append((origin, segments(origin, raw, stream=stream, first_seq=10)))
    for origin, segs in feeds:  # interleaved as the drain would: one child's read, then another's
        offer_all(ex, origin, segs)

    receiver.received.wait_for(100_000, timeout=30)
    poll(lambda: ex.statistics().exported == 100_000, what="acknowledged")
    stats = ex.statistics()
    assert (stats.offered, stats.dropped, stats.queued) == (100_000, 0, 0)
    assert_balanced(stats)

    records = receiver.received.records
    assert len(records) == 100_000
    seen = set()
    for rec in records:
        attrs = attributes(rec.attributes)
        key = (attrs["supd.child.name"], attrs["log.iostream"], attrs["supd.log.seq"])
        assert value(rec.body) == expected[key]
        seen.add(key)
        origin = WEB if key[0] == "web" else WORKER
        assert attrs["process.pid"] == origin.pid
        assert attrs["supd.child.generation"] == origin.generation
        assert rec.time_unix_nano == rec.observed_time_unix_nano > 0
        if key[2] % 100 == 10:
            assert (rec.severity_number, rec.severity_text) == (17, "ERROR")
        else:
            assert rec.severity_number == (9 if key[1] == "stdout" else 0)
        assert "supd.log.partial" not in attrs
    assert len(seen) == 100_000
    assert receiver.received.resources == [RESOURCE]
    assert receiver.received.scopes == [(SCOPE_NAME, "")]


def test_partial_line_is_marked(receiver: Receiver, exporters: list[LineExporter]) -> None:
    ex = make_exporter(receiver.endpoint, receiver.protocol)
    exporters.append(ex)
    offer_all(ex, WEB, segments(WEB, [b"whole", b"piece of a long"], partial_tail=True))
    receiver.received.wait_for(2)
    partial = {value(r.body): attributes(r.attributes).get("supd.log.partial") for r in receiver.received.records}
    assert partial == {"whole": None, "piece of a long": True}


def test_close_flushes_without_waiting_for_linger(receiver: Receiver) -> None:
    ex = make_exporter(receiver.endpoint, receiver.protocol, linger=30.0)
    offer_all(ex, WEB, segments(WEB, [b"line %d" % i for i in range(5000)]))
    start = time.monotonic()
    assert ex.close(5.0) is True
    assert time.monotonic() - start < 5.0
    assert len(receiver.received) == 5000
    stats = ex.statistics()
    assert (stats.state, stats.exported, stats.dropped, stats.queued) == ("closed", 5000, 0, 0)
    ex.offer(WEB, segments(WEB, [b"late"])[0])
    assert ex.statistics().children["web"].dropped == 1  # after close: dropped and counted, never lost silently


# -- failure -------------------------------------------------------------------


def test_endpoint_down_drops_and_counts_then_resumes(receiver: Receiver, exporters: list[LineExporter]) -> None:
    ex = make_exporter(receiver.endpoint, receiver.protocol, max_queue_lines=5000)
    exporters.append(ex)
    offer_all(ex, WEB, segments(WEB, [b"before %d" % i for i in range(1000)]))
    poll(lambda: ex.statistics().exported == 1000, what="first lines exported")

    receiver.stop()
    with capture_logs() as logs:
        took = offer_all(ex, WEB, segments(WEB, [b"down %d" % i for i in range(100_000)], first_seq=1000))
        assert took < 2.0, f"offering 100k lines took {took:.2f}s while the endpoint was down"
        assert_balanced(ex.statistics())
        poll(lambda: any(e["event"] == "otlp.export.dropped" for e in logs), what="a drop summary")
        stats = ex.statistics()
        assert stats.dropped > 0
        assert stats.dropped_by_reason["queue_full"] == stats.dropped
        assert_balanced(stats)
        poll(lambda: ex.statistics().requests_failed >= 3, what="retries")

        receiver.start()  # same port
        came_back = time.monotonic()
        poll(lambda: ex.statistics().queued == 0, timeout=10, what="the backlog to drain")
        assert time.monotonic() - came_back < 5.0
        offer_all(ex, WEB, segments(WEB, [b"after %d" % i for i in range(1000)], first_seq=101_000))
        poll(lambda: ex.statistics().queued == 0, what="lines after recovery")
        assert ex.close(5.0) is True

    stats = ex.statistics()
    assert stats.offered == 102_000
    assert stats.exported + stats.dropped == stats.offered
    assert_balanced(stats)
    seqs = {attributes(r.attributes)["supd.log.seq"] for r in receiver.received.records}
    assert len(seqs) == stats.exported  # every acknowledged line arrived, once
    assert {0, 999, 101_000, 101_999} <= seqs

    events = [e["event"] for e in logs]
    summary = next(e for e in logs if e["event"] == "otlp.export.dropped")
    assert summary["log_level"] == "warning" and summary["dropped"]["web"] > 0
    assert sum(e["dropped"]["web"] for e in logs if e["event"] == "otlp.export.dropped") == stats.dropped
    failed = [e for e in logs if e["event"] == "otlp.export.failed"]
    assert failed and failed[0]["retryable"] is True and failed[0]["detail"]
    assert len(failed) < stats.requests_failed  # identical errors are counted, not each logged
    assert "otlp.export.recovered" in events


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_black_hole_never_blocks_offer(protocol: str) -> None:
    with BlackHole() as hole:
        endpoint = hole.endpoint if protocol == "grpc" else hole.endpoint + "/v1/logs"
        ex = make_exporter(endpoint, protocol, timeout=0.3, max_queue_lines=5000)
        with capture_logs() as logs:
            took = offer_all(ex, WEB, segments(WEB, [b"into the void %d" % i for i in range(100_000)]))
            assert took < 2.0, f"offering took {took:.2f}s"
            poll(lambda: ex.statistics().requests_failed >= 1, what="a timed-out request")
            start = time.monotonic()
            assert ex.close(1.0) is False
            assert time.monotonic() - start < 3.0
    stats = ex.statistics()
    assert (stats.offered, stats.exported, stats.dropped, stats.queued) == (100_000, 0, 100_000, 0)
    assert_balanced(stats)
    failed = next(e for e in logs if e["event"] == "otlp.export.failed")
    # gRPC: DEADLINE_EXCEEDED, or UNAVAILABLE "... timed out before receiving SETTINGS frame"
    assert failed["reason"] == "TimeoutError" or "DEADLINE" in failed["reason"] or "timed out" in failed["detail"]
    assert any(e["event"] == "otlp.export.close.dropped" for e in logs)


@pytest.mark.parametrize(("kind", "failure"), [("grpc", grpc.StatusCode.INVALID_ARGUMENT), ("http", 400)])
def test_rejections_are_not_retried(kind: str, failure: Any) -> None:
    with GrpcReceiver() if kind == "grpc" else HttpReceiver() as receiver:
        receiver.fail_with = failure
        ex = make_exporter(receiver.endpoint, receiver.protocol)
        with capture_logs() as logs:
            offer_all(ex, WEB, segments(WEB, [b"x %d" % i for i in range(10)]))
            poll(lambda: ex.statistics().dropped == 10, what="the batch dropped")
            assert receiver.received.requests == 1
            ex.close(2.0)
    assert receiver.received.requests == 1
    stats = ex.statistics()
    assert (stats.exported, stats.dropped, stats.dropped_by_reason) == (0, 10, {"failed": 10})
    (failed,) = [e for e in logs if e["event"] == "otlp.export.failed"]
    assert failed["retryable"] is False and failed["batch_dropped"] is True
    assert failed["detail"] == "refused by the test receiver"  # the endpoint's own words
    assert failed["log_level"] == "error"


@pytest.mark.parametrize(("kind", "failure"), [("grpc", grpc.StatusCode.UNAVAILABLE), ("http", 503)])
def test_unavailable_is_retried(kind: str, failure: Any) -> None:
    with GrpcReceiver() if kind == "grpc" else HttpReceiver() as receiver:
        receiver.fail_with = failure
        ex = make_exporter(receiver.endpoint, receiver.protocol)
        offer_all(ex, WEB, segments(WEB, [b"x %d" % i for i in range(10)]))
        poll(lambda: receiver.received.requests >= 3, what="retries")
        assert ex.statistics().queued == 10
        receiver.fail_with = None
        poll(lambda: ex.statistics().exported == 10, what="the retried batch")
        assert ex.close(2.0) is True
    assert len(receiver.received) == 10


def test_partial_success_counts_rejected_records(receiver: Receiver) -> None:
    receiver.reject = 3
    ex = make_exporter(receiver.endpoint, receiver.protocol)
    with capture_logs() as logs:
        offer_all(ex, WEB, segments(WEB, [b"x %d" % i for i in range(10)]))
        assert ex.close(5.0) is True
    stats = ex.statistics()
    assert (stats.exported, stats.dropped, stats.dropped_by_reason) == (7, 3, {"rejected": 3})
    partial = next(e for e in logs if e["event"] == "otlp.export.partial")
    assert partial["receiver_message"] == "test receiver rejects some"


def test_offer_rejects_event_segments(exporters: list[LineExporter]) -> None:
    ex = make_exporter("http://127.0.0.1:9", "grpc")
    exporters.append(ex)
    with pytest.raises(ValueError, match="line segments only"):
        ex.offer(WEB, Segment(first_seq=0, count=1, stream=0, generation=1, time_ns=1, event=_event()))


def _event() -> Any:
    from supervisor.v1 import supervisor_pb2 as pb

    return pb.Event()


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
    s = TelemetrySettings.from_env({
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317",
        "OTEL_EXPORTER_OTLP_HEADERS": "api-key=generic",
        "OTEL_EXPORTER_OTLP_LOGS_HEADERS": " Authorization = Basic%20abc%3D , x-tenant=a%2Cb ",
        "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
        "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT": "750",
        "OTEL_SERVICE_NAME": "edge-supd",
        "OTEL_RESOURCE_ATTRIBUTES": "service.name=ignored,deployment.environment=prod,team=a%20b",
    })  # fmt: skip
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
