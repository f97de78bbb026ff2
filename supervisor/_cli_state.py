"""supctl's stored-state commands: ``reload`` delivers and stores a revision, ``state`` shows it; ``spec`` shows
what a child was declared with."""

from __future__ import annotations

import argparse
import json
import mimetypes
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from supervisor import _cli_format as fmt
from supervisor._cli_args import count_arg
from supervisor._cli_errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CliError

if TYPE_CHECKING:
    from supervisor.client import Client

__all__ = ["add_state_commands", "cmd_reload", "cmd_spec", "cmd_state"]


def _read_state(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise CliError(f"reload: cannot read {path}: {exc.strerror or exc}", EXIT_USAGE) from None


def cmd_reload(supd: Client, args: argparse.Namespace) -> int:
    """Deliver a file's bytes as the child's new state; print the revision the child accepted."""
    state = _read_state(args.file)
    content_type = args.content_type or _guess_content_type(args.file)
    resp = supd.reload(args.name, state, content_type=content_type, expected_revision=args.expect_revision)
    tries = f"{resp.attempts} attempt{'s' if resp.attempts != 1 else ''}"
    print(f"{args.name}: state revision {resp.revision} accepted ({len(state)} bytes, {tries})")
    return EXIT_OK


def _guess_content_type(path: str) -> str | None:
    """The media type a file's name suggests (``.json``: application/json), as mimetypes knows it; None for stdin
    or an unknown suffix, which supd sends as application/octet-stream."""
    if path == "-":
        return None
    return mimetypes.guess_type(path, strict=False)[0]


def cmd_spec(supd: Client, args: argparse.Namespace) -> int:
    """The child's whole spec as declared, values included, as one JSON document (ChildSpec)."""
    print(json.dumps(fmt.message_dict(supd.get_spec(args.name)), indent=2))
    return EXIT_OK


def cmd_state(supd: Client, args: argparse.Namespace) -> int:
    """Show the accepted revision (or --revision N): a summary, its bytes with --raw, or JSON."""
    resp = supd.get_state(args.name, args.revision or 0)
    if args.raw:
        if not resp.HasField("revision"):
            raise CliError(
                f"state {args.name}: the child has no accepted state (give it one: supctl reload {args.name} --file F)",
                EXIT_FAILED,
            )
        sys.stdout.buffer.write(resp.revision.state)
        return EXIT_OK
    if args.json:
        document: dict[str, Any] = fmt.message_dict(resp)
        print(json.dumps(document, indent=2))
        return EXIT_OK
    print(fmt.state_text(args.name, resp, supd.child(args.name)))
    return EXIT_OK


def add_state_commands(sub: Any, add_name: Callable[..., Any]) -> None:
    """Register ``reload`` and ``state`` on supctl's subcommand parser; ``add_name`` adds the NAME argument."""
    p = sub.add_parser(
        "reload",
        help="deliver a new state to a child and store it once the child accepted it",
        description="Deliver FILE's bytes to the running child with its state_delivery; once the child accepted "
        "them, supd stores them as the new accepted revision and delivers them again after every restart.",
    )
    add_name(p)
    p.add_argument("--file", required=True, metavar="FILE", help="the new state ('-': standard input)")
    p.add_argument(
        "--content-type",
        metavar="TYPE",
        help="its media type (default: from FILE's suffix, .json is application/json; else application/octet-stream)",
    )
    p.add_argument(
        "--expect-revision",
        type=count_arg,
        metavar="N",
        help="apply only if N is still the accepted revision (0: none yet); otherwise exit 7",
    )
    p.set_defaults(func=cmd_reload)

    p = sub.add_parser("state", help="a child's accepted state: its revision, whether it is applied, its history")
    add_name(p)
    p.add_argument("--revision", type=count_arg, metavar="N", help="another revision still kept")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--raw", action="store_true", help="write the revision's bytes to stdout, nothing else")
    out.add_argument("--json", action="store_true", help="one JSON document (GetStateResponse)")
    p.set_defaults(func=cmd_state)

    p = sub.add_parser(
        "spec",
        help="a child's whole spec as declared, environment values included (JSON; admin only over TCP)",
        description="Print the child's spec exactly as declared, as one JSON document (ChildSpec). ls and health "
        "show environment and header names only; this shows their values too.",
    )
    add_name(p)
    p.add_argument("--json", action="store_true", help="the same JSON document (spec always prints JSON)")
    p.set_defaults(func=cmd_spec)
