"""A child's declaration, validated once, with the same messages everywhere.

A ``ChildSpec`` comes from a Spawn request or from a TOML file; both paths go
through ``validate`` so a bad field reads the same in INVALID_ARGUMENT details,
in supd's config error and in supctl's one-line error:
``spec.stop_grace_seconds: must be > 0, got -1``.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
import re
import shutil
import signal
from collections.abc import Mapping
from typing import Any

from supervisor.errors import InvalidArgument
from supervisor.v1 import supervisor_pb2 as pb

__all__ = [
    "DEFAULT_MAX_LINE_BYTES",
    "DEFAULT_RING_BYTES",
    "Backoff",
    "ChildSpec",
    "FlapLimit",
    "RestartPolicy",
    "spec_from_mapping",
    "spec_from_proto",
    "spec_to_proto",
]

KiB = 1024
MiB = 1024 * KiB
DEFAULT_RING_BYTES = 8 * MiB
MIN_RING_BYTES = 64 * KiB
MAX_RING_BYTES = 1024 * MiB
DEFAULT_MAX_LINE_BYTES = 16 * KiB
MIN_MAX_LINE_BYTES = 256
MAX_MAX_LINE_BYTES = 1 * MiB
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")


class RestartPolicy(enum.Enum):
    """Whether a child that exited on its own starts again."""

    ALWAYS = "always"
    ON_FAILURE = "on-failure"
    NEVER = "never"


@dataclasses.dataclass(frozen=True)
class Backoff:
    """Delay before automatic restart n (1-based) since the last stable run."""

    initial_seconds: float = 0.5
    max_seconds: float = 30.0
    multiplier: float = 2.0
    reset_after_seconds: float = 60.0

    def delay(self, n: int) -> float:
        """The delay before the n-th consecutive restart."""
        exponent = max(n - 1, 0)
        # Cap the exponent so a long flapping history cannot overflow a float.
        return min(self.max_seconds, self.initial_seconds * self.multiplier ** min(exponent, 64))


@dataclasses.dataclass(frozen=True)
class FlapLimit:
    """More than ``max_restarts`` automatic restarts within ``window_seconds`` is FATAL."""

    max_restarts: int = 5
    window_seconds: float = 60.0


@dataclasses.dataclass(frozen=True)
class ChildSpec:
    """Everything supd needs to run one child, defaults filled in and validated."""

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    inherit_env: bool = False
    cwd: str = ""
    restart: RestartPolicy = RestartPolicy.ON_FAILURE
    backoff: Backoff = Backoff()
    flap_limit: FlapLimit = FlapLimit()
    stop_signal: int = int(signal.SIGTERM)
    stop_grace_seconds: float = 10.0
    ring_bytes: int = DEFAULT_RING_BYTES
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES

    def child_env(self) -> dict[str, str]:
        """The environment the process gets."""
        if not self.env:
            return dict(os.environ)
        if self.inherit_env:
            return {**os.environ, **self.env}
        return dict(self.env)

    def validate(self) -> ChildSpec:
        """Raise InvalidArgument naming the first bad field; return self when all are good."""
        if not _NAME.match(self.name):
            _bad("name", "must be 1-64 characters of [A-Za-z0-9._-] not starting with '.' or '-'", self.name)
        if not self.argv:
            _bad("argv", "must name a program", list(self.argv))
        for i, arg in enumerate(self.argv):
            if "\0" in arg:
                _bad(f"argv[{i}]", "must not contain NUL bytes", arg)
        for key, value in self.env.items():
            if not key or "=" in key or "\0" in key or "\0" in value:
                _bad(f"env[{key!r}]", "names must be non-empty without '=' or NUL; values without NUL", value)
        if self.cwd and not os.path.isdir(self.cwd):
            _bad("cwd", "must be an existing directory", self.cwd)
        if "/" not in self.argv[0]:
            path = self.child_env().get("PATH", os.defpath)
            if shutil.which(self.argv[0], path=path) is None:
                _bad("argv[0]", f"no executable of that name in PATH ({path})", self.argv[0])
        else:
            program = os.path.join(self.cwd or os.getcwd(), self.argv[0])
            if not (os.path.isfile(program) and os.access(program, os.X_OK)):
                _bad("argv[0]", "must be an executable file", self.argv[0])
        b = self.backoff
        _range("backoff.initial_seconds", b.initial_seconds, 0.0, 3600.0, low_open=True)
        _range("backoff.max_seconds", b.max_seconds, b.initial_seconds, 86400.0)
        _range("backoff.multiplier", b.multiplier, 1.0, 100.0)
        _range("backoff.reset_after_seconds", b.reset_after_seconds, 0.0, 10 * 86400.0, low_open=True)
        _range("flap_limit.max_restarts", self.flap_limit.max_restarts, 0, 1_000_000)
        _range("flap_limit.window_seconds", self.flap_limit.window_seconds, 0.0, 10 * 86400.0, low_open=True)
        valid_signals = {int(s) for s in signal.valid_signals()}
        if self.stop_signal not in valid_signals or self.stop_signal == 0:
            _bad("stop_signal", "must be a valid signal number", self.stop_signal)
        _range("stop_grace_seconds", self.stop_grace_seconds, 0.0, 3600.0, low_open=True)
        _range("ring_bytes", self.ring_bytes, MIN_RING_BYTES, MAX_RING_BYTES)
        _range("max_line_bytes", self.max_line_bytes, MIN_MAX_LINE_BYTES, MAX_MAX_LINE_BYTES)
        return self


def _bad(field: str, rule: str, got: object) -> None:
    raise InvalidArgument(f"spec.{field}: {rule}, got {got!r}")


def _range(field: str, value: float, low: float, high: float, *, low_open: bool = False) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        _bad(field, "must be a finite number", value)
    if low_open and value <= low:
        _bad(field, f"must be > {low:g}", value)
    if value < low or value > high:
        _bad(field, f"must be between {low:g} and {high:g}", value)


_POLICY_FROM_PB = {
    pb.RESTART_POLICY_UNSPECIFIED: RestartPolicy.ON_FAILURE,
    pb.RESTART_POLICY_ALWAYS: RestartPolicy.ALWAYS,
    pb.RESTART_POLICY_ON_FAILURE: RestartPolicy.ON_FAILURE,
    pb.RESTART_POLICY_NEVER: RestartPolicy.NEVER,
}
_POLICY_TO_PB = {
    RestartPolicy.ALWAYS: pb.RESTART_POLICY_ALWAYS,
    RestartPolicy.ON_FAILURE: pb.RESTART_POLICY_ON_FAILURE,
    RestartPolicy.NEVER: pb.RESTART_POLICY_NEVER,
}


def _or(value: float, default: float) -> float:
    """Proto3 scalars have no presence: zero means "use the default"."""
    return value if value else default


def spec_from_proto(msg: pb.ChildSpec) -> ChildSpec:
    """Build and validate a spec from a Spawn request, filling unset fields with defaults."""
    if msg.restart not in _POLICY_FROM_PB:
        _bad("restart", "must be one of ALWAYS, ON_FAILURE, NEVER", msg.restart)
    d_back, d_flap = Backoff(), FlapLimit()
    backoff = Backoff(
        initial_seconds=_or(msg.backoff.initial_seconds, d_back.initial_seconds),
        max_seconds=_or(msg.backoff.max_seconds, d_back.max_seconds),
        multiplier=_or(msg.backoff.multiplier, d_back.multiplier),
        reset_after_seconds=_or(msg.backoff.reset_after_seconds, d_back.reset_after_seconds),
    )
    flap = FlapLimit(
        max_restarts=(
            msg.flap_limit.max_restarts if msg.flap_limit.HasField("max_restarts") else d_flap.max_restarts
        ),
        window_seconds=_or(msg.flap_limit.window_seconds, d_flap.window_seconds),
    )
    spec = ChildSpec(
        name=msg.name,
        argv=tuple(msg.argv),
        env=dict(msg.env),
        inherit_env=msg.inherit_env,
        cwd=msg.cwd,
        restart=_POLICY_FROM_PB[msg.restart],
        backoff=backoff,
        flap_limit=flap,
        stop_signal=msg.stop_signal or int(signal.SIGTERM),
        stop_grace_seconds=msg.stop_grace_seconds if msg.stop_grace_seconds else 10.0,
        ring_bytes=msg.ring_bytes or DEFAULT_RING_BYTES,
        max_line_bytes=msg.max_line_bytes or DEFAULT_MAX_LINE_BYTES,
    )
    return spec.validate()


def spec_to_proto(spec: ChildSpec) -> pb.ChildSpec:
    """The spec as the proto message clients see."""
    return pb.ChildSpec(
        name=spec.name,
        argv=list(spec.argv),
        env=dict(spec.env),
        inherit_env=spec.inherit_env,
        cwd=spec.cwd,
        restart=_POLICY_TO_PB[spec.restart],
        backoff=pb.Backoff(**dataclasses.asdict(spec.backoff)),
        flap_limit=pb.FlapLimit(**dataclasses.asdict(spec.flap_limit)),
        stop_signal=spec.stop_signal,
        stop_grace_seconds=spec.stop_grace_seconds,
        ring_bytes=spec.ring_bytes,
        max_line_bytes=spec.max_line_bytes,
    )


def _signal_number(field: str, value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        name = value.upper()
        name = name if name.startswith("SIG") else "SIG" + name
        if name in signal.Signals.__members__:
            return int(signal.Signals[name])
    _bad(field, "must be a signal name like SIGTERM or a number", value)
    raise AssertionError  # unreachable: _bad raises


def _take(table: Mapping[str, Any], key: str, kind: type | tuple[type, ...], field: str, default: Any) -> Any:
    if key not in table:
        return default
    value = table[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        _bad(field, f"must be of type {getattr(kind, '__name__', kind)}", value)
    return value


_SPEC_KEYS = {
    "argv", "env", "inherit_env", "cwd", "restart", "backoff", "flap_limit",
    "stop_signal", "stop_grace_seconds", "ring_bytes", "max_line_bytes",
}


def spec_from_mapping(name: str, table: Mapping[str, Any]) -> ChildSpec:
    """Build and validate a spec from one ``[children.NAME]`` table of a TOML config."""
    unknown = sorted(set(table) - _SPEC_KEYS)
    if unknown:
        _bad(unknown[0], f"unknown key (known: {', '.join(sorted(_SPEC_KEYS))})", table[unknown[0]])
    argv = _take(table, "argv", list, "argv", [])
    if not all(isinstance(a, str) for a in argv):
        _bad("argv", "must be a list of strings", argv)
    env = _take(table, "env", dict, "env", {})
    if not all(isinstance(v, str) for v in env.values()):
        _bad("env", "values must be strings", env)
    policy = _take(table, "restart", str, "restart", "on-failure")
    try:
        restart = RestartPolicy(policy)
    except ValueError:
        _bad("restart", "must be one of always, on-failure, never", policy)
    b = _take(table, "backoff", dict, "backoff", {})
    f = _take(table, "flap_limit", dict, "flap_limit", {})
    d_back, d_flap = Backoff(), FlapLimit()
    spec = ChildSpec(
        name=name,
        argv=tuple(argv),
        env=env,
        inherit_env=_take(table, "inherit_env", bool, "inherit_env", False),
        cwd=_take(table, "cwd", str, "cwd", ""),
        restart=restart,
        backoff=Backoff(
            initial_seconds=_take(b, "initial_seconds", float, "backoff.initial_seconds", d_back.initial_seconds),
            max_seconds=_take(b, "max_seconds", float, "backoff.max_seconds", d_back.max_seconds),
            multiplier=_take(b, "multiplier", float, "backoff.multiplier", d_back.multiplier),
            reset_after_seconds=_take(
                b, "reset_after_seconds", float, "backoff.reset_after_seconds", d_back.reset_after_seconds
            ),
        ),
        flap_limit=FlapLimit(
            max_restarts=_take(f, "max_restarts", int, "flap_limit.max_restarts", d_flap.max_restarts),
            window_seconds=_take(f, "window_seconds", float, "flap_limit.window_seconds", d_flap.window_seconds),
        ),
        stop_signal=_signal_number("stop_signal", table.get("stop_signal", "SIGTERM")),
        stop_grace_seconds=_take(table, "stop_grace_seconds", float, "stop_grace_seconds", 10.0),
        ring_bytes=_take(table, "ring_bytes", int, "ring_bytes", DEFAULT_RING_BYTES),
        max_line_bytes=_take(table, "max_line_bytes", int, "max_line_bytes", DEFAULT_MAX_LINE_BYTES),
    )
    return spec.validate()
