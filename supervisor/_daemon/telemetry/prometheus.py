"""supd's metrics on a Prometheus scrape endpoint (``--metrics-listen HOST:PORT``), as the SDK's exporter serves them.

The SDK's ``PrometheusMetricReader`` (opentelemetry-exporter-prometheus) joins
the meter provider beside (or instead of) the OTLP reader, and
``prometheus_client``'s HTTP server answers ``GET /metrics`` with the text
exposition format from a daemon thread. The names follow the exporter's
translation of OpenTelemetry names: dots become underscores, the unit is
appended (``_bytes``, ``_seconds``; not an annotation such as ``{line}``) and
counters end in ``_total``: ``supd.child.output.lines`` is
``supd_child_output_lines_total``. Plain HTTP on any address: what it shows is
counts and child names, what a scraper in the pod's network expects.
Imported only when the flag is given.
"""

from __future__ import annotations

import http.server

import structlog
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from prometheus_client import start_http_server

from supervisor._daemon.api.listeners import ListenError
from supervisor._daemon.telemetry.prometheus_address import split_address

__all__ = ["PrometheusEndpoint"]

log = structlog.get_logger("supd.telemetry")


class PrometheusEndpoint:
    """The reader to give the meter provider, and (after ``start``) the HTTP server serving it."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.reader = PrometheusMetricReader()
        self._server: http.server.HTTPServer | None = None

    def start(self) -> None:
        """Listen on the address; ListenError (with the system's words) when it cannot be bound."""
        host, port = split_address(self.address)
        try:
            server, _thread = start_http_server(port, addr=host)
        except OSError as exc:
            raise ListenError(f"--metrics-listen {self.address}: cannot listen: {exc.strerror or exc}") from exc
        self._server = server
        log.info("metrics.prometheus.listening", address=self.address, path="/metrics")

    def close(self) -> None:
        """Stop answering scrapes (at shutdown)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
