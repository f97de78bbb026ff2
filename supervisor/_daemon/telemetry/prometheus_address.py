"""The address of ``--metrics-listen``, checked without loading the Prometheus client (settings read it first)."""

from __future__ import annotations

__all__ = ["split_address"]


def split_address(address: str) -> tuple[str, int]:
    """(host, port) of ``HOST:PORT`` (``[::1]:9464`` for IPv6); ValueError naming the form when it is not."""
    host, sep, port = address.rpartition(":")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not bare or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"must be HOST:PORT with a port from 1 to 65535 (0.0.0.0:9464, [::1]:9464), got {address!r}")
    return bare, int(port)
