"""supctl's shell completion: argcomplete (https://kislyuk.github.io/argcomplete/), loaded only when completing.

``supctl completion bash`` (or ``zsh``, ``fish``) prints the script to source;
it runs ``supctl`` with ``_ARGCOMPLETE`` set, and only then is argcomplete
imported, so an ordinary start of supctl pays nothing for it. Child names are
completed from a live ``List`` of the supd that ``--addr`` (or ``SUPD_ADDR``)
names.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

__all__ = ["SHELLS", "add_name", "autocomplete", "child_names", "cmd_completion"]

SHELLS = ("bash", "zsh", "fish")


def child_names(prefix: str, parsed_args: argparse.Namespace, **_: Any) -> list[str]:
    """The names of the children of the supd addressed, starting with ``prefix``; none if it does not answer."""
    from supervisor.client import Client, Connection
    from supervisor.errors import SupervisorError

    try:
        conn = Connection.from_env(address=getattr(parsed_args, "addr", None), insecure=parsed_args.insecure)
        with Client(conn, timeout=2.0) as supd:
            return [c.spec.name for c in supd.list() if c.spec.name.startswith(prefix)]
    except (SupervisorError, OSError, ValueError):  # completion offers what it can; it never prints errors
        return []


def add_name(parser: argparse.ArgumentParser, **kwargs: Any) -> argparse.Action:
    """The positional NAME of a child, completed with the names supd knows."""
    action = parser.add_argument("name", metavar="NAME", **kwargs)
    action.completer = child_names  # type: ignore[attr-defined]
    return action


def autocomplete(parser: argparse.ArgumentParser) -> None:
    """Answer a completion request from the shell and exit; return at once when there is none."""
    if "_ARGCOMPLETE" not in os.environ:
        return
    import argcomplete

    argcomplete.autocomplete(parser)


def cmd_completion(shell: str) -> int:
    """Print the completion script for ``shell`` (one of SHELLS); exit code 0."""
    from argcomplete.shell_integration import shellcode

    sys.stdout.write(shellcode(["supctl"], shell=shell))
    return 0
