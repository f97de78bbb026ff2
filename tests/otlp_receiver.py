"""Real OTLP receivers for tests (logs, traces, metrics): gRPC, HTTP/protobuf, and a black hole.

Each listens on 127.0.0.1 (an ephemeral port on first start), records what it
receives thread-safely, can be stopped and started again on the same port (to
play an endpoint that goes down and comes back), and is a context manager.
``fail_with`` makes a receiver answer every request with an error instead
(a gRPC status code, or an HTTP status); failed requests are counted in
``requests`` but their records are not kept. ``reject`` makes it answer with a
partial success rejecting that many records of each request (it keeps the rest).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import http.server
import socket
import threading
from collections.abc import Iterator
from typing import Any, Self

import grpc
from google.rpc import status_pb2  # type: ignore[import-untyped]
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.metrics.v1.metrics_pb2 import Metric

from supervisor.testing import wait_until

__all__ = ["BlackHole", "GrpcReceiver", "HttpReceiver", "Received", "attributes", "value"]


def value(v: AnyValue) -> Any:
    """The Python value of an AnyValue (scalars only)."""
    kind = v.WhichOneof("value")
    return None if kind is None else getattr(v, kind)


def attributes(kvs: Iterator[KeyValue] | Any) -> dict[str, Any]:
    """A KeyValue list as a dict."""
    return {kv.key: value(kv.value) for kv in kvs}


class Received:
    """What a receiver got: requests (including failed ones), and records with their resource and scope."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.records: list[LogRecord] = []
        self.resources: list[dict[str, Any]] = []
        self.scopes: list[tuple[str, str]] = []
        self.span_names: list[str] = []
        self.metric_requests = 0
        self.metrics: dict[str, Metric] = {}  # by name, as last received
        self.headers: dict[str, str] = {}  # of the last request, names lower-cased

    def count_request(self, headers: Iterator[tuple[str, str]] | Any = ()) -> None:
        with self._lock:
            self.requests += 1
            self.headers = {k.lower(): v for k, v in headers}

    def add(self, request: logs_service_pb2.ExportLogsServiceRequest) -> None:
        with self._lock:
            for rl in request.resource_logs:
                resource = attributes(rl.resource.attributes)
                if resource not in self.resources:
                    self.resources.append(resource)
                for sl in rl.scope_logs:
                    if (sl.scope.name, sl.scope.version) not in self.scopes:
                        self.scopes.append((sl.scope.name, sl.scope.version))
                    self.records.extend(sl.log_records)

    def add_spans(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        with self._lock:
            for rs in request.resource_spans:
                for ss in rs.scope_spans:
                    self.span_names.extend(span.name for span in ss.spans)

    def add_metrics(self, request: metrics_service_pb2.ExportMetricsServiceRequest) -> None:
        with self._lock:
            self.metric_requests += 1
            for rm in request.resource_metrics:
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        self.metrics[metric.name] = metric

    def points(self, name: str) -> list[tuple[dict[str, Any], Any]]:
        """The data points of metric ``name`` as last received: (attributes, point), [] when none came yet."""
        with self._lock:
            metric = self.metrics.get(name)
        if metric is None:
            return []
        data = getattr(metric, metric.WhichOneof("data"))
        return [(attributes(p.attributes), p) for p in data.data_points]

    def __len__(self) -> int:
        with self._lock:
            return len(self.records)

    def wait_for(self, n: int, timeout: float = 10.0) -> None:
        """Wait until at least ``n`` records arrived (AssertionError after ``timeout`` s)."""
        wait_until(lambda: len(self) >= n, timeout, what=f"{n} records (have {len(self)})")


class _Restartable:
    """start/stop on one port, and the context-manager protocol."""

    port = 0
    reject = 0

    def response(self) -> logs_service_pb2.ExportLogsServiceResponse:
        """Success, or a partial success rejecting ``reject`` records."""
        if not self.reject:
            return logs_service_pb2.ExportLogsServiceResponse()
        return logs_service_pb2.ExportLogsServiceResponse(
            partial_success=logs_service_pb2.ExportLogsPartialSuccess(
                rejected_log_records=self.reject, error_message="test receiver rejects some"
            )
        )

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class GrpcReceiver(_Restartable):
    """OTLP/gRPC LogsService (and TraceService, MetricsService). ``fail_with``: a status code for logs."""

    protocol = "grpc"

    def __init__(self) -> None:
        self.received = Received()
        self.fail_with: grpc.StatusCode | None = None
        self.fail_details = "refused by the test receiver"
        self.serve_traces = True  # False: a collector that takes logs but answers UNIMPLEMENTED for traces
        self.serve_metrics = True  # False: likewise for metrics
        self._server: grpc.Server | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.address}"

    def start(self) -> Self:
        receiver = self

        class Service(logs_service_pb2_grpc.LogsServiceServicer):
            def Export(
                self, request: logs_service_pb2.ExportLogsServiceRequest, context: grpc.ServicerContext
            ) -> logs_service_pb2.ExportLogsServiceResponse:
                receiver.received.count_request(context.invocation_metadata())
                if receiver.fail_with is not None:
                    context.abort(receiver.fail_with, receiver.fail_details)
                receiver.received.add(request)
                return receiver.response()

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(
                self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
            ) -> trace_service_pb2.ExportTraceServiceResponse:
                receiver.received.add_spans(request)
                return trace_service_pb2.ExportTraceServiceResponse()

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(
                self, request: metrics_service_pb2.ExportMetricsServiceRequest, context: grpc.ServicerContext
            ) -> metrics_service_pb2.ExportMetricsServiceResponse:
                receiver.received.add_metrics(request)
                return metrics_service_pb2.ExportMetricsServiceResponse()

        server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=4))
        if self.serve_metrics:
            metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)  # type: ignore[no-untyped-call]
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Service(), server)  # type: ignore[no-untyped-call]
        if self.serve_traces:
            trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)  # type: ignore[no-untyped-call]
        port = server.add_insecure_port(f"127.0.0.1:{self.port}")
        if not port:
            raise RuntimeError(f"cannot listen on 127.0.0.1:{self.port}")
        self.port = port
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait()
            self._server = None


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as an exporter's connection expects
    receiver: HttpReceiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        receiver = self.receiver
        receiver.received.count_request(self.headers.items())
        if self.path == "/v1/traces":
            receiver.received.add_spans(trace_service_pb2.ExportTraceServiceRequest.FromString(body))
            empty = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self._answer(200, empty, "application/x-protobuf")
            return
        if self.path == "/v1/metrics":
            receiver.received.add_metrics(metrics_service_pb2.ExportMetricsServiceRequest.FromString(body))
            empty = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
            self._answer(200, empty, "application/x-protobuf")
            return
        if self.path != "/v1/logs":
            self._answer(404, b"no such path", "text/plain")
            return
        if receiver.fail_with is not None:
            status = status_pb2.Status(code=3, message=receiver.fail_details)
            self._answer(receiver.fail_with, status.SerializeToString(), "application/x-protobuf")
            return
        if self.headers.get("Content-Type") != "application/x-protobuf":
            self._answer(415, b"want application/x-protobuf", "text/plain")
            return
        receiver.received.add(logs_service_pb2.ExportLogsServiceRequest.FromString(body))
        self._answer(200, receiver.response().SerializeToString(), "application/x-protobuf")

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests assert on what was received, not on access logs."""


class HttpReceiver(_Restartable):
    """An OTLP/HTTP receiver for POST /v1/logs. ``fail_with``: an HTTP status to answer instead."""

    protocol = "http/protobuf"

    def __init__(self) -> None:
        self.received = Received()
        self.fail_with: int | None = None
        self.fail_details = "refused by the test receiver"
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://{self.address}/v1/logs"

    def start(self) -> Self:
        receiver = self

        class Handler(_Handler):
            def setup(self) -> None:
                with receiver._conns_lock:
                    receiver._conns.add(self.request)
                super().setup()

            def finish(self) -> None:
                super().finish()
                with receiver._conns_lock:
                    receiver._conns.discard(self.request)

        Handler.receiver = self
        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and cut kept-alive connections, so the endpoint is really down."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):  # the handler may have closed it meanwhile
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(5)
        self._server = None


class BlackHole(_Restartable):
    """Accepts TCP connections and never answers (nor reads): every request must time out."""

    def __init__(self) -> None:
        self._sock: socket.socket | None = None
        self._held: list[socket.socket] = []
        self._thread: threading.Thread | None = None
        self.accepted = 0

    @property
    def endpoint(self) -> str:
        return f"http://{self.address}"

    def start(self) -> Self:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        self.port = sock.getsockname()[1]
        self._sock = sock
        self._thread = threading.Thread(target=self._accept, args=(sock,), daemon=True)
        self._thread.start()
        return self

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return  # stop() closed the listener
            self._held.append(conn)
            self.accepted += 1

    def stop(self) -> None:
        if self._sock is None:
            return
        self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        if self._thread is not None:
            self._thread.join(5)
        for conn in self._held:
            conn.close()
        self._held.clear()
        self._sock = None
