"""supd's telemetry: structlog set up once, supd's own events and spans to OTLP, child lines too.

Three paths, by volume:

* supd's own events (low volume) go through structlog: JSON lines on stderr
  through a never-blocking ``LogWriter`` (log_writer.py), and, when export is
  on, also into the OpenTelemetry SDK (sdk_pipeline.py), with the current
  span's context so an event caused by an RPC correlates with its span.
* supd's spans: the SDK's ``TracerProvider`` when export is on, else a no-op
  tracer (``get_tracer()``).
* child output (high volume) bypasses the SDK: ``Telemetry.line_exporter`` is
  a ``LineSink`` (otlp/export.py) for the drain, with its own bounded queue.
* supd's metrics (metrics.py): the SDK's ``MeterProvider`` when metrics are
  exported; ``observe`` attaches the children once they exist, and
  ``rpc_interceptors`` gives the server its timing interceptor.

The SDK and its exporters are imported only when an endpoint is set. stdlib
``logging`` (grpc and other libraries) is rendered as JSON on stderr as well,
with identical messages rate-limited, but never fed back into OTLP: an
exporter reporting its own failure through itself would loop. The SDK's own
log records never appear as they are: sdk_report.py turns them into supd's
events (``otlp.spans.export.failed``, ``otel.sdk.warning``) with the SDK's
words as a field.

Startup: ``telemetry = configure_logging(TelemetrySettings.from_env(os.environ))``
before anything logs; attach ``telemetry.line_exporter`` (if not None) to the
drain; on shutdown, after the children and the server are down, call
``telemetry.shutdown(timeout)``. The module functions ``get_tracer()`` and
``shutdown()`` act on the telemetry configured last (structlog's configuration
is process-wide anyway).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TextIO, cast

import structlog
from structlog.typing import Processor

from supervisor._daemon.telemetry import log_writer
from supervisor._daemon.telemetry.settings import TelemetrySettings, supd_version
from supervisor._daemon.telemetry.tracing import NO_SPANS, SpanTracer

if TYPE_CHECKING:
    import grpc
    from opentelemetry import trace

    from supervisor._daemon.children.driver import ChildDriver
    from supervisor._daemon.telemetry.metrics import MetricsPipeline
    from supervisor._daemon.telemetry.otlp.export import LineExporter
    from supervisor._daemon.telemetry.sdk_pipeline import SdkPipelines

__all__ = ["Telemetry", "TelemetrySettings", "configure_logging", "get_tracer", "shutdown"]

log = structlog.get_logger()


class _RepeatFilter(logging.Filter):
    """Lets the first of identical stdlib records through, then one per ``interval`` s with a ``repeats`` count."""

    def __init__(self, interval: float = 30.0) -> None:
        super().__init__()
        self._interval = interval
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = time.monotonic()
        with self._lock:
            last, suppressed = self._seen.get(key, (0.0, 0))
            if last and now - last < self._interval:
                self._seen[key] = (last, suppressed + 1)
                return False
            if len(self._seen) > 1000:
                self._seen.clear()
            self._seen[key] = (now, 0)
        if suppressed:
            record.repeats = suppressed
        return True


class Telemetry:
    """What ``configure_logging`` built: the line exporter, the SDK pipelines when on, and how to shut them down."""

    def __init__(
        self, settings: TelemetrySettings, exporter_options: Mapping[str, Any] | None = None, metrics_listen: str = ""
    ) -> None:
        self.settings = settings
        self.line_exporter: LineExporter | None = None
        self._sdk: SdkPipelines | None = None
        if settings.enabled:
            # The SDK and its exporters load only now: with export off supd never imports them.
            from supervisor._daemon.telemetry.sdk_pipeline import SdkPipelines

            self._sdk = SdkPipelines(settings)
        self._metrics: MetricsPipeline | None = None
        if settings.metrics is not None or metrics_listen:
            from supervisor._daemon.telemetry.metrics import MetricsPipeline

            self._metrics = MetricsPipeline(settings, metrics_listen)
        if settings.logs is not None:
            from supervisor._daemon.telemetry.otlp.export import LineExporter

            self.line_exporter = LineExporter.for_target(
                settings.logs, resource=settings.resource, scope_version=supd_version(), **(exporter_options or {})
            )

    def __repr__(self) -> str:
        logs = self.settings.logs.endpoint if self.settings.logs else f"off ({self.settings.disabled_reason})"
        return f"<Telemetry logs={logs} traces={self.settings.traces.endpoint if self.settings.traces else 'off'}>"

    def observe(self, children: Callable[[], Sequence[ChildDriver]]) -> None:
        """Let the metrics read ``children()`` (any thread) and the line exporter at each collection (when on)."""
        if self._metrics is not None:
            self._metrics.observe(children, self.line_exporter)

    def serve_scrapes(self) -> None:
        """Start the Prometheus endpoint (``metrics_listen``) if any; ListenError when it cannot be bound."""
        if self._metrics is not None and self._metrics.prometheus is not None:
            self._metrics.prometheus.start()

    def rpc_interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        """The server interceptor timing every RPC when metrics are on; none otherwise."""
        if self._metrics is None:
            return []
        from supervisor._daemon.telemetry.metrics import DURATION_BUCKETS
        from supervisor._daemon.telemetry.rpc_metrics import RpcMetrics

        return [RpcMetrics(self._metrics.meter, DURATION_BUCKETS)]

    def otel_processor(self) -> Processor | None:
        """The structlog processor feeding the SDK log pipeline, or None when log export is off."""
        return self._sdk.otel_processor() if self._sdk is not None else None

    def get_tracer(self) -> trace.Tracer:
        """supd's tracer: exporting spans, or the OpenTelemetry API's no-op tracer when trace export is off."""
        if self._sdk is not None:
            return self._sdk.tracer
        from opentelemetry import trace

        return trace.NoOpTracer()

    def span_tracer(self) -> SpanTracer:
        """supd's tracer for the service: exporting spans, or ``NO_SPANS`` (which loads nothing) when export is off."""
        return self._sdk.tracer if self._sdk is not None else NO_SPANS

    def force_flush(self, timeout: float = 10.0) -> bool:
        """Export supd's pending events, spans and metrics now (each within ``timeout`` s); True when none is left."""
        ok = self._sdk.force_flush(timeout) if self._sdk is not None else True
        return (self._metrics.force_flush(timeout) if self._metrics is not None else True) and ok

    def shutdown(self, timeout: float) -> bool:
        """Flush and stop everything within ``timeout`` s; False if something could not be flushed.

        Order: the line exporter first (its last events still reach the SDK
        pipeline), then spans and supd's own events together, then one last
        collection of the metrics.
        """
        deadline = time.monotonic() + timeout
        ok = True
        if self.line_exporter is not None:
            ok = self.line_exporter.close(max(0.0, deadline - time.monotonic()) * 0.6)
        if self._sdk is not None:
            ok = self._sdk.shutdown(deadline) and ok
        if self._metrics is not None:
            ok = self._metrics.shutdown(deadline) and ok
        return ok


