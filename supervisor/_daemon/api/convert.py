"""Domain snapshots to protobuf messages, in one place.

Children, rings and exits know nothing of protobuf; Stream, List, Health and
the unary replies build their messages here from frozen snapshots.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from google.protobuf.timestamp_pb2 import Timestamp

from supervisor._daemon.api.abridge import MAX_CHILD_BYTES, abridge_status, shown_spec
from supervisor._daemon.children.driver import ChildStatistics
from supervisor._daemon.children.lifecycle import State
from supervisor._daemon.health.assess import Health
from supervisor._daemon.output.records import ChildEvent, EventKind, ExitRecord
from supervisor.signals import signal_name
from supervisor.v1 import supervisor_pb2 as pb

if TYPE_CHECKING:
    from supervisor._daemon.health.prober import ProbeState
    from supervisor._daemon.state.keeper import StateStatus
    from supervisor._daemon.state.store import StoredRevision
    from supervisor._daemon.telemetry.otlp.export import ChildExportStats

__all__ = ["child_to_proto", "event_to_proto", "exit_to_proto", "revision_to_proto", "timestamp"]

_KIND = {
    EventKind.STARTED: pb.Event.KIND_STARTED,
    EventKind.EXITED: pb.Event.KIND_EXITED,
    EventKind.RESTARTING: pb.Event.KIND_RESTARTING,
    EventKind.FATAL: pb.Event.KIND_FATAL,
    EventKind.STOPPED: pb.Event.KIND_STOPPED,
    EventKind.START_FAILED: pb.Event.KIND_START_FAILED,
    EventKind.REMOVED: pb.Event.KIND_REMOVED,
    EventKind.SHUTDOWN: pb.Event.KIND_SHUTDOWN,
    EventKind.STATE_APPLIED: pb.Event.KIND_STATE_APPLIED,
    EventKind.STATE_FAILED: pb.Event.KIND_STATE_FAILED,
    EventKind.READY: pb.Event.KIND_READY,
    EventKind.NOT_READY: pb.Event.KIND_NOT_READY,
    EventKind.UNHEALTHY: pb.Event.KIND_UNHEALTHY,
    EventKind.PORT_HOLDER_REAPED: pb.Event.KIND_PORT_HOLDER_REAPED,
    EventKind.APPLIED: pb.Event.KIND_APPLIED,
}


def timestamp(time_ns: int) -> Timestamp:
    """A protobuf Timestamp from wall-clock nanoseconds."""
    ts = Timestamp()
    ts.FromNanoseconds(time_ns)
    return ts


def exit_to_proto(record: ExitRecord) -> pb.ExitStatus:
    """The ExitStatus message of one exit."""
    return pb.ExitStatus(
        exited=record.exited,
        code=record.code,
        signal=record.signal,
        signal_name=signal_name(record.signal) if record.signal else "",
        core_dumped=record.core_dumped,
        killed_after_grace=record.killed_after_grace,
        requested=record.requested,
        time=timestamp(record.time_ns),
        pid=record.pid,
        generation=record.generation,
        description=record.description,
    )


def event_to_proto(event: ChildEvent, seq: int) -> pb.Event:
    """The Event message of a ring record numbered ``seq``."""
    msg = pb.Event(
        seq=seq,
        kind=_KIND[event.kind],
        time=timestamp(event.time_ns),
        generation=event.generation,
        pid=event.pid,
        restart_in_seconds=event.restart_in_seconds,
        message=event.message,
        revision=event.revision,
        probe=event.probe,
    )
    if event.exit is not None:
        msg.exit.CopyFrom(exit_to_proto(event.exit))
    return msg


_STATE = {
    State.STARTING: pb.CHILD_STATE_STARTING,
    State.RUNNING: pb.CHILD_STATE_RUNNING,
    State.BACKOFF: pb.CHILD_STATE_BACKOFF,
    State.STOPPING: pb.CHILD_STATE_STOPPING,
    State.STOPPED: pb.CHILD_STATE_STOPPED,
    State.EXITED: pb.CHILD_STATE_EXITED,
    State.FATAL: pb.CHILD_STATE_FATAL,
    # A removed child is gone from List; a reply about one caught at the end shows it stopped.
    State.REMOVED: pb.CHILD_STATE_STOPPED,
}


_HEALTH = {
    Health.DOWN: pb.CHILD_HEALTH_DOWN,
    Health.NOT_READY: pb.CHILD_HEALTH_NOT_READY,
    Health.READY: pb.CHILD_HEALTH_READY,
    Health.UNHEALTHY: pb.CHILD_HEALTH_UNHEALTHY,
}


def probe_to_proto(state: ProbeState) -> pb.ProbeStatus:
    """The last result of one probe."""
    msg = pb.ProbeStatus(
        probe=state.name,
        kind=state.kind,
        consecutive_successes=state.successes,
        consecutive_failures=state.failures,
        runs=state.runs,
    )
    if state.last is not None:
        msg.success, msg.message = state.last.success, state.last.message
        msg.time.CopyFrom(timestamp(state.time_ns))
    return msg


def child_to_proto(
    stats: ChildStatistics,
    export: ChildExportStats | None = None,
    state: StateStatus | None = None,
    health: tuple[Health, str] = (Health.DOWN, ""),
    budget: int = MAX_CHILD_BYTES,
) -> pb.ChildInfo:
    """The ChildInfo of one child snapshot, with its export counts when export is on, its stored state and health.

    ``health`` comes from ``health.assess.assess``; ``ready`` is health READY. The spec is shown as every client
    may see it: secret values emptied, fitted to ``budget`` bytes (``abridge.shown_spec``).
    """
    out = stats.output
    spec, abridged = shown_spec(stats.spec, budget)
    msg = pb.ChildInfo(
        spec=spec,
        spec_abridged=abridged,
        state=_STATE[stats.state],
        pid=stats.pid,
        generation=stats.generation,
        restart_count=stats.restart_count,
        uptime_seconds=stats.uptime_seconds,
        next_start_in_seconds=stats.next_start_in_seconds,
        fatal_reason=stats.fatal_reason,
        next_seq=out.next_seq,
        oldest_seq=out.oldest_seq,
        ring_bytes_used=out.ring_bytes_used,
        stdout_lines=out.stdout_lines,
        stderr_lines=out.stderr_lines,
        bytes_drained=out.bytes_drained,
        ring_evicted_records=out.ring_evicted_records,
        ready=health[0] is Health.READY,
        health=_HEALTH[health[0]],
        health_reason=health[1],
        probes=[probe_to_proto(p) for p in stats.probes],
        last_start_error=stats.last_start_error,
    )
    if state is not None:
        msg.state_revision = state.accepted
        running = stats.pid != 0  # applied means applied to a process that runs now
        msg.state_applied_revision = state.applied if running and state.applied_generation == stats.generation else 0
        if msg.state_applied_revision:
            msg.state_applied_time.CopyFrom(timestamp(state.applied_ns))
        msg.state_error = state.error
    if stats.last_exit is not None:
        msg.last_exit.CopyFrom(exit_to_proto(stats.last_exit))
    if export is not None:
        msg.export_offered_lines = export.offered
        msg.export_exported_lines = export.exported
        msg.export_dropped_lines = export.dropped
        msg.export_queued_lines = export.queued
    return abridge_status(msg, budget)


def revision_to_proto(stored: StoredRevision, *, with_state: bool = True) -> pb.StateRevision:
    """One stored state revision; without its bytes for a history."""
    msg = pb.StateRevision(
        revision=stored.revision,
        state=stored.state if with_state else b"",
        size_bytes=stored.size_bytes,
        content_type=stored.content_type,
        time=timestamp(stored.created_ns),
        accepted=stored.accepted,
        error=stored.error,
    )
    if stored.accepted_ns:
        msg.accepted_time.CopyFrom(timestamp(stored.accepted_ns))
    return msg
