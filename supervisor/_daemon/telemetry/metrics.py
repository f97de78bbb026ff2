"""supd's metrics through the OpenTelemetry SDK: imported only when metrics are exported.

A ``MeterProvider`` with one ``PeriodicExportingMetricReader`` (every
``OTEL_METRIC_EXPORT_INTERVAL`` ms) and the exporter metric_exporters.py makes,
and/or the Prometheus reader of ``--metrics-listen`` (prometheus.py).

Two kinds of instruments, by cost:

* counts of the output path (lines and bytes drained, lines dropped, ring
  occupancy, the export queue, each child's CPU time and memory) are
  observable instruments: their callbacks read the ``statistics()`` snapshots
  and ``/proc`` on the reader's thread at collection time, so the drain does
  no work for them at all;
* rare events (exits, restarts, probe runs, Reloads and replays, RPCs) are
  synchronous instruments fed by ``SdkRecorder`` (recorder.py) and the RPC
  interceptor (rpc_metrics.py) where they happen.

Names, units and attributes: docs/metrics.md (the OpenTelemetry semantic
conventions where one exists: ``rpc.server.call.duration``, ``process.*``;
``supd.*`` otherwise).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import structlog
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from supervisor._daemon.telemetry import recorder
from supervisor._daemon.telemetry.metric_exporters import metric_exporter
from supervisor._daemon.telemetry.sdk_report import install_bridge
from supervisor._daemon.telemetry.settings import TelemetrySettings, supd_version
from supervisor.signals import signal_name

if TYPE_CHECKING:
    from supervisor._daemon.children.driver import ChildDriver
    from supervisor._daemon.health.probe import ProbeResult
    from supervisor._daemon.output.records import ExitRecord
    from supervisor._daemon.telemetry.otlp.export import LineExporter
    from supervisor._daemon.telemetry.prometheus import PrometheusEndpoint

__all__ = [
    "DURATION_BUCKETS",
    "METER_NAME",
    "MetricsPipeline",
    "SdkRecorder",
    "exit_attributes",
]

log = structlog.get_logger("supd.telemetry")
METER_NAME = "supd"
# Histogram bucket bounds in seconds: the semantic conventions' advice for durations in s.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


def exit_attributes(child: str, record: ExitRecord) -> dict[str, Any]:
    """``supd.exit.cause``: exited (with ``process.exit.code``), signaled or killed_after_grace (with
    ``supd.exit.signal``), unknown (another reaper collected the status); and ``supd.exit.requested``."""
    attrs: dict[str, Any] = {"supd.child.name": child, "supd.exit.requested": record.requested}
    if record.collected_elsewhere:
        attrs["supd.exit.cause"] = "unknown"
    elif record.exited:
        attrs["supd.exit.cause"] = "exited"
        attrs["process.exit.code"] = record.code
    else:
        attrs["supd.exit.cause"] = "killed_after_grace" if record.killed_after_grace else "signaled"
        attrs["supd.exit.signal"] = signal_name(record.signal)
    return attrs


def _proc_times(pid: int) -> tuple[float, float, int] | None:
    """(user s, system s, resident bytes) of ``pid`` from /proc, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        with open(f"/proc/{pid}/statm", "rb") as f:
            statm = f.read()
    except OSError:  # the process ended since the snapshot: nothing to observe
        return None
    fields = stat[stat.rindex(b")") + 2 :].split()  # after "pid (comm) ": field 3 (state) on
    return int(fields[11]) / _CLK_TCK, int(fields[12]) / _CLK_TCK, int(statm.split()[1]) * _PAGE


