"""The metric exporter ``OTEL_METRICS_EXPORTER`` asks for, its failures told as supd's events.

``otlp``: the SDK's OTLP metric exporter (gRPC or http/protobuf, to the target
settings.py chose) wrapped in ``ReportingMetricExporter``, so a failed export is
``otlp.metrics.export.failed`` once per cause (sdk_report.py's rules);
``console``: the SDK's console exporter (JSON on stdout). Imported only when
metrics are on.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, MetricExporter, MetricExportResult, MetricsData

from supervisor._daemon.telemetry.otlp.target import GRPC, ExportTarget
from supervisor._daemon.telemetry.sdk_report import DEFAULT_INTERVAL, CauseReporter, run_export
from supervisor._daemon.telemetry.settings import MetricsSettings

__all__ = ["ReportingMetricExporter", "metric_exporter"]


def metric_exporter(settings: MetricsSettings) -> MetricExporter:
    """The exporter for ``settings.exporter``: "console", or "otlp" to ``settings.target``."""
    if settings.exporter == "console":
        return ConsoleMetricExporter()
    target = settings.target
    assert target is not None
    return ReportingMetricExporter(_otlp_exporter(target), target.endpoint)


def _otlp_exporter(target: ExportTarget) -> MetricExporter:
    if target.protocol == GRPC:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetrics

        return GrpcMetrics(
            target.endpoint, insecure=target.insecure, headers=target.metadata(), timeout=target.timeout
        )
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetrics

    return HttpMetrics(target.endpoint, headers=dict(target.headers), timeout=target.timeout)


class ReportingMetricExporter(MetricExporter):
    """An SDK metric exporter whose failures are ``otlp.metrics.export.*`` events."""

    def __init__(self, inner: MetricExporter, endpoint: str, interval: float = DEFAULT_INTERVAL) -> None:
        super().__init__(inner._preferred_temporality, inner._preferred_aggregation)
        self._inner = inner
        self.reporter = CauseReporter("otlp.metrics.export", endpoint, interval)

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        points = sum(
            len(m.data.data_points)
            for rm in metrics_data.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics
        )
        ok = run_export(
            self.reporter, points,
            lambda: self._inner.export(metrics_data, timeout_millis, **kwargs) == MetricExportResult.SUCCESS,
        )
        return MetricExportResult.SUCCESS if ok else MetricExportResult.FAILURE

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.reporter.flush()
        self._inner.shutdown(timeout_millis, **kwargs)

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self._inner.force_flush(timeout_millis)
