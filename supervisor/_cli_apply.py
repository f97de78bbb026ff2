"""``supctl apply -f FILE``: reconcile supd's children with a file in the ``--config`` format.

supctl sends the file's text and supd parses it with the code that reads
``--config``: the same checks and line-numbered messages, and the defaults of
the supd that runs the children, whatever supctl's version.

The plan is printed as a diff, one line per child::

    + api                      added
    ~ web                      argv, env
    - old                      removed
      db                       unchanged
      batch                    kept: not in the file (--prune removes it)
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from supervisor import _cli_format as fmt
from supervisor._cli_errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CliError
from supervisor.errors import InvalidArgument
from supervisor.v1 import supervisor_pb2 as pb

if TYPE_CHECKING:
    from supervisor.client import Client

__all__ = ["add_apply_command", "cmd_apply", "format_plan"]

_MARK = {
    pb.APPLY_ACTION_ADD: ("+", "added"),
    pb.APPLY_ACTION_REMOVE: ("-", "removed"),
    pb.APPLY_ACTION_CHANGE: ("~", ""),
    pb.APPLY_ACTION_UNCHANGED: (" ", "unchanged"),
    pb.APPLY_ACTION_KEEP: (" ", "kept: not in the file (--prune removes it)"),
}
_COUNT = {
    pb.APPLY_ACTION_ADD: "added",
    pb.APPLY_ACTION_CHANGE: "changed",
    pb.APPLY_ACTION_REMOVE: "removed",
    pb.APPLY_ACTION_UNCHANGED: "unchanged",
    pb.APPLY_ACTION_KEEP: "kept",
}


def format_plan(response: pb.ApplyResponse) -> list[str]:
    """The plan as diff lines, then a summary line (``3 children: 1 added, ... (dry run: nothing changed)``)."""
    width = max((len(s.name) for s in response.steps), default=0)
    lines = []
    for step in response.steps:
        mark, words = _MARK[step.action]
        detail = ", ".join(step.changed_fields) if step.action == pb.APPLY_ACTION_CHANGE else words
        lines.append(f"{mark} {step.name:<{width}}  {detail}")
    counts = [
        f"{n} {label}" for action, label in _COUNT.items() if (n := sum(s.action == action for s in response.steps))
    ]
    total = len(response.steps)
    summary = f"{total} child{'ren' if total != 1 else ''}: {', '.join(counts) or 'none'}"
    lines.append(summary + (" (dry run: nothing changed)" if response.dry_run else ""))
    return lines


def cmd_apply(supd: Client, args: argparse.Namespace) -> int:
    """Send the file, print the plan (and each failure on stderr); EXIT_FAILED when a step failed."""
    try:
        if args.file == "-":
            text = sys.stdin.buffer.read().decode("utf-8")
        else:
            with open(args.file, encoding="utf-8") as f:
                text = f.read()
    except OSError as exc:
        raise CliError(f"apply: cannot read {args.file}: {exc.strerror or exc}", EXIT_USAGE) from None
    except UnicodeDecodeError as exc:
        raise CliError(f"apply: {args.file}: not valid TOML: {exc}", EXIT_USAGE) from None
    try:
        response = supd.apply(text, config_name=args.file, dry_run=args.dry_run, prune=args.prune)
    except InvalidArgument as exc:
        raise CliError(f"apply: {exc.message}", EXIT_USAGE) from None
    if args.json:
        print(json.dumps(fmt.message_dict(response), indent=2))
    else:
        print("\n".join(format_plan(response)))
    failed = [s for s in response.steps if s.error]
    for step in failed:
        print(f"supctl: apply: {step.name}: {step.error}", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


def add_apply_command(sub: Any) -> None:
    p = sub.add_parser(
        "apply",
        help="reconcile the children with a config file: add, change, and with --prune remove",
        description="Make supd's children those of FILE (the --config format): declared children that do not run "
        "are added, those declared with another spec are restarted with it, unchanged ones are not touched. "
        "Children the file does not name are kept unless --prune is given. Exits 2 for a bad file (supd's "
        "line-numbered message), 1 when a step failed.",
    )
    p.add_argument("-f", "--file", required=True, metavar="FILE", help="the TOML file; - for stdin")
    p.add_argument("--dry-run", action="store_true", help="print the plan; change nothing")
    p.add_argument("--prune", action="store_true", help="remove the children FILE does not name")
    p.add_argument("--json", action="store_true", help="print the plan and outcomes as JSON")
    p.set_defaults(func=cmd_apply)
