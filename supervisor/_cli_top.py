"""``supctl top``: a live view of supd's children, refreshed every interval (default 1 s).

On a terminal it is a full-screen view with keys (``supervisor._top.app``);
when stdout is not a terminal, or with ``--once``, plain tables
(``supervisor._top.plain``). supd unreachable at the start: one line and exit
3, as every command. supd going away while the view runs: the view says so and
keeps asking every interval (a watcher wants it back when supd is restarted);
the plain tables end with exit 3 instead, so that a script learns of it.

Drawn with rich, not textual. The view is one table and one log pane, redrawn
whole each time; rich's ``Live`` does that, and the few keys are read here
(``supervisor._top.terminal``). textual would bring keys and focus, but
importing ``textual.app`` took 340-420 ms and 32 MB of RSS against 70-100 ms and
16 MB for ``rich.live`` (``python -X importtime``, rich 15.0.0, textual 8.2.8,
on the 2-core development machine), for widgets this view does not use. Either
is imported only when ``top`` runs, never by the other commands.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

from supervisor._cli_args import seconds_arg

if TYPE_CHECKING:
    from supervisor.client import Client

__all__ = ["add_top_command", "cmd_top"]


def _interactive(once: bool) -> bool:
    """The full-screen view only where a person watches: stdin and stdout terminals, not TERM=dumb."""
    if once or os.environ.get("TERM") in (None, "", "dumb"):
        return False
    return sys.stdin.isatty() and sys.stdout.isatty()


def cmd_top(supd: Client, args: argparse.Namespace) -> int:
    """Run the live view (a terminal) or print plain tables; returns the exit code."""
    from supervisor.client.sync import Client as SyncClient

    # A channel of its own that tries again every second at most once supd has gone: the view comes back as soon
    # as supd does (gRPC's own backoff grows to two minutes).
    options = [("grpc.initial_reconnect_backoff_ms", 250), ("grpc.max_reconnect_backoff_ms", 1000)]
    with SyncClient(supd.connection, timeout=args.timeout, options=options) as watch:
        first = watch.health()  # unreachable: raises, and supctl says so in one line with exit 3
        if not _interactive(args.once):
            from supervisor._top.plain import run_plain

            return run_plain(watch, args.interval, args.once, sys.stdout, first)
        from supervisor._top.app import run_interactive

        return run_interactive(watch, args.interval, sys.stdin.fileno())


def add_top_command(sub: Any) -> None:
    """Register ``top`` on supctl's subcommand parser."""
    p = sub.add_parser(
        "top",
        help="a live view of the children (a plain table when not on a terminal)",
        description="A live view of supd's children, refreshed every --interval: state, health, pid, generation, "
        "restarts, uptime, lines per second, dropped lines, last exit. Keys: up/down or j/k select, l or Enter "
        "follow the selected child's logs (Esc or q back), r restart, s stop (y confirms), q quit. When stdout "
        "is not a terminal it prints one table per interval, separated by an empty line; --once prints one.",
    )
    p.add_argument(
        "--interval", type=seconds_arg, default=1.0, metavar="SECONDS", help="refresh every SECONDS (default 1)"
    )
    p.add_argument(
        "--once", action="store_true", help="print one plain table (rates measured over one interval) and exit"
    )
    p.set_defaults(func=cmd_top)
