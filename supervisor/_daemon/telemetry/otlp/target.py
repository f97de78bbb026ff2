"""Where a signal is exported: the protocol names and ``ExportTarget``, without loading any exporter.

Kept apart from transport.py (grpc channels, OTLP messages) so that reading the
settings costs nothing when export is off.
"""

from __future__ import annotations

import dataclasses

__all__ = ["GRPC", "HTTP_PROTOBUF", "AttributeValue", "ExportTarget"]

GRPC = "grpc"
HTTP_PROTOBUF = "http/protobuf"
# The value of a resource or record attribute.
AttributeValue = str | bool | int | float


@dataclasses.dataclass(frozen=True, slots=True)
class ExportTarget:
    """Where one signal goes: a full endpoint URL, its protocol, headers, timeout in seconds."""

    endpoint: str
    protocol: str = GRPC
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = 10.0
    insecure: bool = False

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The headers as gRPC metadata, whose keys must be lower case."""
        return tuple((k.lower(), v) for k, v in self.headers)
