"""The OTLP line exporter against real receivers (tests/otlp_receiver.py).

Guards, among others: lines dropped without a count (the SDK's "Queue full, dropping Log"), an
exporter that stalls the drain while its endpoint is down or a black hole, errors swallowed
instead of logged with the endpoint's words (seed 04), and a close that abandons queued lines
without saying so (seed 05).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from structlog.testing import capture_logs

from supervisor._daemon.output.sinks import STDERR, STDOUT, Origin, Segment
from supervisor._daemon.telemetry.otlp.encode import BatchEncoder, origin_attributes
from supervisor._daemon.telemetry.otlp.export import SCOPE_NAME, ExporterStatistics, LineExporter
from supervisor._daemon.telemetry.otlp.transport import ExportTarget, RetryPolicy
from supervisor._daemon.telemetry.severity import Severity
from supervisor.testing import wait_until as poll

from otlp_receiver import BlackHole, GrpcReceiver, HttpReceiver, attributes, value

RESOURCE = {"service.name": "supd-test", "host.name": "test-host"}
FAST_RETRY = RetryPolicy(initial=0.05, maximum=0.2, give_up_after=30.0)
WEB = Origin("web", 2, 4242, "/usr/bin/web-server")
WORKER = Origin("worker", 1, 4343, "worker")
Receiver = GrpcReceiver | HttpReceiver


def segments(
    origin: Origin,
    lines: list[bytes],
    *,
    stream: int = STDOUT,
    first_seq: int = 0,
    per_segment: int = 1000,
    partial_tail: bool = False,
) -> list[Segment]:
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
            )
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
    seg = Segment(
        first_seq=2**40,
        count=len(lines),
        stream=STDERR,
        generation=2,
        time_ns=1_700_000_000_123_456_789,
        data=b"\n".join(lines),
    )
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
            raw = [
                (b"ERROR " if i % 100 == 0 else b"")
                + f"{origin.child} {name} line {i} \u00fc".encode()
                + (b" \xff" if i % 777 == 0 else b"")
                for i in range(25_000)
            ]
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


def test_headers_are_sent(receiver: Receiver) -> None:
    target = ExportTarget(receiver.endpoint, receiver.protocol, headers=(("Authorization", "Bearer t0k"),))
    ex = LineExporter.for_target(target, resource=RESOURCE, linger=0.0)
    offer_all(ex, WEB, segments(WEB, [b"x"]))
    assert ex.close(5.0) is True
    assert receiver.received.headers["authorization"] == "Bearer t0k"


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


def test_a_forgotten_child_leaves_its_counts_and_a_new_one_starts_afresh() -> None:
    with BlackHole() as hole:
        ex = make_exporter(hole.endpoint, "http/protobuf", timeout=0.5)
        offer_all(ex, WEB, segments(WEB, [b"old %d" % i for i in range(100)]))
        ex.forget("web")  # its 100 lines are still queued or in flight
        offer_all(ex, WEB, segments(WEB, [b"new %d" % i for i in range(7)]))
        assert ex.statistics().children["web"].offered == 7
        assert ex.close(1.0) is False
    stats = ex.statistics()
    assert stats.children["web"].dropped == 7 and stats.dropped == 7
    assert stats.dropped_by_reason.get("closed", 0) + stats.dropped_by_reason.get("failed", 0) == 107


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
    ex = make_exporter(receiver.endpoint, receiver.protocol, linger=30.0)  # sent by close()
    with capture_logs() as logs:
        offer_all(ex, WEB, segments(WEB, [b"x %d" % i for i in range(10)]))
        assert ex.close(5.0) is False  # lines were dropped while closing
    stats = ex.statistics()
    assert (stats.exported, stats.dropped, stats.dropped_by_reason) == (7, 3, {"rejected": 3})
    partial = next(e for e in logs if e["event"] == "otlp.export.partial")
    assert partial["receiver_message"] == "test receiver rejects some"


def test_miscounted_segments_keep_the_accounting_exact(receiver: Receiver) -> None:
    """A drain bug (count != lines) is logged, and offered == exported + dropped still holds."""
    ex = make_exporter(receiver.endpoint, receiver.protocol, linger=30.0)  # sent by close()
    with capture_logs() as logs:
        ex.offer(WEB, Segment(first_seq=0, count=5, stream=STDOUT, generation=2, time_ns=1, data=b"a\nb\nc\n"))
        ex.offer(WEB, Segment(first_seq=5, count=1, stream=STDOUT, generation=2, time_ns=1, data=b"d\ne\nf\n"))
        assert ex.close(5.0) is False  # lines were dropped while closing
    stats = ex.statistics()
    assert (stats.offered, stats.exported, stats.dropped, stats.queued) == (6, 4, 2, 0)
    assert stats.dropped_by_reason == {"malformed": 2}
    assert [value(r.body) for r in receiver.received.records] == ["a", "b", "c", "d"]
    assert sum(e["event"] == "otlp.segment.malformed" for e in logs) == 2


def test_offer_rejects_event_segments(exporters: list[LineExporter]) -> None:
    ex = make_exporter("http://127.0.0.1:9", "grpc")
    exporters.append(ex)
    with pytest.raises(ValueError, match="line segments only"):
        ex.offer(WEB, Segment(first_seq=0, count=1, stream=0, generation=1, time_ns=1, event=_event()))


def _event() -> Any:
    from supervisor.v1 import supervisor_pb2 as pb

    return pb.Event()
