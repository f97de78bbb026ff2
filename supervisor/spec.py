"""A child's declaration, validated once, with the same messages everywhere.

A ``ChildSpec`` comes from a Spawn request or from a TOML file; both paths go
through ``validate`` (structure: types, ranges, names) so a bad field reads the
same in INVALID_ARGUMENT details, in supd's config error and in supctl's one-line
error: ``spec.stop_grace_seconds: must be > 0, got -1``. Whether the program
and the working directory exist right now is ``check_runnable``: a Spawn
request is refused when they do not, a config file is not (that child's start
fails, with backoff and its reason, and the others run).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
import shutil
import signal
from collections.abc import Mapping
from typing import Any

from supervisor._fields import FieldError, bad, shown, take
from supervisor.backoff import Backoff
from supervisor.delivery import (
    ExecDelivery,
    StateDelivery,
    delivery_from_mapping,
    delivery_from_proto,
    delivery_to_proto,
)
from supervisor.environment import child_environment
from supervisor.exec_limits import check_exec_limits
from supervisor.names import NAME_RULE, is_name
from supervisor.probes import ExecProbe, Probe, probe_from_mapping, probe_from_proto, probe_to_proto
from supervisor.signals import parse_signal
from supervisor.v1 import supervisor_pb2 as pb

__all__ = [
    "DEFAULT_MAX_LINE_BYTES",
    "DEFAULT_RING_BYTES",
    "SPEC_KEYS",
    "Backoff",
    "ChildSpec",
    "FieldError",
    "FlapLimit",
    "Port",
    "PortHolders",
    "RestartPolicy",
    "spec_from_mapping",
    "spec_from_proto",
    "spec_to_proto",
    "unknown_key",
]

KiB = 1024
MiB = 1024 * KiB
DEFAULT_RING_BYTES = 8 * MiB
MIN_RING_BYTES = 64 * KiB
MAX_RING_BYTES = 1024 * MiB
DEFAULT_MAX_LINE_BYTES = 16 * KiB
MIN_MAX_LINE_BYTES = 256
MAX_MAX_LINE_BYTES = 1 * MiB


class RestartPolicy(enum.Enum):
    """Whether a child that exited on its own starts again."""

    ALWAYS = "always"
    ON_FAILURE = "on-failure"
    NEVER = "never"


class PortHolders(enum.Enum):
    """Which holders of a child's ports supd may stop before starting it."""

    OURS = "ours"  # only a process supd can prove it started for this child
    SAME_USER = "same-user"  # also any process of supd's own user (never PID 1, supd, or its other children)


@dataclasses.dataclass(frozen=True)
class Port:
    """A port a child listens on."""

    port: int
    protocol: str = "tcp"  # "tcp" or "udp"

    def __str__(self) -> str:
        return f"{self.port}/{self.protocol}"


