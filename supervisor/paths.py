"""Where supd listens by default, shared by supd and supctl.

Root gets ``/run/supd/supd.sock``; anyone else ``$XDG_RUNTIME_DIR/supd/supd.sock``,
or ``/tmp/supd-UID/supd.sock`` without a runtime dir. ``SUPD_ADDR`` overrides it
for both programs. The directory is created with mode 0700 by supd: file
permissions are the access control of a Unix socket.
"""

from __future__ import annotations

import os

__all__ = ["ADDR_ENV", "MAX_SOCKET_PATH_BYTES", "default_address", "default_socket_path", "socket_path_of"]

ADDR_ENV = "SUPD_ADDR"
# sun_path holds 108 bytes including the terminating NUL.
MAX_SOCKET_PATH_BYTES = 107


def default_socket_path() -> str:
    """The socket path used when neither a flag nor SUPD_ADDR names one."""
    if os.geteuid() == 0:
        return "/run/supd/supd.sock"
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "supd", "supd.sock")
    return f"/tmp/supd-{os.geteuid()}/supd.sock"


def default_address() -> str:
    """The gRPC address clients dial: SUPD_ADDR, else the default socket."""
    return os.environ.get(ADDR_ENV) or "unix://" + default_socket_path()


def socket_path_of(address: str) -> str | None:
    """The filesystem path of a ``unix:`` address, or None for host:port."""
    if address.startswith("unix://"):
        return address[len("unix://"):]
    if address.startswith("unix:"):
        return address[len("unix:"):]
    return None
