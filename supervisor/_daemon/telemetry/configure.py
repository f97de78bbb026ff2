"""supd's telemetry: structlog set up once, supd's own events and spans to OTLP, child lines too.

Three paths, by volume:

* supd's own events (low volume) go through structlog: JSON lines on stderr,
  and, when export is on, also into the OpenTelemetry SDK (``LoggerProvider`` +
  ``BatchLogRecordProcessor`` + the SDK's OTLP exporter), with the current
  span's context so an event caused by an RPC correlates with its span.
* supd's spans: a ``TracerProvider`` with the SDK's OTLP span exporter, or a
  no-op tracer when export is off (``get_tracer()``).
* child output (high volume) bypasses the SDK: ``Telemetry.line_exporter`` is
  a ``LineSink`` (otlp.py) for the drain, with its own bounded queue.

stdlib ``logging`` (grpc, the OTel SDK's own warnings) is rendered as JSON on
stderr as well, with identical messages rate-limited, but never fed back into
OTLP: an exporter reporting its own failure through itself would loop.

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
from collections.abc import Mapping
from typing import Any, TextIO, cast

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry._logs import Logger, SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from structlog.typing import EventDict, Processor, WrappedLogger

from supervisor._daemon.telemetry import log_writer
from supervisor._daemon.telemetry.otlp.export import LineExporter
from supervisor._daemon.telemetry.otlp.transport import GRPC, ExportTarget
from supervisor._daemon.telemetry.settings import TelemetrySettings, supd_version

__all__ = ["Telemetry", "TelemetrySettings", "configure_logging", "get_tracer", "shutdown"]

TRACER_NAME = "supd"
_SEVERITY = {
    "debug": SeverityNumber.DEBUG,
    "info": SeverityNumber.INFO,
    "warning": SeverityNumber.WARN,
    "warn": SeverityNumber.WARN,
    "error": SeverityNumber.ERROR,
    "exception": SeverityNumber.ERROR,
    "critical": SeverityNumber.FATAL,
}
_NOT_ATTRIBUTES = frozenset({"event", "level", "timestamp"})
log = structlog.get_logger()


def _metadata(target: ExportTarget) -> tuple[tuple[str, str], ...]:
    """Headers as gRPC metadata, whose keys must be lower case."""
    return tuple((k.lower(), v) for k, v in target.headers)


def _log_exporter(target: ExportTarget) -> LogRecordExporter:
    if target.protocol == GRPC:
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogs

        return GrpcLogs(target.endpoint, insecure=target.insecure, headers=_metadata(target), timeout=target.timeout)
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogs

    return HttpLogs(target.endpoint, headers=dict(target.headers), timeout=target.timeout)


def _span_exporter(target: ExportTarget) -> SpanExporter:
    if target.protocol == GRPC:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans

        return GrpcSpans(target.endpoint, insecure=target.insecure, headers=_metadata(target), timeout=target.timeout)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans

    return HttpSpans(target.endpoint, headers=dict(target.headers), timeout=target.timeout)


def _attribute(value: Any) -> Any:
    """An OTel attribute value: scalars as they are, lists of strings kept, anything else as str."""
    if isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
        return list(value)
    return str(value)


def _attributes(event_dict: EventDict) -> dict[str, Any]:
    """The event's context as attributes; a dict value (``dropped={"web": 3}``) becomes ``dropped.web``."""
    out: dict[str, Any] = {}
    for name, value in event_dict.items():
        if name in _NOT_ATTRIBUTES:
            continue
        key = "exception.stacktrace" if name == "exception" else name
        if isinstance(value, dict) and value:
            out.update((f"{key}.{k}", _attribute(v)) for k, v in value.items())
        else:
            out[key] = _attribute(value)
    return out