def parse_port(value: object, field: str) -> Port:
    """``8080``, ``"8080"``, ``"8080/tcp"`` or ``"53/udp"`` as a Port. Raises InvalidArgument naming ``field``."""
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    if isinstance(text, str):
        number, _, protocol = text.strip().partition("/")
        protocol = protocol.lower() or "tcp"
        if number.isdigit() and 1 <= int(number) <= 65535 and protocol in ("tcp", "udp"):
            return Port(int(number), protocol)
    _bad(field, "must be a port 1..65535, optionally with /tcp or /udp (8080, \"53/udp\")", value)
    raise AssertionError("unreachable: _bad raises")


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
    # Names of supd's variables the child gets even when withheld (supervisor/environment.py).
    pass_env: tuple[str, ...] = ()
    cwd: str = ""
    restart: RestartPolicy = RestartPolicy.ON_FAILURE
    backoff: Backoff = Backoff()
    flap_limit: FlapLimit = FlapLimit()
    stop_signal: int = int(signal.SIGTERM)
    stop_grace_seconds: float = 10.0
    ring_bytes: int = DEFAULT_RING_BYTES
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    # How the child takes its stored state; None: it has none (Reload is refused).
    state_delivery: StateDelivery | None = None
    # Probes with the kubelet's meaning (supervisor/probes.py); None: not declared.
    liveness_probe: Probe | None = None
    readiness_probe: Probe | None = None
    startup_probe: Probe | None = None
    # Ports the child listens on: stale holders are reaped before every start (children/port_reaper.py).
    ports: tuple[Port, ...] = ()
    port_holders: PortHolders = PortHolders.OURS
    # POSTed to before a stale holder is signalled (an old instance's admin /stop); "" for none.
    port_holder_stop_url: str = ""
    # Boot starts children by ascending start_order; shutdown stops them in the reverse order.
    start_order: int = 0

    def probes(self) -> dict[str, Probe]:
        """The probes declared, by their short name: ``liveness``, ``readiness``, ``startup``."""
        found = {"startup": self.startup_probe, "liveness": self.liveness_probe, "readiness": self.readiness_probe}
        return {name: probe for name, probe in found.items() if probe is not None}

    def child_env(self) -> dict[str, str]:
        """The environment the process, its exec probes and exec deliveries get (``environment.child_environment``)."""
        return child_environment(self.env, inherit=self.inherit_env, pass_env=self.pass_env)

    def validate(self) -> ChildSpec:
        """Structural checks: types, ranges and names; return self when all are good.

        Raises InvalidArgument naming the first bad field. Nothing here looks at
        the file system: whether the program and the working directory exist is
        ``check_runnable``'s question, which can change while supd runs.
        """
        if not is_name(self.name):
            _bad("name", NAME_RULE, self.name)
        if not self.argv:
            _bad("argv", "must name a program", list(self.argv))
        for i, arg in enumerate(self.argv):
            if "\0" in arg:
                _bad(f"argv[{i}]", "must not contain NUL bytes", arg)
        for key, value in self.env.items():
            if not key or "=" in key or "\0" in key or "\0" in value:
                _bad(f"env[{shown(key)}]", "names must be non-empty without '=' or NUL; values without NUL", value)
        for i, name in enumerate(self.pass_env):
            if not name or "=" in name or "\0" in name:
                _bad(f"pass_env[{i}]", "names must be non-empty without '=' or NUL", name)
        if "\0" in self.cwd:
            _bad("cwd", "must not contain NUL bytes", self.cwd)
        b = self.backoff
        _range("backoff.initial_seconds", b.initial_seconds, 0.0, 3600.0, low_open=True)
        _range("backoff.max_seconds", b.max_seconds, b.initial_seconds, 86400.0)
        _range("backoff.multiplier", b.multiplier, 1.0, 100.0)
        _range("backoff.reset_after_seconds", b.reset_after_seconds, 0.0, 10 * 86400.0, low_open=True)
        _range("flap_limit.max_restarts", self.flap_limit.max_restarts, 0, 1_000_000)
        _range("flap_limit.window_seconds", self.flap_limit.window_seconds, 0.0, 10 * 86400.0, low_open=True)
        try:
            parse_signal(self.stop_signal)
        except ValueError:
            _bad("stop_signal", "must be a valid signal number", self.stop_signal)
        _range("stop_grace_seconds", self.stop_grace_seconds, 0.0, 3600.0, low_open=True)
        _range("ring_bytes", self.ring_bytes, MIN_RING_BYTES, MAX_RING_BYTES, size=True)
        _range("max_line_bytes", self.max_line_bytes, MIN_MAX_LINE_BYTES, MAX_MAX_LINE_BYTES, size=True)
        if self.state_delivery is not None:
            self.state_delivery.validate()
        for name, probe in self.probes().items():
            probe.validate(f"{name}_probe")
        for i, port in enumerate(self.ports):
            if not (1 <= port.port <= 65535 and port.protocol in ("tcp", "udp")):
                _bad(f"ports[{i}]", "must be a port 1..65535 with protocol tcp or udp", str(port))
        if len(set(self.ports)) != len(self.ports):
            _bad("ports", "must not repeat a port", [str(p) for p in self.ports])
        _range("start_order", self.start_order, -1000, 1000)
        url = self.port_holder_stop_url
        if url and not (url.startswith("http://") or url.startswith("https://")):
            _bad("port_holder_stop_url", "must be an http:// or https:// URL", url)
        return self

    def check_runnable(self) -> ChildSpec:
        """Whether the child can start right now: its cwd exists and argv[0] is an executable; return self.

        argv[0] without a ``/`` is looked up in the child's PATH (supd's when the
        child's environment has none); with a ``/`` it is taken relative to
        ``cwd``. argv and the environment must fit the kernel's exec limits (``exec_limits``). Raises
        InvalidArgument naming ``cwd``, ``argv[0]``, ``argv``, ``env`` or the string over a limit. A config
        file does not call this: a program missing at boot is a failed start of
        that child (with backoff and its reason), not a reason to refuse the file.
        """
        env = self.child_env()
        check_exec_limits(self.argv, env)
        # Exec probes and exec deliveries are run with the child's environment too.
        for name, probe in self.probes().items():
            if isinstance(probe.action, ExecProbe):
                check_exec_limits(probe.action.argv, env, prefix=f"{name}_probe.exec.")
        delivery = self.state_delivery
        if delivery is not None and isinstance(delivery.method, ExecDelivery):
            check_exec_limits(delivery.method.argv, env, prefix="state_delivery.exec.")
        if self.cwd and not os.path.isdir(self.cwd):
            _bad("cwd", "must be an existing directory", self.cwd)
        if "/" not in self.argv[0]:
            path = env.get("PATH", os.defpath)
            if shutil.which(self.argv[0], path=path) is None:
                _bad("argv[0]", f"no executable of that name in PATH ({shown(path)})", self.argv[0])
        else:
            program = os.path.join(self.cwd or os.getcwd(), self.argv[0])
            if not (os.path.isfile(program) and os.access(program, os.X_OK)):
                _bad("argv[0]", "must be an executable file", self.argv[0])
        return self


