"""``supctl spawn``: declare and start a child from flags or a TOML spec file; why a first start failed."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

from supervisor import _cli_format as fmt
from supervisor._cli_args import count_arg, env_arg, seconds_arg, signal_arg
from supervisor._cli_errors import EXIT_OK, EXIT_START_FAILED, CliError
from supervisor._cli_spec import spec_file
from supervisor.v1 import supervisor_pb2 as pb

if TYPE_CHECKING:
    from supervisor.client import Client

__all__ = ["add_spawn_command", "cmd_spawn", "print_child", "start_failure"]

_POLICIES = {
    "always": pb.RESTART_POLICY_ALWAYS,
    "on-failure": pb.RESTART_POLICY_ON_FAILURE,
    "never": pb.RESTART_POLICY_NEVER,
}


def cmd_spawn(supd: Client, args: argparse.Namespace) -> int:
    """Declare and start a child; print its name, pid and state.

    A first start that failed (the reply shows BACKOFF or FATAL) is an error:
    the reason on stderr and ``EXIT_START_FAILED``; the child stays declared.
    """
    spec = spec_file(args) if args.spec else pb.ChildSpec(name=args.name, argv=args.command)
    if args.inherit_env:
        spec.inherit_env = True
    spec.env.update(dict(args.env or ()))
    if args.cwd:
        # The user means a directory relative to their shell, not to supd.
        spec.cwd = os.path.abspath(args.cwd)
    if args.restart:
        spec.restart = _POLICIES[args.restart]
    if args.grace is not None:
        spec.stop_grace_seconds = args.grace
    if args.stop_signal is not None:
        spec.stop_signal = args.stop_signal
    if args.backoff_initial is not None:
        spec.backoff.initial_seconds = args.backoff_initial
    if args.backoff_max is not None:
        spec.backoff.max_seconds = args.backoff_max
    if args.flap_max is not None:
        spec.flap_limit.max_restarts = args.flap_max
    if args.flap_window is not None:
        spec.flap_limit.window_seconds = args.flap_window
    if args.ring_bytes is not None:
        spec.ring_bytes = args.ring_bytes
    if args.max_line_bytes is not None:
        spec.max_line_bytes = args.max_line_bytes
    child = supd.spawn(spec, replace=args.replace)
    if child.state in (pb.CHILD_STATE_FATAL, pb.CHILD_STATE_BACKOFF):
        raise CliError(f"spawn {args.name}: {start_failure(supd, child)}", EXIT_START_FAILED)
    print_child(child)
    return EXIT_OK


def start_failure(supd: Client, child: pb.ChildInfo) -> str:
    """Why the first start failed, in one line: supd's fatal reason, else the last failure event it recorded."""
    state = fmt.state_name(child.state)
    if child.state == pb.CHILD_STATE_BACKOFF:
        state += f", next start in {child.next_start_in_seconds:.1f}s"
    reason = child.fatal_reason.removeprefix("could not start: ")
    if not reason:
        failures = (pb.Event.KIND_START_FAILED, pb.Event.KIND_FATAL, pb.Event.KIND_EXITED)
        for item in supd.follow(child.spec.name, live=False, reconnect=0):
            if isinstance(item, pb.Event) and item.kind in failures and item.generation == child.generation:
                reason = fmt.describe_exit(item.exit) if item.HasField("exit") else item.message
    return f"failed to start: {' '.join((reason or 'no reason recorded').split())} ({state})"


def print_child(child: pb.ChildInfo) -> None:
    pid = child.pid or "-"
    print(f"{child.spec.name}: {fmt.state_name(child.state)}, pid {pid}, generation {child.generation}")


def add_spawn_command(sub: Any) -> None:
    p = sub.add_parser(
        "spawn",
        help="declare and start a child",
        usage="supctl spawn NAME [options] [--spec FILE] -- CMD [ARGS...]",
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("command", nargs="*", metavar="CMD", help="the program and its arguments, after --")
    p.add_argument(
        "--spec",
        metavar="FILE",
        help="a TOML file with the keys of a config's [children.NAME] table (probes, state_delivery, ports, ...);"
        " options given here override it, a command after -- replaces its argv",
    )
    p.add_argument("--restart", choices=sorted(_POLICIES), help="restart policy (default on-failure)")
    p.add_argument(
        "--grace", type=seconds_arg, metavar="S", help="stop signal to SIGKILL, seconds, > 0 and <= 3600 (default 10)"
    )
    p.add_argument("--stop-signal", type=signal_arg, metavar="SIG", help="stop signal (default SIGTERM)")
    p.add_argument(
        "--env",
        type=env_arg,
        action="append",
        metavar="K=V",
        help="environment entry (repeat), added to PATH, LANG, HOME and TZ of supd (docs/config.md)",
    )
    p.add_argument("--inherit-env", action="store_true", help="start from supd's environment less its secrets")
    p.add_argument("--cwd", metavar="DIR", help="working directory (relative to yours)")
    p.add_argument("--replace", action="store_true", help="stop and remove a child of that name first")
    p.add_argument("--backoff-initial", type=float, metavar="S", help="first restart delay (default 0.5)")
    p.add_argument("--backoff-max", type=float, metavar="S", help="longest restart delay (default 30)")
    p.add_argument("--flap-max", type=count_arg, metavar="N", help="restarts per window (0: no limit)")
    p.add_argument("--flap-window", type=float, metavar="S", help="flap window in seconds (default 60)")
    p.add_argument("--ring-bytes", type=count_arg, metavar="N", help="output kept in memory (default 8 MiB)")
    p.add_argument("--max-line-bytes", type=count_arg, metavar="N", help="longer lines are split (default 16 KiB)")
    p.set_defaults(func=cmd_spawn, parser=p)