_active: Telemetry | None = None
_handler: logging.Handler | None = None


def configure_logging(
    settings: TelemetrySettings,
    *,
    level: int | str = logging.INFO,
    stream: TextIO | None = None,
    exporter_options: Mapping[str, Any] | None = None,
    metrics_listen: str = "",
) -> Telemetry:
    """Configure structlog (JSON lines on ``stream``; and OTLP when on) and build the telemetry.

    Without ``stream``, lines go to stderr through the process's ``LogWriter``
    (log_writer.py): a bounded queue and a writer thread, so a log line never
    blocks the caller, whoever reads stderr and however slowly. structlog,
    stdlib logging (grpc, the OTel SDK) and Python warnings share it. Logs ``otlp.export.enabled``
    or ``otlp.export.disabled`` (with the reason) once.
    """
    global _active, _handler  # noqa: PLW0603 - structlog's configuration is process-wide: so is ours
    if stream is None:
        sys.stderr.flush()
        # LogWriter has the part of TextIO that structlog and logging use: write() and flush().
        out = cast(TextIO, log_writer.install(sys.stderr.fileno()))
    else:
        out = stream
    telemetry = Telemetry(settings, exporter_options, metrics_listen)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    otel = telemetry.otel_processor()
    structlog.configure(
        processors=[*shared, *([otel] if otel else []), structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(
            level if isinstance(level, int) else logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.WriteLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.addFilter(_RepeatFilter())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ExtraAdder(allow=["repeats"]),
                *shared,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    # Python warnings would be printed to sys.stderr directly, blocking like any synchronous write: log them.
    logging.captureWarnings(True)
    _handler = handler
    _active = telemetry
    if settings.logs is None:
        log.info("otlp.export.disabled", reason=settings.disabled_reason)
    else:
        log.info(
            "otlp.export.enabled",
            logs_endpoint=settings.logs.endpoint,
            protocol=settings.logs.protocol,
            traces_endpoint=settings.traces.endpoint if settings.traces else None,
        )
    if settings.metrics is not None:
        target = settings.metrics.target
        log.info(
            "otel.metrics.enabled", exporter=settings.metrics.exporter, interval_s=settings.metrics.interval,
            endpoint=target.endpoint if target else None, protocol=target.protocol if target else None,
        )
    return telemetry


def get_tracer() -> trace.Tracer:
    """The tracer of the telemetry configured last; a no-op tracer if none was."""
    if _active is not None:
        return _active.get_tracer()
    from opentelemetry import trace

    return trace.NoOpTracer()


def shutdown(timeout: float) -> bool:
    """Flush and stop the telemetry configured last (see ``Telemetry.shutdown``)."""
    return _active.shutdown(timeout) if _active is not None else True
