"""Domain snapshots to protobuf messages, in one place.

Children, rings and exits know nothing of protobuf; Stream, List, Health and
the unary replies build their messages here from frozen snapshots.
"""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from supervisor._daemon.output.records import ChildEvent, EventKind, ExitRecord
from supervisor.signals import signal_name
from supervisor.v1 import supervisor_pb2 as pb

__all__ = ["event_to_proto", "exit_to_proto", "timestamp"]

_KIND = {
    EventKind.STARTED: pb.Event.KIND_STARTED,
    EventKind.EXITED: pb.Event.KIND_EXITED,
    EventKind.RESTARTING: pb.Event.KIND_RESTARTING,
    EventKind.FATAL: pb.Event.KIND_FATAL,
    EventKind.STOPPED: pb.Event.KIND_STOPPED,
    EventKind.START_FAILED: pb.Event.KIND_START_FAILED,
    EventKind.REMOVED: pb.Event.KIND_REMOVED,
    EventKind.SHUTDOWN: pb.Event.KIND_SHUTDOWN,
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
    )
    if event.exit is not None:
        msg.exit.CopyFrom(exit_to_proto(event.exit))
    return msg