def _bad(field: str, rule: str, got: object) -> None:
    bad(field, rule, got)


def _number(value: float, *, size: bool = False) -> str:
    """A bound as a person reads it: whole numbers in full (never ``1.07374e+09``); sizes with binary units too."""
    if isinstance(value, int) or float(value).is_integer():
        text = str(int(value))
        if size and value >= KiB:
            for unit, scale in (("GiB", 1024 * MiB), ("MiB", MiB), ("KiB", KiB)):
                if value >= scale and value % scale == 0:
                    return f"{text} ({int(value) // scale} {unit})"
        return text
    return repr(float(value))


def _range(
    field: str, value: float, low: float, high: float, *, low_open: bool = False, size: bool = False
) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        _bad(field, "must be a finite number", value)
    if low_open and value <= low:
        _bad(field, f"must be > {_number(low, size=size)}", value)
    if value < low or value > high:
        _bad(field, f"must be between {_number(low, size=size)} and {_number(high, size=size)}", value)


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


_HOLDERS_FROM_PB = {
    pb.PORT_HOLDERS_UNSPECIFIED: PortHolders.OURS,
    pb.PORT_HOLDERS_OURS: PortHolders.OURS,
    pb.PORT_HOLDERS_SAME_USER: PortHolders.SAME_USER,
}
_HOLDERS_TO_PB = {PortHolders.OURS: pb.PORT_HOLDERS_OURS, PortHolders.SAME_USER: pb.PORT_HOLDERS_SAME_USER}


def _or(value: float, default: float) -> float:
    """Proto3 scalars have no presence: zero means "use the default"."""
    return value if value else default


def spec_from_proto(msg: pb.ChildSpec, *, check_runnable: bool = True) -> ChildSpec:
    """Build and validate a spec from a Spawn request, filling unset fields with defaults.

    Runs both ``validate`` and ``check_runnable``: a Spawn of a program that
    does not exist is refused with INVALID_ARGUMENT. A stored spec re-created
    at boot skips ``check_runnable`` (a missing program is that child's failed
    start, as for a config child). Raises InvalidArgument.
    """
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
        pass_env=tuple(msg.pass_env),
        cwd=msg.cwd,
        restart=_POLICY_FROM_PB[msg.restart],
        backoff=backoff,
        flap_limit=flap,
        stop_signal=msg.stop_signal or int(signal.SIGTERM),
        stop_grace_seconds=msg.stop_grace_seconds if msg.stop_grace_seconds else 10.0,
        ring_bytes=msg.ring_bytes or DEFAULT_RING_BYTES,
        max_line_bytes=msg.max_line_bytes or DEFAULT_MAX_LINE_BYTES,
        state_delivery=delivery_from_proto(msg.state_delivery) if msg.HasField("state_delivery") else None,
        liveness_probe=probe_from_proto(msg.liveness_probe, "liveness_probe"),
        readiness_probe=probe_from_proto(msg.readiness_probe, "readiness_probe"),
        startup_probe=probe_from_proto(msg.startup_probe, "startup_probe"),
        ports=tuple(Port(p.port, p.protocol.lower() or "tcp") for p in msg.ports),
        port_holders=_HOLDERS_FROM_PB.get(msg.port_holders, PortHolders.OURS),
        port_holder_stop_url=msg.port_holder_stop_url,
        start_order=msg.start_order,
    )
    return spec.validate().check_runnable() if check_runnable else spec.validate()


