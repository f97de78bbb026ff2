"""supctl: the command-line client of supd.

Every failure ends as one ``supctl: ...`` line on stderr and a documented exit
code (see ``EPILOG``), never a traceback, because scripts branch on the code
and people read the line. ``logs`` copies the child's bytes to stdout
untouched and keeps everything else on stderr, so ``supctl logs web > file``
reproduces the child's output exactly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from supervisor import __version__, names, paths
from supervisor import _cli_format as fmt
from supervisor._cli_apply import add_apply_command
from supervisor._cli_args import seconds_arg, signal_arg
from supervisor._cli_complete import SHELLS, add_name, autocomplete, cmd_completion
from supervisor._cli_errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_START_FAILED,
    EXIT_TIMEOUT,
    EXIT_UNHEALTHY,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    CliError,
    quiet_grpc_core_log,
    rpc_failure,
    what,
)
from supervisor._cli_logs import add_logs_command
from supervisor._cli_spawn import add_spawn_command, print_child, start_failure
from supervisor._cli_state import add_state_commands
from supervisor._cli_top import add_top_command
from supervisor._fields import shown
from supervisor.client import connection
from supervisor.client._requests import QUICK_TIMEOUT, STOPPING_TIMEOUT
from supervisor.errors import SupervisorError
from supervisor.signals import signal_name
from supervisor.v1 import supervisor_pb2 as pb

if TYPE_CHECKING:
    from supervisor.client import Client

__all__ = [
    "EXIT_FAILED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_START_FAILED",
    "EXIT_TIMEOUT",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "main",
]

EPILOG = """\
exit codes:
    0  success
    1  supd refused or failed the request (its reason is printed; apply: a step failed)
    2  usage error (apply: a bad file, with supd's line-numbered message)
    3  supd unreachable (no socket, connection refused, a failed TLS handshake, or supd shutting down)
    4  no child of that name
    5  timed out (see --timeout)
    6  spawn: the child was declared but its first start failed (BACKOFF or FATAL; the reason is printed)
    7  reload --expect-revision: the accepted revision is another one (it is printed)
    8  health: a child asked about is not READY (for a container HEALTHCHECK)
    9  a TCP listener refused the credentials (UNAUTHENTICATED or PERMISSION_DENIED)
  130  interrupted (Ctrl-C), except logs, which exits 0 (also on a closed pipe)

The address defaults to $SUPD_ADDR, else the per-user default socket.
"""

# How long past its announced deadline `shutdown` waits for supd to be gone.
SHUTDOWN_SLACK_SECONDS = 5.0

# ---------------------------------------------------------------- commands


def _print_json(message: Any) -> None:
    print(json.dumps(fmt.message_dict(message), indent=2))


def cmd_ls(supd: Client, args: argparse.Namespace) -> int:
    """Every declared child as a table, or as one JSON document."""
    children = supd.list()
    if args.json:
        _print_json(pb.ListResponse(children=children))
    else:
        print(fmt.list_table(children))
    return EXIT_OK


def cmd_health(supd: Client, args: argparse.Namespace) -> int:
    """Health of all children as a table, of one in detail, or as one JSON document; EXIT_UNHEALTHY unless
    every one is READY.

    A child that is meant to be down (stopped on request, or exited with restart=never) does not count
    against the code when all children are asked about; asked about by name, only READY is healthy.
    """
    resp = supd.health(args.name)
    if args.json:
        _print_json(resp)
    elif args.name:
        print(fmt.health_text(resp))
    else:
        print(fmt.health_table(resp))
    resting = (pb.CHILD_STATE_STOPPED, pb.CHILD_STATE_EXITED)
    unwell = [
        c.spec.name for c in resp.children
        if c.health != pb.CHILD_HEALTH_READY and (args.name or c.state not in resting)
    ]
    if unwell:
        print(f"supctl: not healthy: {', '.join(unwell)}", file=sys.stderr)
        return EXIT_UNHEALTHY
    return EXIT_OK


def cmd_stop(supd: Client, args: argparse.Namespace) -> int:
    """Stop a child and say how its process ended."""
    resp = supd.stop(args.name, args.grace)
    how = fmt.describe_exit(resp.exit) if resp.HasField("exit") else "was not running"
    state = fmt.state_name(resp.child.state)
    if resp.child.state in (pb.CHILD_STATE_STOPPED, pb.CHILD_STATE_STOPPING):
        print(f"{args.name}: {state} ({how})")
    else:  # a Restart or Spawn that came after this Stop has already started it again
        print(f"{args.name}: stopped ({how}); now {state} after a later request")
    return EXIT_OK


def cmd_restart(supd: Client, args: argparse.Namespace) -> int:
    """Restart a child and print its new pid."""
    child = supd.restart(args.name, args.grace)
    if child.state in (pb.CHILD_STATE_FATAL, pb.CHILD_STATE_BACKOFF):
        raise CliError(f"restart {args.name}: {start_failure(supd, child)}", EXIT_START_FAILED)
    print_child(child)
    return EXIT_OK


def cmd_kill(supd: Client, args: argparse.Namespace) -> int:
    """Send one signal to a child's process or process group."""
    supd.signal(args.name, args.signal, group=args.group)
    print(f"{args.name}: sent {signal_name(args.signal)}{' to its process group' if args.group else ''}")
    return EXIT_OK


def cmd_rm(supd: Client, args: argparse.Namespace) -> int:
    """Stop a child if it runs and forget it."""
    resp = supd.remove(args.name, args.grace)
    how = f" ({fmt.describe_exit(resp.exit)})" if resp.HasField("exit") else ""
    print(f"{args.name}: removed{how}")
    return EXIT_OK


def cmd_shutdown(supd: Client, args: argparse.Namespace) -> int:
    """Start supd's ordered shutdown (as SIGTERM does); unless --no-wait, wait until supd has exited."""
    socket = paths.socket_path_of(supd.connection.address)
    if socket is None and not args.no_wait:
        raise CliError("shutdown: add --no-wait for a supd on TCP: its exit cannot be seen from here", EXIT_USAGE)
    resp = supd.shutdown()
    print(f"supd (pid {resp.pid}): shutting down, exit within {resp.deadline_seconds:.1f}s", flush=True)
    if socket is None or args.no_wait:
        return EXIT_OK
    limit = time.monotonic() + resp.deadline_seconds + SHUTDOWN_SLACK_SECONDS
    # supd removes its socket as the very last step before it exits.
    while os.path.lexists(socket):
        if time.monotonic() > limit:
            raise CliError(f"supd (pid {resp.pid}) has not exited after {resp.deadline_seconds:g}s", EXIT_TIMEOUT)
        time.sleep(0.05)
    print(f"supd (pid {resp.pid}): exited", flush=True)
    return EXIT_OK


# ---------------------------------------------------------------- parser


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``supctl: COMMAND: error``) and exit code 2, like every failure."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("supctl").strip()
        where = f"{command}: " if command else ""
        self.exit(EXIT_USAGE, f"supctl: {where}{message} (see supctl {command + ' ' if command else ''}--help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; kept in one place so ``--help`` is the reference."""
    parser = _Parser(
        prog="supctl",
        description="Control a supd process supervisor.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"supctl {__version__}")
    parser.add_argument(
        "--addr",
        default=None,
        help="supd's address: unix:///path/to.sock, a socket path, or host:port "
        f"(default: ${paths.ADDR_ENV}, else unix://{paths.default_socket_path()})",
    )
    _add_connection_flags(parser)
    parser.add_argument(
        "--timeout",
        type=seconds_arg,
        default=None,
        metavar="SECONDS",
        help=f"deadline of each request (default: {QUICK_TIMEOUT:g}s for ls, health, kill; "
        f"{STOPPING_TIMEOUT:g}s for spawn, stop, restart, rm, which may wait out a grace; none for logs)",
    )
    parser.add_argument(
        "--wait",
        type=seconds_arg,
        default=None,
        metavar="SECONDS",
        help="wait up to SECONDS for supd to accept connections before the command (for start-up scripts)",
    )
    sub = parser.add_subparsers(dest="command_name", required=True, metavar="COMMAND")
    add_spawn_command(sub)
    add_logs_command(sub, add_name)

    p = sub.add_parser("ls", help="list children")
    p.add_argument("--json", action="store_true", help="one JSON document (ListResponse)")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("health", help="health of all children (a table) or of one (in detail)")
    add_name(p, nargs="?")
    p.add_argument("--json", action="store_true", help="one JSON document (HealthResponse)")
    p.set_defaults(func=cmd_health)

    p = sub.add_parser("stop", help="stop a child (it stays declared)")
    add_name(p)
    p.add_argument("--grace", type=seconds_arg, metavar="S", help="seconds before SIGKILL, this time only")
    p.set_defaults(func=cmd_stop)

    p = sub.add_parser("restart", help="stop a child if it runs, then start it")
    add_name(p)
    p.add_argument("--grace", type=seconds_arg, metavar="S", help="seconds before SIGKILL, this time only")
    p.set_defaults(func=cmd_restart)

    p = sub.add_parser("kill", help="send a signal to a child")
    add_name(p)
    p.add_argument("signal", type=signal_arg, metavar="SIGNAL", help="TERM, SIGHUP, 9, ...")
    p.add_argument("--group", action="store_true", help="signal the whole process group")
    p.set_defaults(func=cmd_kill)

    p = sub.add_parser("rm", help="stop a child if it runs and forget it")
    add_name(p)
    p.add_argument("--grace", type=seconds_arg, metavar="S", help="seconds before SIGKILL, this time only")
    p.set_defaults(func=cmd_rm)

    add_state_commands(sub, add_name)
    add_apply_command(sub)
    add_top_command(sub)

    p = sub.add_parser("shutdown", help="stop every child and supd itself, as SIGTERM does (works for any user)")
    p.add_argument("--no-wait", action="store_true", help="return once the shutdown has begun")
    p.set_defaults(func=cmd_shutdown)

    p = sub.add_parser(
        "completion",
        help="print a shell completion script: eval \"$(supctl completion bash)\"",
        description="Print the script that completes supctl's commands, options and child names in SHELL. "
        "bash: add 'eval \"$(supctl completion bash)\"' to ~/.bashrc; zsh likewise to ~/.zshrc; "
        "fish: supctl completion fish > ~/.config/fish/completions/supctl.fish",
    )
    p.add_argument("shell", choices=SHELLS, metavar="SHELL", help=f"one of {', '.join(SHELLS)}")
    p.set_defaults(func=None)
    return parser


def _add_connection_flags(parser: argparse.ArgumentParser) -> None:
    """How to reach a TCP listener of supd; each flag defaults to its ``SUPD_*`` variable."""
    for flag, env, text in _CONNECTION_FLAGS:
        metavar = "FILE" if flag.endswith("-file") else "NAME"
        parser.add_argument(flag, default=None, metavar=metavar, help=f"{text} (${env})")
    parser.add_argument(
        "--insecure",
        action="store_true",
        default=None,
        help=f"plaintext TCP, to a loopback listener that serves without TLS (${connection.INSECURE_ENV})",
    )


_CONNECTION_FLAGS = (
    ("--token-file", connection.TOKEN_FILE_ENV, "a file holding the bearer token to send"),
    ("--ca-file", connection.CA_FILE_ENV, "PEM roots that signed supd's certificate (default: the system's)"),
    ("--cert-file", connection.CERT_FILE_ENV, "PEM client certificate, for mutual TLS"),
    ("--key-file", connection.KEY_FILE_ENV, "PEM key of --cert-file"),
    ("--server-name", connection.SERVER_NAME_ENV, "the name to verify in supd's certificate"),
)


def _split_command(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split ``spawn ... -- CMD`` by hand: argparse drops every ``--`` inside CMD too."""
    i, takes_value = 0, {"--addr", "--timeout", "--wait", *(flag for flag, _, _ in _CONNECTION_FLAGS)}
    while i < len(argv):
        token = argv[i]
        if token in takes_value:
            i += 2
            continue
        if token.startswith("-"):
            i += 1
            continue
        if token == "spawn" and "--" in argv[i:]:
            cut = argv.index("--", i)
            return argv[:cut], argv[cut + 1 :]
        break
    return argv, []


# ---------------------------------------------------------------- errors and main


def _wait_ready(supd: Client, seconds: float) -> None:
    """Block until the channel connects, or fail with exit code 3 after ``seconds``."""
    if not supd.wait_connected(seconds):
        address = supd.connection.address
        raise CliError(f"no supd answered at {address} within {seconds:g}s (--wait)", EXIT_UNREACHABLE)


def _silence_stdout() -> None:
    """After EPIPE, point stdout at /dev/null so the interpreter's final flush stays quiet."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _fail(message: str) -> None:
    print(f"supctl: {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, run one command, map every failure to one line and an exit code."""
    if argv is None:  # supctl the program, not a caller's main([...]): stderr is ours
        quiet_grpc_core_log()
    argv = list(sys.argv[1:] if argv is None else argv)
    head, command_tail = _split_command(argv)
    parser = build_parser()
    autocomplete(parser)
    if not argv:  # a first try: show what there is to do, as a usage error for scripts
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    args = parser.parse_args(head)
    if args.command_name == "spawn":
        args.command = [*args.command, *command_tail]
        if not args.command and not args.spec:
            args.parser.error("a command is required after -- (or a --spec file with argv)")
    if args.command_name == "completion":
        return cmd_completion(args.shell)  # needs no supd
    name = getattr(args, "name", None)
    if isinstance(name, str) and not names.is_name(name):  # before it is echoed anywhere: one short, safe line
        _fail(f"{args.command_name}: NAME {names.NAME_RULE}, got {shown(name)}")
        return EXIT_USAGE
    try:
        conn = connection.Connection.from_env(
            address=args.addr,
            token_file=args.token_file,
            ca_file=args.ca_file,
            cert_file=args.cert_file,
            key_file=args.key_file,
            server_name=args.server_name,
            insecure=args.insecure,
        )
    except connection.ConnectionConfigError as exc:
        _fail(str(exc))
        return EXIT_USAGE
    from supervisor.client._errors import rpc_error_of
    from supervisor.client.sync import Client  # here, not at the top: supctl --help does without it

    address = conn.address
    func: Callable[[Client, argparse.Namespace], int] = args.func
    # With --wait, retry a missing or refusing socket often, not gRPC's default of once a second and more.
    options = [("grpc.initial_reconnect_backoff_ms", 50), ("grpc.max_reconnect_backoff_ms", 250)] if args.wait else []
    try:
        with Client(conn, timeout=args.timeout, options=options) as supd:
            if args.wait is not None:
                _wait_ready(supd, args.wait)
            code = func(supd, args)
        sys.stdout.flush()  # here, so that a closed pipe is handled below, not at exit
        return code
    except SupervisorError as exc:
        cause = rpc_error_of(exc)
        failure = rpc_failure(cause, args, address, args.timeout) if cause else CliError(exc.message, EXIT_FAILED)
        _fail(failure.message)
        return failure.code
    except CliError as exc:
        _fail(exc.message)
        return exc.code
    except connection.ConnectionConfigError as exc:
        _fail(str(exc))
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_OK if args.command_name == "logs" else EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_OK
    except OSError as exc:
        _fail(f"{what(args)}: {exc.strerror or exc}")
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
