"""What the service needs of a tracer, and a no-op one that loads nothing.

``SpanTracer`` is the one call the gRPC service makes (a span around Spawn,
Stop, Reload); the SDK's tracer satisfies it when export is on. ``NO_SPANS``
stands in when export is off without importing OpenTelemetry at all (its API
loads ``importlib.metadata`` to find its context implementation: about 2 MB of
an idle supd).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from contextlib import AbstractContextManager
from typing import Protocol

__all__ = ["NO_SPANS", "NoSpans", "SpanTracer"]


class SpanTracer(Protocol):
    """Starts a span around a block: ``with tracer.start_as_current_span("Spawn", attributes={...}):``."""

    def start_as_current_span(
        self, name: str, *, attributes: Mapping[str, str] | None = None
    ) -> AbstractContextManager[object]: ...


class NoSpans:
    """A ``SpanTracer`` that records nothing."""

    def start_as_current_span(
        self, name: str, *, attributes: Mapping[str, str] | None = None
    ) -> AbstractContextManager[object]:
        return contextlib.nullcontext()

    def __repr__(self) -> str:
        return "<NoSpans>"


NO_SPANS = NoSpans()
