"""``wait_ready``: what ends the wait besides readiness, in words that say what to do next."""

from __future__ import annotations

from supervisor import errors
from supervisor.v1 import supervisor_pb2 as pb

__all__ = ["never_ready", "not_ready_in_time"]

# States a child leaves only on request: waiting for it to become ready would wait out the whole timeout.
_RESTING = {
    pb.CHILD_STATE_STOPPED: "stopped: start it with restart",
    pb.CHILD_STATE_EXITED: "exited and its restart policy does not restart it: start it with restart",
    pb.CHILD_STATE_FATAL: "FATAL: start it again with restart once the cause is fixed",
}


def _state(child: pb.ChildInfo) -> str:
    return pb.ChildState.Name(child.state).removeprefix("CHILD_STATE_")


def never_ready(child: pb.ChildInfo) -> errors.FailedPrecondition | None:
    """FailedPrecondition when ``child`` cannot become ready without a request (stopped, exited, FATAL)."""
    what = _RESTING.get(child.state)
    if what is None:
        return None
    reason = child.fatal_reason or child.last_start_error or child.health_reason
    return errors.FailedPrecondition(
        f"{child.spec.name} will not become ready: it is {what}" + (f" ({reason})" if reason else "")
    )


def not_ready_in_time(name: str, timeout: float, child: pb.ChildInfo | None) -> errors.DeadlineExceeded:
    """DeadlineExceeded naming the child's state and why it is not ready."""
    if child is None:
        return errors.DeadlineExceeded(f"{name} did not become ready within {timeout:g}s")
    health = pb.ChildHealth.Name(child.health).removeprefix("CHILD_HEALTH_")
    reason = f": {child.health_reason}" if child.health_reason else ""
    return errors.DeadlineExceeded(
        f"{name} did not become ready within {timeout:g}s ({_state(child)}, {health}{reason})"
    )
