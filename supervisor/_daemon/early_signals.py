"""The ``supd`` command: SIGTERM, SIGINT and SIGHUP are held from supd's first instant until its receiver runs.

As PID 1 (a container's entrypoint) a process gets no default signal action (signal(7), pid_namespaces(7)): a
SIGTERM that arrives while supd imports and opens its store and socket would be dropped, and the runtime would
SIGKILL supd, and its children with it, once its stop timeout ran out. Anywhere else it would end supd at once,
before it stopped what it had started. So the command installs a handler that keeps them (``hold``) before it
imports the daemon, and the daemon's receiver acts on them once it runs (``take``). A SIGHUP (re-apply --config)
held this way is not lost either: by default it would end supd.

Before the imports the command also keeps out what libraries would load only because it is installed, and supd
never uses (``keep_out_unused``): structlog imports rich, when present, for its console renderer's tracebacks
(about 5 MiB of supd's resident set); supd renders its events as JSON. rich is installed for ``supctl top``.
"""

from __future__ import annotations

import signal
import sys
import types

__all__ = ["HELD", "UNUSED", "hold", "keep_out_unused", "main", "take"]

HELD = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# Packages that dependencies import when they are installed and supd never calls (see the module's docstring).
UNUSED = ("rich",)
_held: list[int] = []


def _keep(signum: int, _frame: types.FrameType | None) -> None:
    _held.append(signum)


def hold() -> None:
    """Keep SIGTERM, SIGINT and SIGHUP, in order, for ``take``; in the main thread, before anything slow."""
    for sig in HELD:
        signal.signal(sig, _keep)


def take() -> list[int]:
    """The signals held so far, oldest first; called once the receiver that replaces ``hold``'s handler is set."""
    taken = _held[:]
    _held.clear()
    return taken


def keep_out_unused() -> None:
    """Make every import of ``UNUSED`` in this process fail as if it were not installed (``sys.modules`` entry None).

    For the supd process only, before anything imports them: libraries that try them fall back to their plain path.
    A None entry in ``sys.modules`` is the import system's "not importable" (Python reference, 5.3.1).
    """
    for name in UNUSED:
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]  # typeshed types the values as modules only


def main() -> int:
    """The ``supd`` command: hold the signals, then import and run the daemon (exit code of ``main.main``)."""
    hold()
    keep_out_unused()
    from supervisor._daemon.main import main as run

    return run()
