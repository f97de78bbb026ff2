"""How a child's process ended, told one way: the exit record and the sentence describing it.

``Process.reap`` gives what waitid said; ``finish_exit`` adds what only the
driver knows (the generation, whether the exit was asked for, what the stop had
to SIGKILL) and the description shown in events, replies and supctl.
"""

from __future__ import annotations

import dataclasses
import signal
import time

from supervisor._daemon.output.records import ExitRecord
from supervisor.signals import signal_name

__all__ = ["describe_exit", "finish_exit", "unknown_exit"]


def unknown_exit(pid: int) -> ExitRecord:
    """The exit of a process whose status another reaper collected (a PID 1 shim, a stray waitpid)."""
    return ExitRecord(pid, False, 0, 0, False, time.time_ns(), collected_elsewhere=True)


def describe_exit(record: ExitRecord, *, killed_after_grace: float | None = None, leftovers_killed: int = 0) -> str:
    """A person's summary: "exited with code 3", "killed by SIGKILL after 10s grace".

    ``killed_after_grace`` is the grace after which supd had to SIGKILL;
    ``leftovers_killed`` counts other processes of the session that needed it,
    said apart, so the leader's own end is not misreported.
    """
    if record.collected_elsewhere:
        text = "ended; its exit status was collected by another process"
    elif record.exited:
        text = f"exited with code {record.code}"
    else:
        text = f"killed by {signal_name(record.signal)}"
        if killed_after_grace is not None and record.signal == signal.SIGKILL:
            text += f" after {killed_after_grace:g}s grace"
        if record.core_dumped:
            text += " (core dumped)"
    if leftovers_killed:
        plural = "es" if leftovers_killed > 1 else ""
        text += f"; {leftovers_killed} leftover process{plural} of its session killed by SIGKILL"
        if killed_after_grace is not None:
            text += f" after {killed_after_grace:g}s grace"
    return text


def finish_exit(
    reaped: ExitRecord, generation: int, *, requested: bool, grace: float, leader_killed: bool, leftovers_killed: int
) -> ExitRecord:
    """The exit as reported everywhere: what waitid said plus what the stop had to do."""
    killed = leader_killed or leftovers_killed > 0
    return dataclasses.replace(
        reaped,
        generation=generation,
        killed_after_grace=killed,
        requested=requested,
        description=describe_exit(
            reaped, killed_after_grace=grace if killed else None, leftovers_killed=leftovers_killed
        ),
    )