class _EmitToOtel:
    """structlog processor: emit the event into the OTel SDK log pipeline, then pass it on unchanged."""

    def __init__(self, logger: Logger) -> None:
        self._logger = logger

    def __call__(self, _: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        level = str(event_dict.get("level", method_name))
        attributes = _attributes(event_dict)
        now = time.time_ns()
        self._logger.emit(
            timestamp=now,
            observed_timestamp=now,
            context=otel_context.get_current(),
            severity_number=_SEVERITY.get(level, SeverityNumber.INFO),
            severity_text=level.upper(),
            body=str(event_dict.get("event", "")),
            attributes=attributes,
        )
        return event_dict


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
    """What ``configure_logging`` built: providers, the line exporter, and how to shut them down."""

    def __init__(self, settings: TelemetrySettings, exporter_options: Mapping[str, Any] | None = None) -> None:
        self.settings = settings
        resource = Resource(dict(settings.resource))
        self.line_exporter: LineExporter | None = None
        self._logger_provider: LoggerProvider | None = None
        self._tracer_provider: TracerProvider | None = None
        self._tracer: trace.Tracer = trace.NoOpTracer()
        if settings.logs is not None:
            self._logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
            self._logger_provider.add_log_record_processor(BatchLogRecordProcessor(_log_exporter(settings.logs)))
            self.line_exporter = LineExporter.for_target(
                settings.logs, resource=settings.resource, scope_version=supd_version(), **(exporter_options or {})
            )
        if settings.traces is not None:
            self._tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
            self._tracer_provider.add_span_processor(BatchSpanProcessor(_span_exporter(settings.traces)))
            self._tracer = self._tracer_provider.get_tracer(TRACER_NAME, supd_version())

    def __repr__(self) -> str:
        logs = self.settings.logs.endpoint if self.settings.logs else f"off ({self.settings.disabled_reason})"
        return f"<Telemetry logs={logs} traces={self.settings.traces.endpoint if self.settings.traces else 'off'}>"

    def otel_processor(self) -> Processor | None:
        """The structlog processor feeding the SDK log pipeline, or None when log export is off."""
        if self._logger_provider is None:
            return None
        return _EmitToOtel(self._logger_provider.get_logger(TRACER_NAME, supd_version()))

    def get_tracer(self) -> trace.Tracer:
        """supd's tracer: exporting spans, or a no-op tracer when trace export is off."""
        return self._tracer

    def shutdown(self, timeout: float) -> bool:
        """Flush and stop everything within ``timeout`` s; False if something could not be flushed.

        Order: the line exporter first (its last events still reach the SDK
        pipeline), then spans, then supd's own events.
        """
        deadline = time.monotonic() + timeout
        ok = True
        if self.line_exporter is not None:
            ok = self.line_exporter.close(max(0.0, deadline - time.monotonic()) * 0.6)
        # The SDK providers' shutdown waits up to 30 s on a dead endpoint: run both at once, under our deadline.
        threads = [
            threading.Thread(target=provider.shutdown, name=f"otel-shutdown-{name}", daemon=True)
            for name, provider in (("traces", self._tracer_provider), ("logs", self._logger_provider))
            if provider is not None
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.error("otel.shutdown.timeout", pipeline=thread.name, detail="unsent telemetry abandoned")
                ok = False
        return ok


_active: Telemetry | None = None
_handler: logging.Handler | None = None


def configure_logging(
    settings: TelemetrySettings,
    *,
    level: int | str = logging.INFO,
    stream: TextIO | None = None,
    exporter_options: Mapping[str, Any] | None = None,
) -> Telemetry:
    """Configure structlog (JSON lines on ``stream``; and OTLP when on) and build the telemetry.

    Without ``stream``, lines go to stderr through the process's ``LogWriter``
    (log_writer.py): a bounded queue and a writer thread, so a log line never
    blocks the caller, whoever reads stderr and however slowly. structlog and
    stdlib logging (grpc, the OTel SDK) share it. Logs ``otlp.export.enabled``
    or ``otlp.export.disabled`` (with the reason) once.
    """
    global _active, _handler  # noqa: PLW0603 - structlog's configuration is process-wide: so is ours
    if stream is None:
        sys.stderr.flush()
        # LogWriter has the part of TextIO that structlog and logging use: write() and flush().
        out = cast(TextIO, log_writer.install(sys.stderr.fileno()))
    else:
        out = stream
    telemetry = Telemetry(settings, exporter_options)
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
    return telemetry


def get_tracer() -> trace.Tracer:
    """The tracer of the telemetry configured last; a no-op tracer if none was."""
    return _active.get_tracer() if _active is not None else trace.NoOpTracer()


def shutdown(timeout: float) -> bool:
    """Flush and stop the telemetry configured last (see ``Telemetry.shutdown``)."""
    return _active.shutdown(timeout) if _active is not None else True
