"""Telemetry settings from the standard OTEL_* environment variables, validated.

Follows the OpenTelemetry exporter specification: a signal-specific variable
(``OTEL_EXPORTER_OTLP_LOGS_*``, ``..._TRACES_*``, ``..._METRICS_*``) wins over the generic one; an
empty value counts as unset; timeouts are milliseconds; headers and resource
attributes are ``key=value`` lists, percent-decoded. For http/protobuf the
generic endpoint is a base URL that gets ``/v1/logs`` (``/v1/traces``)
appended, while a signal-specific endpoint is used as it is. For gRPC an
endpoint without a scheme is secure unless ``OTEL_EXPORTER_OTLP_INSECURE`` is
true; ``http://`` is always insecure, ``https://`` always secure.

Metrics follow the SDK's ``OTEL_METRICS_EXPORTER`` (``otlp``, the default, ``console``
or ``none``), ``OTEL_METRIC_EXPORT_INTERVAL`` (ms, default 60000) and
``OTEL_METRIC_EXPORT_TIMEOUT`` (ms, default 30000); ``otlp`` exports only where an
endpoint applies to metrics, like the other signals, so with no endpoint they are off.
Source: https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/

A bad value raises ``InvalidArgument`` naming the variable, so supd refuses to
start instead of exporting nowhere. With no endpoint, export is off and
``disabled_reason`` says why (supd logs it once at start-up).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import urllib.parse
from collections.abc import Mapping

from supervisor import __version__
from supervisor._daemon.telemetry.otlp.target import GRPC, HTTP_PROTOBUF, AttributeValue, ExportTarget
from supervisor.errors import InvalidArgument

__all__ = ["DEFAULT_SERVICE_NAME", "MetricsSettings", "TelemetrySettings", "supd_version"]

DEFAULT_SERVICE_NAME = "supd"
_DEFAULT_TIMEOUT_MS = 10_000
_DEFAULT_METRIC_INTERVAL_MS = 60_000
_DEFAULT_METRIC_TIMEOUT_MS = 30_000
_METRICS_EXPORTERS = ("otlp", "console", "none")
_PROTOCOLS = (GRPC, HTTP_PROTOBUF)
_PREFIX = "OTEL_EXPORTER_OTLP_"


def supd_version() -> str:
    """supd's version (service.version, and the instrumentation scope's version)."""
    return __version__


def _get(environ: Mapping[str, str], name: str) -> str | None:
    value = environ.get(name, "").strip()
    return value or None


def _signal_or_generic(environ: Mapping[str, str], signal: str, option: str) -> tuple[str, str | None]:
    """The (variable name, value) that applies: OTEL_EXPORTER_OTLP_<SIGNAL>_<OPTION>, else the generic."""
    name = f"{_PREFIX}{signal}_{option}"
    value = _get(environ, name)
    if value is not None:
        return name, value
    name = f"{_PREFIX}{option}"
    return name, _get(environ, name)


def _bool(environ: Mapping[str, str], name: str) -> bool | None:
    value = _get(environ, name)
    if value is None:
        return None
    if value.lower() not in ("true", "false"):
        raise InvalidArgument(f"{name}: must be true or false, got {value!r}")
    return value.lower() == "true"


def _pairs(name: str, value: str) -> dict[str, str]:
    """Parse ``k=v,k2=v2`` (percent-decoded, blanks trimmed)."""
    out: dict[str, str] = {}
    for item in value.split(","):
        if not item.strip():
            continue
        key, sep, val = item.partition("=")
        key = urllib.parse.unquote(key.strip())
        if not sep or not key:
            raise InvalidArgument(f"{name}: expected key=value pairs separated by commas, got {item.strip()!r}")
        out[key] = urllib.parse.unquote(val.strip())
    return out


def _timeout(environ: Mapping[str, str], signal: str) -> float:
    name, value = _signal_or_generic(environ, signal, "TIMEOUT")
    return _millis(name, value, _DEFAULT_TIMEOUT_MS)


def _millis(name: str, value: str | None, default_ms: int) -> float:
    """A positive number of milliseconds as seconds (``default_ms`` when unset); InvalidArgument names ``name``."""
    if value is None:
        return default_ms / 1000
    try:
        ms = float(value)
    except ValueError:
        ms = -1.0
    if not ms > 0 or ms == float("inf"):
        raise InvalidArgument(f"{name}: must be a positive number of milliseconds, got {value!r}")
    return ms / 1000


def _check_url(name: str, url: str, protocol: str) -> None:
    """Refuse what no exporter can dial, naming the variable: supd must not start exporting nowhere.

    Accepted: ``http(s)://host[:port][/path]`` for both protocols, and for gRPC
    also ``host:port`` (no scheme, no path), as the OpenTelemetry exporters read it.
    """
    example = "http://localhost:4318" if protocol == HTTP_PROTOBUF else "http://localhost:4317 or localhost:4317"
    if any(c.isspace() or not c.isprintable() for c in url):
        raise InvalidArgument(f"{name}: must not contain spaces or control characters, got {url!r}")
    has_scheme = "://" in url
    if protocol == HTTP_PROTOBUF and not has_scheme:
        raise InvalidArgument(f"{name}: must be an http:// or https:// URL for http/protobuf, got {url!r}")
    parsed = urllib.parse.urlsplit(url if has_scheme else "//" + url)
    if has_scheme and parsed.scheme not in ("http", "https"):
        raise InvalidArgument(f"{name}: scheme must be http or https, got {url!r}")
    try:
        port = parsed.port
    except ValueError:
        port = -1
    if not parsed.hostname or port in (-1, 0) or parsed.username is not None:
        raise InvalidArgument(f"{name}: expected a URL such as {example}, got {url!r}")
    if not has_scheme and (port is None or parsed.path or parsed.query or parsed.fragment):
        raise InvalidArgument(
            f"{name}: without a scheme the endpoint must be host:port (such as {example}), got {url!r}"
        )


def _target(environ: Mapping[str, str], signal: str, path: str) -> ExportTarget | None:
    """One signal's export target, or None when no endpoint applies to it."""
    proto_name, protocol = _signal_or_generic(environ, signal, "PROTOCOL")
    protocol = protocol or GRPC
    if protocol not in _PROTOCOLS:
        raise InvalidArgument(f"{proto_name}: must be one of {', '.join(_PROTOCOLS)}, got {protocol!r}")
    name = f"{_PREFIX}{signal}_ENDPOINT"
    endpoint = _get(environ, name)
    if endpoint is None:
        name = f"{_PREFIX}ENDPOINT"
        endpoint = _get(environ, name)
        if endpoint is None:
            return None
        if protocol == HTTP_PROTOBUF:
            endpoint = endpoint.rstrip("/") + path
    _check_url(name, endpoint, protocol)
    headers_name, headers = _signal_or_generic(environ, signal, "HEADERS")
    insecure_name = f"{_PREFIX}{signal}_INSECURE"
    insecure = _bool(environ, insecure_name)
    if insecure is None:
        insecure = _bool(environ, f"{_PREFIX}INSECURE")
    scheme = endpoint.partition("://")[0] if "://" in endpoint else ""
    return ExportTarget(
        endpoint=endpoint,
        protocol=protocol,
        headers=tuple(_pairs(headers_name, headers).items()) if headers else (),
        timeout=_timeout(environ, signal),
        insecure=scheme == "http" or (scheme == "" and bool(insecure)),
    )


