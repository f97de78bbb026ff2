"""supd's settings: command-line flags and the optional TOML file of children to start at boot.

The file is read and checked by ``config_file.load_config``; every error names
the file and the field (and the child, key and line where it can), as a Spawn
request would.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os

from supervisor import __version__
from supervisor._daemon.api.limits import ApiLimits
from supervisor._daemon.api.listeners import ListenSettings, add_listen_arguments, listen_settings
from supervisor._daemon.config_file import Config, ConfigError, load_config
from supervisor.paths import STATE_DIR_ENV, default_socket_path, default_state_dir, socket_path_of
from supervisor.spec import ChildSpec

__all__ = ["ConfigError", "Settings", "build_parser", "parse_args"]

DEFAULT_SHUTDOWN_TIMEOUT = 30.0
# A day: a longer deadline is a typo, and every child's grace is capped at an hour anyway.
MAX_SHUTDOWN_TIMEOUT = 86400.0


@dataclasses.dataclass(frozen=True)
class Settings:
    socket: str
    children: tuple[ChildSpec, ...] = ()
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    log_level: str = "info"
    export_summary_seconds: float = 10.0
    export_queue_lines: int = 131_072
    state_dir: str = ""
    socket_group: str = ""
    listen: ListenSettings | None = None
    limits: ApiLimits = dataclasses.field(default_factory=ApiLimits)
    config: str = ""  # the --config file, read again on SIGHUP; "" for none
    metrics_listen: str = ""  # HOST:PORT of the Prometheus scrape endpoint; "" for none


def build_parser() -> argparse.ArgumentParser:
    """supd's command line; ``--help`` is its reference."""
    parser = argparse.ArgumentParser(
        prog="supd",
        description="A gRPC-controlled process supervisor: starts, drains, streams and stops children.",
    )
    parser.add_argument(
        "--socket",
        default=None,
        help=f"Unix socket to serve on (default: $SUPD_ADDR if unix:, else {default_socket_path()})",
    )
    parser.add_argument(
        "--socket-group",
        default="",
        metavar="NAME",
        help="let this group's members use the socket too (socket 0660 and directory 0750 of that group); "
        "each of them gets supd's full rights (default: none, socket 0600 in a 0700 directory)",
    )
    parser.add_argument("--config", help="TOML file of children to start at boot")
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=None,
        help=f"seconds to stop every child on SIGTERM before SIGKILL (default {DEFAULT_SHUTDOWN_TIMEOUT:g})",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="least severe of supd's own events written to stderr (and exported): debug, info, warning or "
        "error (default info)",
    )
    parser.add_argument(
        "--state-dir",
        default=None,
        help=f"directory of supd's store: stored state and the children declared by Spawn (default: "
        f"${STATE_DIR_ENV}, else [supervisor] state_dir of --config, else {default_state_dir()}; "
        "in a pod, a volume)",
    )
    parser.add_argument("--version", action="version", version=f"supd {__version__}")
    parser.add_argument(
        "--export-summary-seconds",
        type=float,
        default=10.0,
        help="how often supd logs a summary of child lines dropped by the OTLP export, when any were (default 10)",
    )
    parser.add_argument(
        "--export-queue-lines",
        type=int,
        default=131_072,
        help="child lines the OTLP export may hold while the endpoint is slow or down; beyond, lines are "
        "dropped and counted, never waited for (default 131072)",
    )
    parser.add_argument(
        "--metrics-listen",
        default="",
        metavar="HOST:PORT",
        help="serve supd's metrics for Prometheus at http://HOST:PORT/metrics (plain HTTP; default: "
        "[supervisor] metrics_listen of --config, else none)",
    )
    add_listen_arguments(parser)
    _limit_flags(parser)
    return parser


# The API's limits: (flag, ApiLimits field, type, what it bounds). Defaults are ApiLimits's.
_LIMIT_FLAGS = (
    ("--max-children", "max_children", int, "children supd runs at most; a Spawn beyond is refused RESOURCE_EXHAUSTED"),
    ("--max-streams", "max_streams", int,
     "Stream (and grpc.health.v1 Watch) calls open at once in all; beyond: RESOURCE_EXHAUSTED"),
    ("--max-streams-per-connection", "max_streams_per_connection", int,
     "calls open at once on one client connection (HTTP/2 max concurrent streams); beyond, the client queues"),
    ("--rpc-deadline-seconds", "rpc_deadline_seconds", float,
     "longest a unary call runs before DEADLINE_EXCEEDED; Spawn, Stop, Restart, Remove and Apply get an hour more "
     "(the longest stop grace), Reload a day and an hour more (the longest state delivery)"),
    ("--keepalive-seconds", "keepalive_seconds", float, "supd pings a client connection idle this long"),
    ("--keepalive-timeout-seconds", "keepalive_timeout_seconds", float,
     "a connection whose ping is not answered within this is closed (a client that died is noticed)"),
)
_LIMIT_MAX = {int: 1_000_000, float: 86400.0}


