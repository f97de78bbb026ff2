"""Where supd listens by default, shared by supd and supctl.

Root gets ``/run/supd/supd.sock``; anyone else ``$XDG_RUNTIME_DIR/supd/supd.sock``,
or ``/tmp/supd-UID/supd.sock`` without a runtime dir. ``SUPD_ADDR`` overrides it
for both programs. The directory is created with mode 0700 by supd: file
permissions are the access control of a Unix socket.

The store (stored state and the specs of spawned children) lives in
``default_state_dir()``.
"""

from __future__ import annotations

import os

__all__ = [
    "ADDR_ENV",
    "MAX_SOCKET_PATH_BYTES",
    "STATE_DIR_ENV",
    "default_address",
    "default_socket_path",
    "default_state_dir",
    "socket_path_of",
]

ADDR_ENV = "SUPD_ADDR"
STATE_DIR_ENV = "SUPD_STATE_DIR"
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


def default_state_dir() -> str:
    """Where supd keeps its store when neither ``--state-dir`` nor ``SUPD_STATE_DIR`` names a directory.

    Root: ``/var/lib/supd``; anyone else: ``$XDG_STATE_HOME/supd``, else
    ``~/.local/state/supd`` (the XDG base directory specification's state home).
    In a pod, mount a volume there (or point ``--state-dir`` at one) so the
    store survives the container.
    """
    if os.geteuid() == 0:
        return "/var/lib/supd"
    home = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(home, "supd")


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
