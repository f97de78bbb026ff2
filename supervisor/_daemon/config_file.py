"""supd's TOML config file: every key at every level checked, errors naming the file, child, key and line.

A config file looks like::

    [supervisor]
    shutdown_timeout_seconds = 30     # overall deadline for stopping every child
    state_dir = "/var/lib/supd"       # the store: stored state and spawned children

    [children.web]
    argv = ["caddy", "run"]
    restart = "always"
    stop_grace_seconds = 5

    [children.web.backoff]
    initial_seconds = 1

An error reads ``/etc/supd.toml:9: children.web: spec.backoff.initail_seconds:
unknown key (known: ...), got 5``; the line is given when exactly one line of
the file defines the key (tomllib reports lines only for TOML syntax errors).
Only structural checks run here: a program or directory missing at boot is a
failed start of that child, not a refused file.
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from typing import Any

from supervisor._daemon.toml_lines import key_line
from supervisor._fields import shown
from supervisor.errors import InvalidArgument
from supervisor.names import check_name
from supervisor.spec import ChildSpec, FieldError, spec_from_mapping

__all__ = ["LISTEN_KEYS", "SUPERVISOR_KEYS", "Config", "ConfigError", "load_config", "parse_config"]

TOP_LEVEL_KEYS = frozenset({"supervisor", "children"})
# The TCP listener keys, read by api/listeners.py.
LISTEN_KEYS = frozenset({
    "listen", "listen_insecure", "listen_health", "tls_cert", "tls_key", "tls_client_ca", "tls_client_roles",
    "tokens_file", "health_unauthenticated",
})
SUPERVISOR_KEYS = frozenset({"shutdown_timeout_seconds", "state_dir", "metrics_listen"}) | LISTEN_KEYS


class ConfigError(Exception):
    """The command line or the config file is unusable; the message says where and why."""


@dataclasses.dataclass(frozen=True)
class Config:
    """What a config file declares: children to start at boot and ``[supervisor]`` settings."""

    children: tuple[ChildSpec, ...] = ()
    supervisor: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def _where(path: str, text: str, keys: tuple[str, ...]) -> str:
    line = key_line(text, keys)
    return f"{path}:{line}" if line is not None else path


def _unknown(path: str, text: str, keys: tuple[str, ...], known: frozenset[str], label: str) -> ConfigError:
    return ConfigError(
        f"{_where(path, text, keys)}: {label}: unknown key {shown(keys[-1])} (known: {', '.join(sorted(known))})"
    )


def load_config(path: str) -> Config:
    """Read and check ``path``; ConfigError naming the file (and line, child and key) when it is unusable."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return parse_config(text, path)


def parse_config(text: str, path: str) -> Config:
    """Check the text of a config file; ``path`` names it in errors. ConfigError as for ``load_config``."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    for key in sorted(set(doc) - TOP_LEVEL_KEYS):
        raise ConfigError(
            f"{_where(path, text, (key,))}: unknown table or key {shown(key)} (known: [supervisor], [children.NAME])"
        )
    sup = doc.get("supervisor", {})
    if not isinstance(sup, dict):
        raise ConfigError(f"{_where(path, text, ('supervisor',))}: supervisor: must be a table")
    for key in sorted(set(sup) - SUPERVISOR_KEYS):
        raise _unknown(path, text, ("supervisor", key), SUPERVISOR_KEYS, "supervisor")
    children = doc.get("children", {})
    if not isinstance(children, dict):
        raise ConfigError(f"{_where(path, text, ('children',))}: children: must be a table of [children.NAME] tables")
    specs = []
    for name, table in children.items():
        try:
            check_name(name, "children.NAME")
        except FieldError as exc:
            raise ConfigError(f"{_where(path, text, ('children', name))}: {exc.message}") from exc
        if not isinstance(table, dict):
            raise ConfigError(f"{_where(path, text, ('children', name))}: children.{name}: must be a table")
        try:
            specs.append(spec_from_mapping(name, table))
        except FieldError as exc:
            keys = ("children", name, *_field_keys(exc.field))
            raise ConfigError(f"{_where(path, text, keys)}: children.{name}: {exc.message}") from exc
        except InvalidArgument as exc:
            raise ConfigError(f"{_where(path, text, ('children', name))}: children.{name}: {exc.message}") from exc
    return Config(children=tuple(specs), supervisor=sup)


def _field_keys(field: str) -> tuple[str, ...]:
    """The TOML keys of a spec field below ``[children.NAME]``.

    ``backoff.max_seconds`` -> ("backoff", "max_seconds"); ``argv[2]`` -> ("argv",); ``env.PATH`` -> ("env", "PATH");
    ``state_delivery.http.url`` -> ("state_delivery", "http", "url").
    """
    head, _, rest = field.partition(".")
    head = head.partition("[")[0]
    if head in ("state_delivery", "liveness_probe", "readiness_probe", "startup_probe") and rest:
        return (head, *(part.partition("[")[0] for part in rest.split(".")))
    if head in ("backoff", "flap_limit", "env") and rest:
        return (head, rest)
    return (head,)
