"""The OpenTelemetry SDK pipelines for supd's own events and spans: imported only when export is on.

supd's own events (structlog) go into a ``LoggerProvider`` with a
``BatchLogRecordProcessor`` and the SDK's OTLP log exporter, with the current
span's context so an event caused by an RPC correlates with its span; spans go
through a ``TracerProvider`` with the SDK's OTLP span exporter. Both exporters
are wrapped (sdk_report.py) so that their failures are supd's own events, once
per cause. Importing this module loads the SDK and its exporters (several MB):
``configure`` does so only when an endpoint is set.
"""

from __future__ import annotations

import threading
import time
from typing import Any

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

from supervisor._daemon.telemetry.otlp.target import GRPC, ExportTarget
from supervisor._daemon.telemetry.sdk_report import ReportingLogExporter, ReportingSpanExporter, install_bridge
from supervisor._daemon.telemetry.settings import TelemetrySettings, supd_version

__all__ = ["TRACER_NAME", "SdkPipelines"]

log = structlog.get_logger()
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


def _log_exporter(target: ExportTarget) -> LogRecordExporter:
    if target.protocol == GRPC:
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogs

        return GrpcLogs(target.endpoint, insecure=target.insecure, headers=target.metadata(), timeout=target.timeout)
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogs

    return HttpLogs(target.endpoint, headers=dict(target.headers), timeout=target.timeout)


def _span_exporter(target: ExportTarget) -> SpanExporter:
    if target.protocol == GRPC:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpans

        return GrpcSpans(target.endpoint, insecure=target.insecure, headers=target.metadata(), timeout=target.timeout)
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



class SdkPipelines:
    """The SDK providers for supd's own events (``settings.logs``) and spans (``settings.traces``)."""

    def __init__(self, settings: TelemetrySettings) -> None:
        resource = Resource(dict(settings.resource))
        self._logger_provider: LoggerProvider | None = None
        self._tracer_provider: TracerProvider | None = None
        self.tracer: trace.Tracer = trace.NoOpTracer()
        if settings.logs is not None:
            self._logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
            exporter = ReportingLogExporter(_log_exporter(settings.logs), settings.logs.endpoint)
            self._logger_provider.add_log_record_processor(BatchLogRecordProcessor(exporter))
        if settings.traces is not None:
            self._tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
            spans = ReportingSpanExporter(_span_exporter(settings.traces), settings.traces.endpoint)
            self._tracer_provider.add_span_processor(BatchSpanProcessor(spans))
            self.tracer = self._tracer_provider.get_tracer(TRACER_NAME, supd_version())
        install_bridge()  # after the exporters: it also lifts the SDK's duplicate filter from their loggers

    def otel_processor(self) -> Processor | None:
        """The structlog processor feeding the SDK log pipeline, or None when log export is off."""
        if self._logger_provider is None:
            return None
        return _EmitToOtel(self._logger_provider.get_logger(TRACER_NAME, supd_version()))

    def force_flush(self, timeout: float) -> bool:
        """Export what the providers hold now, within ``timeout`` s each; False if something is left."""
        millis = int(timeout * 1000)
        return all(
            provider.force_flush(millis)
            for provider in (self._tracer_provider, self._logger_provider)
            if provider is not None
        )

    def shutdown(self, deadline: float) -> bool:
        """Stop both providers by ``deadline`` (monotonic s); False if one could not finish in time."""
        # The SDK providers' shutdown waits up to 30 s on a dead endpoint: run both at once, under our deadline.
        threads = [
            threading.Thread(target=provider.shutdown, name=f"otel-shutdown-{name}", daemon=True)
            for name, provider in (("traces", self._tracer_provider), ("logs", self._logger_provider))
            if provider is not None
        ]
        for thread in threads:
            thread.start()
        ok = True
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.error("otel.shutdown.timeout", pipeline=thread.name, detail="unsent telemetry abandoned")
                ok = False
        return ok