def spec_to_proto(spec: ChildSpec) -> pb.ChildSpec:
    """The spec as the proto message clients see."""
    return pb.ChildSpec(
        name=spec.name,
        argv=list(spec.argv),
        env=dict(spec.env),
        inherit_env=spec.inherit_env,
        pass_env=list(spec.pass_env),
        cwd=spec.cwd,
        restart=_POLICY_TO_PB[spec.restart],
        backoff=pb.Backoff(**dataclasses.asdict(spec.backoff)),
        flap_limit=pb.FlapLimit(**dataclasses.asdict(spec.flap_limit)),
        stop_signal=spec.stop_signal,
        stop_grace_seconds=spec.stop_grace_seconds,
        ring_bytes=spec.ring_bytes,
        max_line_bytes=spec.max_line_bytes,
        state_delivery=delivery_to_proto(spec.state_delivery) if spec.state_delivery is not None else None,
        liveness_probe=probe_to_proto(spec.liveness_probe),
        readiness_probe=probe_to_proto(spec.readiness_probe),
        startup_probe=probe_to_proto(spec.startup_probe),
        ports=[pb.Port(port=p.port, protocol=p.protocol) for p in spec.ports],
        port_holders=_HOLDERS_TO_PB[spec.port_holders],
        port_holder_stop_url=spec.port_holder_stop_url,
        start_order=spec.start_order,
    )


def _signal_number(field: str, value: object) -> int:
    try:
        return parse_signal(value)
    except ValueError:
        _bad(field, "must be a signal name like SIGTERM or a number", value)
        raise AssertionError from None  # unreachable: _bad raises


def _take(table: Mapping[str, Any], key: str, kind: type | tuple[type, ...], field: str, default: Any) -> Any:
    return take(table, key, kind, field, default)


# The keys a ``[children.NAME]`` table may hold, and those of its nested tables.
SPEC_KEYS: Mapping[str, frozenset[str]] = {
    "": frozenset(
        {
            "argv", "env", "inherit_env", "pass_env", "cwd", "restart", "backoff", "flap_limit",
            "stop_signal", "stop_grace_seconds", "ring_bytes", "max_line_bytes", "state_delivery",
            "liveness_probe", "readiness_probe", "startup_probe", "ports", "port_holders", "port_holder_stop_url",
            "start_order",
        }
    ),
    "backoff": frozenset(f.name for f in dataclasses.fields(Backoff)),
    "flap_limit": frozenset(f.name for f in dataclasses.fields(FlapLimit)),
}


def unknown_key(table: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The path of the first key of a ``[children.NAME]`` table, nested tables included, that no field has.

    ``("backoff", "initail_seconds")`` for ``[children.x.backoff] initail_seconds = 5``; None when all are known.
    """
    for key in sorted(set(table) - SPEC_KEYS[""]):
        return (key,)
    for nested in ("backoff", "flap_limit"):
        sub = table.get(nested)
        if isinstance(sub, Mapping):
            for key in sorted(set(sub) - SPEC_KEYS[nested]):
                return (nested, key)
    return None


def _holders(value: str) -> PortHolders:
    try:
        return PortHolders(value)
    except ValueError:
        _bad("port_holders", "must be one of ours, same-user", value)
        raise AssertionError("unreachable: _bad raises") from None


def spec_from_mapping(name: str, table: Mapping[str, Any]) -> ChildSpec:
    """Build a structurally valid spec from one ``[children.NAME]`` table of a TOML config.

    Every key at every level must be known and of the right type (InvalidArgument,
    a ``FieldError`` naming the field, otherwise). Only ``validate`` runs, not
    ``check_runnable``: a program missing right now is that child's failed start.
    """
    path = unknown_key(table)
    if path is not None:
        known = SPEC_KEYS[path[0] if len(path) > 1 else ""]
        value = table[path[0]] if len(path) == 1 else table[path[0]][path[1]]
        _bad(".".join(path), f"unknown key (known: {', '.join(sorted(known))})", value)
    argv = _take(table, "argv", list, "argv", [])
    for i, arg in enumerate(argv):
        if not isinstance(arg, str):
            _bad(f"argv[{i}]", "must be a string", arg)
    env = _take(table, "env", dict, "env", {})
    for key, value in env.items():
        if not isinstance(value, str):
            _bad(f"env.{key}", "must be a string", value)
    pass_env = _take(table, "pass_env", list, "pass_env", [])
    for i, passed in enumerate(pass_env):
        if not isinstance(passed, str):
            _bad(f"pass_env[{i}]", "must be a string", passed)
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
        pass_env=tuple(pass_env),
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
        state_delivery=(
            delivery_from_mapping(_take(table, "state_delivery", dict, "state_delivery", {}))
            if "state_delivery" in table
            else None
        ),
        ports=tuple(parse_port(p, f"ports[{i}]") for i, p in enumerate(_take(table, "ports", list, "ports", []))),
        port_holders=_holders(_take(table, "port_holders", str, "port_holders", "ours")),
        port_holder_stop_url=_take(table, "port_holder_stop_url", str, "port_holder_stop_url", ""),
        start_order=_take(table, "start_order", int, "start_order", 0),
        **{
            field: probe_from_mapping(_take(table, field, dict, field, {}), field)
            for field in ("liveness_probe", "readiness_probe", "startup_probe")
            if field in table
        },
    )
    return spec.validate()
