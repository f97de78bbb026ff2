"""How supctl renders supd's messages: tables, one-line events, JSON records.

Kept apart from the command plumbing in ``supervisor.cli`` so that the text a
person or a script reads is defined in one place.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Sequence
from typing import Any

from supervisor.v1 import supervisor_pb2 as pb

__all__ = [
    "batch_json_lines",
    "describe_event",
    "describe_exit",
    "describe_gap",
    "duration",
    "event_json",
    "gap_json",
    "health_table",
    "health_text",
    "list_table",
    "message_dict",
    "state_name",
    "table",
]

_STREAM_NAMES = {pb.OUTPUT_STREAM_STDOUT: "stdout", pb.OUTPUT_STREAM_STDERR: "stderr"}


def message_dict(msg: Any) -> dict[str, Any]:
    """A message as JSON-ready data, every field present so scripts need no defaults."""
    from google.protobuf import json_format

    result: dict[str, Any] = json_format.MessageToDict(
        msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    return result


def state_name(state: int) -> str:
    """``CHILD_STATE_RUNNING`` -> ``RUNNING``; a number this client does not know stays a number."""
    try:
        return pb.ChildState.Name(state).removeprefix("CHILD_STATE_")  # type: ignore[arg-type]
    except ValueError:
        return str(state)


def duration(seconds: float) -> str:
    """A short human duration (``12s``, ``3m04s``, ``2h05m``, ``4d03h``); ``-`` for none."""
    if seconds <= 0:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def describe_exit(exit_status: pb.ExitStatus) -> str:
    """supd's own summary when it gave one, else one built from the fields."""
    if exit_status.description:
        return exit_status.description
    if exit_status.exited:
        return f"exited with code {exit_status.code}"
    return f"killed by {exit_status.signal_name or f'signal {exit_status.signal}'}"


def _last_exit(child: pb.ChildInfo) -> str:
    return describe_exit(child.last_exit) if child.HasField("last_exit") else "-"


def list_table(children: Sequence[pb.ChildInfo]) -> str:
    """The ``supctl ls`` table, columns sized to their contents, LAST-EXIT unpadded last."""
    header = ("NAME", "STATE", "HEALTH", "PID", "GEN", "RESTARTS", "UPTIME", "LAST-EXIT")
    rows = [header] + [
        (
            c.spec.name,
            state_name(c.state),
            health_name(c.health),
            str(c.pid) if c.pid else "-",
            str(c.generation),
            str(c.restart_count),
            duration(c.uptime_seconds),
            _last_exit(c),
        )
        for c in children
    ]
    return table(rows)


def table(rows: Sequence[Sequence[str]]) -> str:
    """Rows as columns sized to their contents, two spaces apart; the last column unpadded (no trailing blanks)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1] for row in rows
    )


def health_table(resp: pb.HealthResponse) -> str:
    """``supctl health``: supd's version and uptime, then one row per child, why it is not ready last."""
    header = ("NAME", "STATE", "HEALTH", "PID", "RESTARTS", "UPTIME", "STATE-REV", "REASON")
    rows = [header] + [
        (
            c.spec.name,
            state_name(c.state),
            health_name(c.health),
            str(c.pid) if c.pid else "-",
            str(c.restart_count),
            duration(c.uptime_seconds),
            _state_rev_short(c),
            " ".join((c.health_reason or c.fatal_reason or "-").split()),
        )
        for c in resp.children
    ]
    first = f"supd {resp.version or '(unknown version)'}, up {duration(resp.supervisor_uptime_seconds)}"
    return first + "\n" + (table(rows) if resp.children else "no children")


def _state_rev_short(c: pb.ChildInfo) -> str:
    if not c.state_revision:
        return "-"
    return str(c.state_revision) + ("" if c.state_applied_revision == c.state_revision else " (not applied)")


def health_name(health: int) -> str:
    """``READY``, ``NOT_READY``, ``UNHEALTHY`` or ``DOWN``."""
    try:
        return pb.ChildHealth.Name(health).removeprefix("CHILD_HEALTH_")  # type: ignore[arg-type]
    except ValueError:
        return str(health)