def _resource(environ: Mapping[str, str], *, exporting: bool) -> dict[str, AttributeValue]:
    """The resource attributes; the SDK's version is looked up only when something is exported.

    (``importlib.metadata`` costs an idle supd about 2 MB, and the resource is only read to export.)
    """
    attrs: dict[str, AttributeValue] = {
        "service.name": DEFAULT_SERVICE_NAME,
        "service.version": supd_version(),
        "host.name": socket.gethostname(),
        "process.pid": os.getpid(),
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.language": "python",
    }
    if exporting:
        import importlib.metadata

        attrs["telemetry.sdk.version"] = importlib.metadata.version("opentelemetry-sdk")
    resource_attributes = _get(environ, "OTEL_RESOURCE_ATTRIBUTES")
    if resource_attributes is not None:
        attrs.update(_pairs("OTEL_RESOURCE_ATTRIBUTES", resource_attributes))
    service_name = _get(environ, "OTEL_SERVICE_NAME")
    if service_name is not None:
        attrs["service.name"] = service_name
    return attrs


@dataclasses.dataclass(frozen=True, slots=True)
class MetricsSettings:
    """Where supd's metrics go: ``exporter`` "otlp" (to ``target``) or "console" (stdout); seconds."""

    exporter: str
    target: ExportTarget | None
    interval: float
    timeout: float

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> MetricsSettings | None:
        """The metrics settings, or None when metrics are off (``none``, or ``otlp`` without an endpoint)."""
        exporter = (_get(environ, "OTEL_METRICS_EXPORTER") or "otlp").lower()
        if exporter not in _METRICS_EXPORTERS:
            raise InvalidArgument(
                f"OTEL_METRICS_EXPORTER: must be one of {', '.join(_METRICS_EXPORTERS)}, got {exporter!r}"
            )
        interval = _millis(
            "OTEL_METRIC_EXPORT_INTERVAL", _get(environ, "OTEL_METRIC_EXPORT_INTERVAL"), _DEFAULT_METRIC_INTERVAL_MS
        )
        timeout = _millis(
            "OTEL_METRIC_EXPORT_TIMEOUT", _get(environ, "OTEL_METRIC_EXPORT_TIMEOUT"), _DEFAULT_METRIC_TIMEOUT_MS
        )
        target = _target(environ, "METRICS", "/v1/metrics") if exporter == "otlp" else None
        if exporter == "none" or (exporter == "otlp" and target is None):
            return None
        return cls(exporter=exporter, target=target, interval=interval, timeout=timeout)


@dataclasses.dataclass(frozen=True, slots=True)
class TelemetrySettings:
    """Where supd's telemetry goes. ``logs`` None means log export is off, for ``disabled_reason``."""

    resource: Mapping[str, AttributeValue]
    logs: ExportTarget | None = None
    traces: ExportTarget | None = None
    metrics: MetricsSettings | None = None
    disabled_reason: str | None = None

    @property
    def enabled(self) -> bool:
        """Whether anything is exported (logs or traces)."""
        return self.logs is not None or self.traces is not None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> TelemetrySettings:
        """Read the OTEL_* variables (see the module docstring); InvalidArgument names a bad one."""
        if _bool(environ, "OTEL_SDK_DISABLED"):
            resource = _resource(environ, exporting=False)
            return cls(resource=resource, disabled_reason="OTEL_SDK_DISABLED is true")
        logs = _target(environ, "LOGS", "/v1/logs")
        traces = _target(environ, "TRACES", "/v1/traces")
        metrics = MetricsSettings.from_env(environ)
        resource = _resource(environ, exporting=logs is not None or traces is not None or metrics is not None)
        reason = None
        if logs is None:
            reason = "no endpoint: neither OTEL_EXPORTER_OTLP_ENDPOINT nor OTEL_EXPORTER_OTLP_LOGS_ENDPOINT is set"
        return cls(resource=resource, logs=logs, traces=traces, metrics=metrics, disabled_reason=reason)