class SdkRecorder(recorder.Recorder):
    """The ``Recorder`` of recorder.py feeding synchronous instruments of ``meter``."""

    def __init__(self, meter: Any) -> None:
        self._exits = meter.create_counter("supd.child.exits", "{exit}", "Processes of a child that ended, by cause")
        self._restarts = meter.create_counter("supd.child.restarts", "{restart}", "Restarts of a child, by trigger")
        self._probes = meter.create_histogram(
            "supd.child.probe.duration", "s", "Duration of probe runs, by probe type and result",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._state = meter.create_histogram(
            "supd.child.state.duration", "s", "Duration of Reload and replay deliveries, by outcome",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )

    def child_exited(self, child: str, record: ExitRecord) -> None:
        self._exits.add(1, exit_attributes(child, record))

    def child_restarted(self, child: str, trigger: str) -> None:
        self._restarts.add(1, {"supd.child.name": child, "supd.restart.trigger": trigger})

    def probe_ran(self, child: str, probe: str, handler: str, result: ProbeResult) -> None:
        self._probes.record(
            result.elapsed_seconds,
            {
                "supd.child.name": child, "supd.probe.type": probe, "supd.probe.handler": handler,
                "supd.probe.result": "success" if result.success else "failure",
            },
        )

    def state_delivered(self, child: str, operation: str, outcome: str, seconds: float) -> None:
        self._state.record(
            seconds, {"supd.child.name": child, "supd.state.operation": operation, "supd.state.outcome": outcome}
        )


class _Observed:
    """The observable instruments' callbacks: snapshots read on the reader's thread at collection time."""

    def __init__(self, children: Callable[[], Sequence[ChildDriver]], exporter: LineExporter | None) -> None:
        self._children = children
        self._exporter = exporter

    def lines(self, _: CallbackOptions) -> Iterable[Observation]:
        for child in self._children():
            out = child.output.statistics()
            yield Observation(out.stdout_lines, {"supd.child.name": child.name, "log.iostream": "stdout"})
            yield Observation(out.stderr_lines, {"supd.child.name": child.name, "log.iostream": "stderr"})

    def bytes(self, _: CallbackOptions) -> Iterable[Observation]:
        for child in self._children():
            out = child.output.statistics()
            yield Observation(out.stdout_bytes, {"supd.child.name": child.name, "log.iostream": "stdout"})
            yield Observation(out.stderr_bytes, {"supd.child.name": child.name, "log.iostream": "stderr"})

    def dropped(self, _: CallbackOptions) -> Iterable[Observation]:
        exported = self._exporter.statistics().children if self._exporter is not None else {}
        for child in self._children():
            name = child.name
            yield Observation(child.ring.evicted_records, {"supd.child.name": name, "supd.drop.stage": "ring"})
            if name in exported:
                yield Observation(exported[name].dropped, {"supd.child.name": name, "supd.drop.stage": "export"})

    def ring_usage(self, _: CallbackOptions) -> Iterable[Observation]:
        for child in self._children():
            yield Observation(child.ring.bytes_used, {"supd.child.name": child.name})

    def ring_limit(self, _: CallbackOptions) -> Iterable[Observation]:
        for child in self._children():
            yield Observation(child.ring.max_bytes, {"supd.child.name": child.name})

    def _processes(self) -> Iterable[tuple[dict[str, Any], tuple[float, float, int]]]:
        """supd itself, then each child's running process, with what /proc says of it."""
        pids: list[tuple[dict[str, Any], int]] = [({"process.pid": os.getpid()}, os.getpid())]
        pids += [
            ({"process.pid": pid, "supd.child.name": child.name}, pid)
            for child in self._children()
            if (pid := child.running_pid)
        ]
        for attrs, pid in pids:
            times = _proc_times(pid)
            if times is not None:
                yield attrs, times

    def cpu_time(self, _: CallbackOptions) -> Iterable[Observation]:
        for attrs, (user, system, _rss) in self._processes():
            yield Observation(user, {**attrs, "cpu.mode": "user"})
            yield Observation(system, {**attrs, "cpu.mode": "system"})

    def memory(self, _: CallbackOptions) -> Iterable[Observation]:
        for attrs, (_user, _system, rss) in self._processes():
            yield Observation(rss, attrs)

    def queue_size(self, _: CallbackOptions) -> Iterable[Observation]:
        if self._exporter is not None:
            yield Observation(self._exporter.statistics().queue_lines)

    def queue_dropped(self, _: CallbackOptions) -> Iterable[Observation]:
        if self._exporter is not None:
            for reason, count in self._exporter.statistics().dropped_by_reason.items():
                yield Observation(count, {"supd.drop.reason": reason})


class MetricsPipeline:
    """The meter provider and its reader; ``observe`` attaches the children and the line exporter once they exist."""

    def __init__(self, settings: TelemetrySettings, prometheus: str = "") -> None:
        """Export as ``settings.metrics`` says (None: not pushed) and serve ``prometheus`` (HOST:PORT) if given."""
        metrics = settings.metrics
        readers: list[MetricReader] = []
        if metrics is not None:
            readers.append(PeriodicExportingMetricReader(
                metric_exporter(metrics),
                export_interval_millis=metrics.interval * 1000,
                export_timeout_millis=metrics.timeout * 1000,
            ))
        self.prometheus: PrometheusEndpoint | None = None
        if prometheus:
            from supervisor._daemon.telemetry.prometheus import PrometheusEndpoint

            self.prometheus = PrometheusEndpoint(prometheus)
            readers.append(self.prometheus.reader)
        self._provider = MeterProvider(
            resource=Resource(dict(settings.resource)), metric_readers=readers, shutdown_on_exit=False
        )
        self.meter = self._provider.get_meter(METER_NAME, supd_version())
        recorder.install(SdkRecorder(self.meter))
        install_bridge()

    def observe(self, children: Callable[[], Sequence[ChildDriver]], exporter: LineExporter | None) -> None:
        """Create the observable instruments over ``children()`` (callable from any thread) and ``exporter``."""
        seen = _Observed(children, exporter)
        m = self.meter
        m.create_observable_counter(
            "supd.child.output.lines", [seen.lines], "{line}", "Lines drained from a child, per stream"
        )
        m.create_observable_counter(
            "supd.child.output.bytes", [seen.bytes], "By", "Bytes drained from a child, per stream"
        )
        m.create_observable_counter(
            "supd.child.output.dropped", [seen.dropped], "{line}",
            "A child's lines dropped, per stage: evicted from the ring, or not exported",
        )
        m.create_observable_gauge("supd.child.ring.usage", [seen.ring_usage], "By", "Bytes a child's ring holds")
        m.create_observable_gauge("supd.child.ring.limit", [seen.ring_limit], "By", "A child's ring capacity")
        m.create_observable_counter("process.cpu.time", [seen.cpu_time], "s", "CPU time of supd and each child")
        m.create_observable_up_down_counter(
            "process.memory.usage", [seen.memory], "By", "Resident memory of supd and each child"
        )
        if exporter is not None:
            m.create_observable_gauge(
                "supd.export.queue.size", [seen.queue_size], "{line}", "Lines waiting in the OTLP line export queue"
            )
            m.create_observable_counter(
                "supd.export.dropped", [seen.queue_dropped], "{line}", "Lines the OTLP line export dropped, by reason"
            )

    def force_flush(self, timeout: float) -> bool:
        """Collect and export now (within ``timeout`` s); True when it went through."""
        return self._provider.force_flush(int(timeout * 1000))

    def shutdown(self, deadline: float) -> bool:
        """Collect and export one last time, then stop, by ``deadline`` (monotonic s); False if cut short."""
        # The provider's shutdown waits for the exporter's own timeout on a dead endpoint: run it under ours.
        thread = threading.Thread(target=self._provider.shutdown, name="otel-shutdown-metrics", daemon=True)
        thread.start()
        thread.join(max(0.0, deadline - time.monotonic()))
        recorder.install(recorder.Recorder())
        if self.prometheus is not None:
            self.prometheus.close()
        if thread.is_alive():
            log.error("otel.shutdown.timeout", pipeline=thread.name, detail="unsent metrics abandoned")
            return False
        return True
