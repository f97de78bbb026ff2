"""The requests the clients send and the deadlines they use, built once for the sync and async clients."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from supervisor.signals import parse_signal
from supervisor.v1 import supervisor_pb2 as pb

__all__ = [
    "CHANNEL_OPTIONS",
    "QUICK_TIMEOUT",
    "RECONNECT_TIMEOUT",
    "RELOAD_TIMEOUT",
    "STOPPING_TIMEOUT",
    "apply_request",
    "child_spec",
    "reload_request",
    "signal_request",
    "stream_request",
]

# Quick calls get a short deadline; calls that may wait out a child's stop grace
# (at most 3600 s by the contract) get that plus a margin.
QUICK_TIMEOUT = 30.0
STOPPING_TIMEOUT = 3660.0
# A Reload may retry for its delivery's budget (30 s by default) and more when a child declares a longer one.
RELOAD_TIMEOUT = 120.0
# How long a follower keeps trying to get its stream back after the connection broke.
RECONNECT_TIMEOUT = 30.0
# Batches hold up to max_line_bytes (1 MiB) lines; never refuse a message for size.
CHANNEL_OPTIONS = (("grpc.max_receive_message_length", -1),)

_POLICIES = {
    "always": pb.RESTART_POLICY_ALWAYS,
    "on-failure": pb.RESTART_POLICY_ON_FAILURE,
    "on_failure": pb.RESTART_POLICY_ON_FAILURE,
    "never": pb.RESTART_POLICY_NEVER,
}
_STREAMS = {"stdout": pb.OUTPUT_STREAM_STDOUT, "stderr": pb.OUTPUT_STREAM_STDERR}


def child_spec(
    spec: pb.ChildSpec | None,
    name: str | None,
    argv: Sequence[str] | None,
    env: Mapping[str, str] | None,
    fields: Mapping[str, Any],
) -> pb.ChildSpec:
    """A ChildSpec from a message, or from keyword arguments named as its fields (they override the message).

    ``restart`` may be ``"always"``, ``"on-failure"`` or ``"never"`` as well as
    the enum; ``stop_signal`` a name such as ``"SIGINT"``. Raises ValueError
    for an unknown field or policy name, TypeError when neither a spec nor a name is given.
    """
    result = pb.ChildSpec()
    if spec is not None:
        result.CopyFrom(spec)
    elif name is None:
        raise TypeError("spawn needs a ChildSpec or name= and argv=")
    extra = dict(fields)
    if isinstance(extra.get("restart"), str):
        policy = extra["restart"]
        if policy not in _POLICIES:
            raise ValueError(f"restart must be one of always, on-failure, never; got {policy!r}")
        extra["restart"] = _POLICIES[policy]
    if isinstance(extra.get("stop_signal"), str):
        extra["stop_signal"] = parse_signal(extra["stop_signal"])
    try:
        result.MergeFrom(pb.ChildSpec(**extra))
    except ValueError as exc:
        raise ValueError(f"not a ChildSpec field: {exc}") from None
    if name is not None:
        result.name = name
    if argv is not None:
        del result.argv[:]
        result.argv.extend(argv)
    if env is not None:
        result.env.clear()
        result.env.update(env)
    return result


def stream_request(
    name: str, from_seq: int | None, tail: int | None, follow: bool, streams: Iterable[str | int]
) -> pb.StreamRequest:
    """A StreamRequest; ``streams`` as ``"stdout"``/``"stderr"`` or OutputStream values. ValueError for both starts."""
    if from_seq is not None and tail is not None:
        raise ValueError("give from_seq or tail, not both")
    request = pb.StreamRequest(name=name, follow=follow)
    if from_seq is not None:
        request.from_seq = from_seq
    elif tail is not None:
        request.tail = tail
    for stream in streams:
        request.streams.append(_STREAMS[stream] if isinstance(stream, str) else stream)  # type: ignore[arg-type]
    return request


def signal_request(name: str, signal: int | str, group: bool) -> pb.SignalRequest:
    """A SignalRequest; ``signal`` by number or name (``"TERM"``, ``"SIGHUP"``). ValueError for an unknown one."""
    return pb.SignalRequest(name=name, signal=parse_signal(signal), group=group)


def reload_request(
    name: str, state: bytes | str, content_type: str | None, expected_revision: int | None
) -> pb.ReloadRequest:
    """A ReloadRequest; text state is sent as UTF-8."""
    data = state.encode("utf-8") if isinstance(state, str) else state
    request = pb.ReloadRequest(name=name, state=data, content_type=content_type or "")
    if expected_revision is not None:
        request.expected_revision = expected_revision
    return request


def apply_request(
    config_toml: str | None, children: Sequence[pb.ChildSpec], config_name: str, dry_run: bool, prune: bool
) -> pb.ApplyRequest:
    """An ApplyRequest; ValueError when both a config text and children are given."""
    if config_toml is not None and children:
        raise ValueError("apply: give the text of a config file or children, not both")
    return pb.ApplyRequest(
        config_toml=config_toml or "", config_name=config_name, children=list(children), dry_run=dry_run, prune=prune
    )
