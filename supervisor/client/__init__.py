"""The Python client of supd: how to reach it (``Connection``) and what to ask it (``Client``, ``AsyncClient``).

It is a module of the ``supd`` distribution rather than a package of its own
(a ``clients/python``): one version for supd, supctl and the client, so they
cannot drift apart; one install; and one copy of the generated protobuf code
(``supervisor.v1``) and of the error taxonomy (``supervisor.errors``), which
the client raises. Clients in other languages generate their code from
``proto/`` (see ``clients/README.md``).

Importing ``supervisor.client`` loads grpcio and the generated messages only,
never the daemon or OpenTelemetry, so a CLI built on it starts fast.

Example::

    from supervisor.client import Client

    with Client("unix:///run/supd/supd.sock") as supd:
        supd.spawn(name="worker", argv=["python3", "worker.py"], restart="always")
        supd.wait_ready("worker", timeout=30)
        for item in supd.follow("worker", tail=10):
            print(item)
"""

import importlib
from typing import TYPE_CHECKING, Any

from supervisor.client.connection import Connection, ConnectionConfigError, normalise_address

if TYPE_CHECKING:
    from supervisor.client._records import Item, Line, Resume
    from supervisor.client.aio import AsyncClient
    from supervisor.client.sync import Client

__all__ = [
    "AsyncClient",
    "Client",
    "Connection",
    "ConnectionConfigError",
    "Item",
    "Line",
    "Resume",
    "normalise_address",
]

# The clients load on first use, so that a program (supctl) pays only for what it touches: supctl --help
# needs the connection settings alone, and supctl never the asyncio client.
_LAZY = {
    "AsyncClient": "supervisor.client.aio",
    "Client": "supervisor.client.sync",
    "Item": "supervisor.client._records",
    "Line": "supervisor.client._records",
    "Resume": "supervisor.client._records",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
