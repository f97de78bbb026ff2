"""What supd's parts tell the metrics as it happens: a no-op that loads nothing unless metrics are on.

Events that are rare (an exit, a restart, a probe run, a Reload) are counted
where they happen, through ``active``: a ``Recorder`` whose methods do
nothing, replaced by metrics.py's ``SdkRecorder`` when metrics are exported.
The call sites read the module attribute at each call (``recorder.active.x()``),
so they see the replacement. Nothing on the output path calls here: lines,
bytes, drops and ring occupancy are read from the ``statistics()`` snapshots at
collection time instead (metrics.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from supervisor._daemon.health.probe import ProbeResult
    from supervisor._daemon.output.records import ExitRecord

__all__ = ["Recorder", "active", "install"]


class Recorder:
    """The events metrics count; this base records nothing (metrics off)."""

    def child_exited(self, child: str, record: ExitRecord) -> None:
        """A process of ``child`` ended, as ``record`` tells (its cause: code, signal, killed after the grace)."""

    def child_restarted(self, child: str, trigger: str) -> None:
        """``child`` is restarted: ``trigger`` "policy" (its restart policy, after an exit or a failed probe)
        or "request" (a Restart call)."""

    def probe_ran(self, child: str, probe: str, handler: str, result: ProbeResult) -> None:
        """One run of ``child``'s ``probe`` ("liveness", "readiness", "startup") by ``handler`` ("exec", "tcp",
        "http", "grpc") ended with ``result`` (its ``elapsed_seconds`` and ``success``)."""

    def state_delivered(self, child: str, operation: str, outcome: str, seconds: float) -> None:
        """A delivery of ``child``'s state ended: ``operation`` "reload" or "replay", ``outcome`` "applied" or why
        not ("rejected", "unavailable", "deadline_exceeded", ...), after ``seconds``."""


active: Recorder = Recorder()


def install(recorder: Recorder) -> None:
    """Make ``recorder`` the one every part reports to (metrics.py, when metrics are on)."""
    global active  # noqa: PLW0603 - one recorder per process, as the meter provider it feeds
    active = recorder
