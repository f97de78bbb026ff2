"""One child's health in one word, from its snapshot: down, not ready, ready or unhealthy, and why.

Health, List, ``supctl health`` and ``grpc.health.v1`` all read it from here,
so they never disagree.
"""

from __future__ import annotations

import enum

from supervisor._daemon.children import lifecycle as lc
from supervisor._daemon.children.driver import ChildStatistics

__all__ = ["Health", "assess"]


class Health(enum.Enum):
    """The names of ``supervisor.v1.ChildHealth`` without the prefix."""

    DOWN = "down"  # no process runs
    NOT_READY = "not_ready"  # runs, but its startup or readiness probe has not passed, or its state is not applied
    READY = "ready"
    UNHEALTHY = "unhealthy"  # its liveness probe is failing, or a probe's failures are restarting it


def assess(stats: ChildStatistics, *, state_applied: bool = True, state_reason: str = "") -> tuple[Health, str]:
    """The child's health and, unless READY, why (a sentence a person can act on).

    ``state_applied``: whether the child's accepted stored state is applied to the
    running process (True without stored state); ``state_reason`` says why not.
    """
    if stats.state is lc.State.STOPPING and stats.unhealthy_reason:
        return Health.UNHEALTHY, stats.unhealthy_reason
    if stats.state is not lc.State.RUNNING:
        detail = stats.fatal_reason or (f"start failed: {stats.last_start_error}" if stats.last_start_error else "")
        return Health.DOWN, f"{stats.state.value}: {detail}" if detail else stats.state.value
    if stats.unhealthy_reason:
        return Health.UNHEALTHY, stats.unhealthy_reason
    if not stats.ready:
        if stats.not_ready_reason:
            return Health.NOT_READY, stats.not_ready_reason
        startup = next((p for p in stats.probes if p.name == "startup"), None)
        waiting = startup if startup is not None and not startup.passed else None
        waiting = waiting or next((p for p in stats.probes if p.name == "readiness"), None)
        if waiting is None:
            return Health.NOT_READY, "starting"
        last = f" (last: {waiting.last.message})" if waiting.last is not None else ""
        return Health.NOT_READY, f"the {waiting.name} probe has not passed yet{last}"
    if not state_applied:
        return Health.NOT_READY, state_reason or "its stored state is not applied yet"
    return Health.READY, ""
