"""supd's settings: command-line flags and the optional TOML file of children to start at boot.

A config file looks like::

    [supervisor]
    shutdown_timeout_seconds = 30     # overall deadline for stopping every child

    [children.web]
    argv = ["caddy", "run"]
    restart = "always"
    stop_grace_seconds = 5

Every error names the file and the field, as a Spawn request would.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tomllib
from typing import Any

from supervisor import __version__
from supervisor.errors import InvalidArgument
from supervisor.paths import default_socket_path, socket_path_of
from supervisor.spec import ChildSpec, spec_from_mapping

__all__ = ["ConfigError", "Settings", "parse_args"]

DEFAULT_SHUTDOWN_TIMEOUT = 30.0


class ConfigError(Exception):
    """The command line or the config file is unusable; the message says where and why."""


@dataclasses.dataclass(frozen=True)
class Settings:
    socket: str
    children: tuple[ChildSpec, ...] = ()
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    log_level: str = "info"
    export_summary_seconds: float = 10.0
    export_queue_lines: int = 131_072


def _load_config(path: str) -> tuple[tuple[ChildSpec, ...], dict[str, Any]]:
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    unknown = sorted(set(doc) - {"supervisor", "children"})
    if unknown:
        raise ConfigError(f"{path}: unknown table [{unknown[0]}] (known: [supervisor], [children.NAME])")
    children = doc.get("children", {})
    if not isinstance(children, dict):
        raise ConfigError(f"{path}: children: must be a table of [children.NAME] tables")
    specs = []
    for name, table in children.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: children.{name}: must be a table")
        try:
            specs.append(spec_from_mapping(name, table))
        except InvalidArgument as exc:
            raise ConfigError(f"{path}: children.{name}: {exc.message}") from exc
    sup = doc.get("supervisor", {})
    if not isinstance(sup, dict):
        raise ConfigError(f"{path}: supervisor: must be a table")
    return tuple(specs), sup


def parse_args(argv: list[str] | None = None) -> Settings:
    """Settings from the command line (and the config file it names); ConfigError when unusable."""
    parser = argparse.ArgumentParser(
        prog="supd",
        description="A gRPC-controlled process supervisor: starts, drains, streams and stops children.",
    )
    parser.add_argument(
        "--socket",
        default=None,
        help=f"Unix socket to serve on (default: $SUPD_ADDR if unix:, else {default_socket_path()})",
    )
    parser.add_argument("--config", help="TOML file of children to start at boot")
    parser.add_argument(
        "--shutdown-timeout",
        type=float,
        default=None,
        help=f"seconds to stop every child on SIGTERM before SIGKILL (default {DEFAULT_SHUTDOWN_TIMEOUT:g})",
    )
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
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
    args = parser.parse_args(argv)
    specs: tuple[ChildSpec, ...] = ()
    sup: dict[str, Any] = {}
    if args.config:
        specs, sup = _load_config(args.config)
    timeout = args.shutdown_timeout
    if timeout is None:
        timeout = sup.get("shutdown_timeout_seconds", DEFAULT_SHUTDOWN_TIMEOUT)
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or timeout <= 0:
        raise ConfigError(f"shutdown_timeout_seconds: must be a number > 0, got {timeout!r}")
    socket = args.socket
    if socket is None:
        from_env = socket_path_of(os.environ.get("SUPD_ADDR", ""))
        socket = from_env or default_socket_path()
    if not args.export_summary_seconds > 0:
        raise ConfigError(f"--export-summary-seconds: must be > 0, got {args.export_summary_seconds}")
    if args.export_queue_lines < 1:
        raise ConfigError(f"--export-queue-lines: must be >= 1, got {args.export_queue_lines}")
    return Settings(
        socket=socket,
        children=specs,
        shutdown_timeout=float(timeout),
        log_level=args.log_level,
        export_summary_seconds=args.export_summary_seconds,
        export_queue_lines=args.export_queue_lines,
    )