def _probe_line(p: pb.ProbeStatus) -> str:
    if not p.runs:
        return f"  {p.probe + ':':<13}{p.kind}, not run yet"
    outcome = "ok" if p.success else "FAILED"
    streak = f"{p.consecutive_successes} ok in a row" if p.success else f"{p.consecutive_failures} failed in a row"
    return f"  {p.probe + ':':<13}{p.kind}, {outcome} ({streak}, {p.runs} runs): {p.message}"


def health_text(resp: pb.HealthResponse) -> str:
    """``supctl health``: supd's version and uptime, then one block per child."""
    lines = [f"supd {resp.version or '(unknown version)'}, up {duration(resp.supervisor_uptime_seconds)}"]
    if not resp.children:
        lines.append("no children")
    for c in resp.children:
        state = state_name(c.state)
        if c.state == pb.CHILD_STATE_BACKOFF:
            state += f" (next start in {c.next_start_in_seconds:.1f}s)"
        held = c.next_seq - c.oldest_seq
        lines += [
            "",
            c.spec.name,
            f"  state:       {state}",
            f"  health:      {health_name(c.health)}" + (f" ({c.health_reason})" if c.health_reason else ""),
            *(_probe_line(p) for p in c.probes),
            *([f"  state rev:   {_state_rev(c)}"] if c.state_revision else []),
            f"  pid:         {c.pid or '-'}",
            f"  generation:  {c.generation}",
            f"  restarts:    {c.restart_count}",
            f"  uptime:      {duration(c.uptime_seconds)}",
            f"  last exit:   {_last_exit(c)}",
            f"  fatal:       {c.fatal_reason or '-'}",
            *([f"  start error: {c.last_start_error}"] if c.last_start_error else []),
            f"  ring:        seq {c.oldest_seq}..{c.next_seq} ({held} records), "
            f"{c.ring_bytes_used} of {c.spec.ring_bytes} bytes, {c.ring_evicted_records} evicted",
            f"  drained:     {c.stdout_lines} stdout lines, {c.stderr_lines} stderr lines, {c.bytes_drained} bytes",
            f"  export:      {_export(c)}",
        ]
    return "\n".join(lines)


def _state_rev(c: pb.ChildInfo) -> str:
    if c.state_applied_revision == c.state_revision:
        return f"{c.state_revision}, applied"
    return f"{c.state_revision}, not applied" + (f": {c.state_error}" if c.state_error else "")


def _export(c: pb.ChildInfo) -> str:
    if not c.export_offered_lines:
        return "-"
    return (
        f"{c.export_exported_lines} of {c.export_offered_lines} lines exported, "
        f"{c.export_dropped_lines} dropped, {c.export_queued_lines} queued"
    )


def describe_event(name: str, event: pb.Event) -> str:
    """One readable stderr line for a lifecycle event, e.g. ``[web] exited with code 3 (generation 2)``."""
    kind = event.kind
    if kind == pb.Event.KIND_STARTED:
        text = f"started with pid {event.pid}"
    elif kind == pb.Event.KIND_EXITED:
        text = describe_exit(event.exit) if event.HasField("exit") else event.message or "exited"
    elif kind == pb.Event.KIND_RESTARTING:
        text = f"restarting in {event.restart_in_seconds:g}s"
    elif kind == pb.Event.KIND_FATAL:
        text = f"FATAL: {event.message or 'restarted too often'}"
    elif kind == pb.Event.KIND_STOPPED:
        text = "stopped"
    elif kind == pb.Event.KIND_START_FAILED:
        text = f"failed to start: {event.message or 'unknown reason'}"
    elif kind == pb.Event.KIND_REMOVED:
        text = "removed"
    elif kind == pb.Event.KIND_SHUTDOWN:
        text = "supd is shutting down"
    elif kind == pb.Event.KIND_STATE_APPLIED:
        text = f"state revision {event.revision} applied" + (f": {event.message}" if event.message else "")
    elif kind == pb.Event.KIND_STATE_FAILED:
        text = f"state revision {event.revision} not applied: {event.message or 'unknown reason'}"
    elif kind == pb.Event.KIND_READY:
        text = event.message or "ready"
    elif kind == pb.Event.KIND_NOT_READY:
        text = f"not ready: {event.message or 'unknown reason'}"
    elif kind == pb.Event.KIND_UNHEALTHY:
        text = f"UNHEALTHY: {event.message or 'a probe failed'}"
    elif kind == pb.Event.KIND_PORT_HOLDER_REAPED:
        text = f"stale port holder stopped: {event.message}"
    else:
        text = event.message or f"event {kind}"
    if event.generation and kind not in (pb.Event.KIND_REMOVED, pb.Event.KIND_SHUTDOWN):
        text += f" (generation {event.generation})"
    return f"supctl: [{name}] {text}"