def _limit_flags(parser: argparse.ArgumentParser) -> None:
    defaults = ApiLimits()
    for flag, field, kind, what in _LIMIT_FLAGS:
        parser.add_argument(
            flag, type=kind, default=getattr(defaults, field), dest=field,
            help=f"{what} (default {getattr(defaults, field):g})",
        )


def _limits(args: argparse.Namespace) -> ApiLimits:
    """The ApiLimits of the flags; ConfigError for a value that is not finite or out of 1..max."""
    for flag, field, kind, _ in _LIMIT_FLAGS:
        value = getattr(args, field)
        if not (kind is int or math.isfinite(value)) or not 0 < value <= _LIMIT_MAX[kind]:
            raise ConfigError(f"{flag}: must be a number > 0 and at most {_LIMIT_MAX[kind]:.0f}, got {value}")
    return ApiLimits(**{field: getattr(args, field) for _, field, _, _ in _LIMIT_FLAGS})


def parse_args(argv: list[str] | None = None) -> Settings:
    """Settings from the command line (and the config file it names); ConfigError when unusable."""
    args = build_parser().parse_args(argv)
    config = load_config(args.config) if args.config else Config()
    specs, sup = config.children, config.supervisor
    timeout = args.shutdown_timeout
    where = "--shutdown-timeout"
    if timeout is None:
        timeout = sup.get("shutdown_timeout_seconds", DEFAULT_SHUTDOWN_TIMEOUT)
        where = f"{args.config}: supervisor.shutdown_timeout_seconds" if args.config else where
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not 0 < timeout <= MAX_SHUTDOWN_TIMEOUT:
        raise ConfigError(f"{where}: must be a number > 0 and at most {MAX_SHUTDOWN_TIMEOUT:g}, got {timeout!r}")
    socket = args.socket
    if socket is None:
        from_env = socket_path_of(os.environ.get("SUPD_ADDR", ""))
        socket = from_env or default_socket_path()
    if not args.export_summary_seconds > 0:
        raise ConfigError(f"--export-summary-seconds: must be > 0, got {args.export_summary_seconds}")
    state_dir = args.state_dir or os.environ.get(STATE_DIR_ENV) or sup.get("state_dir") or default_state_dir()
    if not isinstance(state_dir, str):
        raise ConfigError(f"{args.config}: supervisor.state_dir: must be a string, got {state_dir!r}")
    limits = _limits(args)
    if len(specs) > limits.max_children:
        raise ConfigError(
            f"{args.config}: declares {len(specs)} children, more than --max-children {limits.max_children}"
        )
    metrics_listen = _metrics_listen(args.metrics_listen, sup.get("metrics_listen", ""), args.config)
    if args.export_queue_lines < 1:
        raise ConfigError(f"--export-queue-lines: must be >= 1, got {args.export_queue_lines}")
    return Settings(
        socket=socket,
        children=specs,
        shutdown_timeout=float(timeout),
        log_level=args.log_level,
        export_summary_seconds=args.export_summary_seconds,
        export_queue_lines=args.export_queue_lines,
        state_dir=os.path.abspath(state_dir),
        socket_group=args.socket_group,
        listen=listen_settings(args, sup, args.config),
        limits=limits,
        config=args.config or "",
        metrics_listen=metrics_listen,
    )


def _metrics_listen(flag: str, key: object, config: str | None) -> str:
    """``--metrics-listen``, else the config file's ``metrics_listen``: a checked HOST:PORT, or "" for none."""
    from supervisor._daemon.telemetry.prometheus_address import split_address

    where, address = ("--metrics-listen", flag) if flag else (f"{config}: supervisor.metrics_listen", key)
    if not isinstance(address, str):
        raise ConfigError(f"{where}: must be a string HOST:PORT, got {address!r}")
    if address:
        try:
            split_address(address)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    return address
