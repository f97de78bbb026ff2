"""The Python client of supd: how to reach it (``Connection``) and what to ask it.

Importing ``supervisor.client`` loads grpcio and the generated messages only,
never the daemon or OpenTelemetry, so a CLI built on it starts fast.
"""

from supervisor.client.connection import Connection, ConnectionConfigError, normalise_address

__all__ = ["Connection", "ConnectionConfigError", "normalise_address"]