def state_text(name: str, resp: pb.GetStateResponse, child: pb.ChildInfo | None) -> str:
    """``supctl state``: the revision shown, whether the running process holds it, and the history kept."""
    lines = []
    if not resp.HasField("revision"):
        lines.append(f"{name}: no accepted state")
    else:
        r = resp.revision
        status = "accepted" if r.accepted else f"not accepted: {r.error or 'pending'}"
        lines.append(f"{name}: state revision {r.revision}, {r.size_bytes} bytes, {r.content_type}, {status}")
    if child is not None and child.state_revision:
        if child.state_applied_revision == child.state_revision:
            applied = f"applied to the running process (generation {child.generation})"
        elif child.state_error:
            applied = f"NOT applied to the running process: {child.state_error}"
        else:
            applied = "not applied to a running process yet"
        lines.append(f"  accepted revision {child.state_revision}: {applied}")
    for h in resp.history:
        when = h.time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S") + "Z"
        outcome = "accepted" if h.accepted else f"failed: {h.error}"
        lines.append(f"  revision {h.revision}  {when}  {h.size_bytes} bytes  {outcome}")
    return "\n".join(lines)


def describe_gap(name: str, gap: pb.Gap) -> str:
    """One stderr line saying which records this reader lost."""
    reason = gap.reason or "unknown"
    return f"supctl: [{name}] GAP: {gap.count} records lost from seq {gap.first_seq}: {reason}"


def _kind_name(kind: int) -> str:
    try:
        return pb.Event.Kind.Name(kind).removeprefix("KIND_").lower()  # type: ignore[arg-type]
    except ValueError:
        return str(kind)


def event_json(event: pb.Event) -> str:
    """``{"seq": N, "event": "exited", ...the event's other fields...}``."""
    from google.protobuf import json_format

    fields: dict[str, Any] = json_format.MessageToDict(event, preserving_proto_field_name=True)
    fields.pop("seq", None)
    fields.pop("kind", None)
    return json.dumps({"seq": event.seq, "event": _kind_name(event.kind), **fields})


def gap_json(gap: pb.Gap) -> str:
    """``{"gap": {"first_seq": N, "count": N, "reason": "..."}}``, numbers as numbers."""
    return json.dumps({"gap": {"first_seq": gap.first_seq, "count": gap.count, "reason": gap.reason}})


def batch_json_lines(batch: pb.LineBatch) -> Iterator[str]:
    """One JSON record per line of a batch: text without its newline, ``partial`` when it had none.

    Bytes that are not UTF-8 are shown with U+FFFD in ``text`` and kept exactly
    in ``data_b64`` (the line without its newline, like ``text``).
    """
    stream = _STREAM_NAMES.get(batch.stream, str(batch.stream))
    generation = batch.generation
    time = batch.time.ToJsonString() if batch.HasField("time") else None
    data = batch.data
    seq = batch.first_seq
    off = 0
    for length in batch.lengths:
        line = data[off : off + length]
        off += length
        partial = not line.endswith(b"\n")
        body = line if partial else line[:-1]
        record: dict[str, Any] = {"seq": seq, "stream": stream, "generation": generation, "time": time}
        try:
            record["text"] = body.decode("utf-8")
        except UnicodeDecodeError:
            record["text"] = body.decode("utf-8", errors="replace")
            record["data_b64"] = base64.b64encode(body).decode("ascii")
        if partial:
            record["partial"] = True
        seq += 1
        yield json.dumps(record, ensure_ascii=False)
