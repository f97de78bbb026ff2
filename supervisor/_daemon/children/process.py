"""Spawning, signalling and reaping one child process, exactly that process.

A child runs in a new session, so it leads its own process group. Its exit is
seen through a pidfd on the event loop (no thread per child, no SIGCHLD), and
signals meant for it go through that pidfd, so a reused PID is never hit. The
group is signalled only while the leader is unreaped: its zombie pins the
group id, so the group cannot be a stranger's.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import subprocess
import time

from supervisor.spec import ChildSpec

__all__ = ["ExitInfo", "Process", "SpawnError", "describe_exit", "group_members"]


class SpawnError(Exception):
    """The program could not be started (not found, not executable, bad cwd...)."""


@dataclasses.dataclass(frozen=True)
class ExitInfo:
    """How a process ended, as waitid reported it."""

    pid: int
    exited: bool
    code: int
    signal: int
    core_dumped: bool
    time_ns: int

    @property
    def failed(self) -> bool:
        """Non-zero exit or death by signal: what the on-failure policy restarts."""
        return not self.exited or self.code != 0


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def describe_exit(info: ExitInfo, *, killed_after_grace: float | None = None) -> str:
    """A person's summary: "exited with code 3", "killed by SIGKILL after 10s grace"."""
    if info.exited:
        return f"exited with code {info.code}"
    text = f"killed by {signal_name(info.signal)}"
    if killed_after_grace is not None:
        text += f" after {killed_after_grace:g}s grace"
    if info.core_dumped:
        text += " (core dumped)"
    return text


def group_members(pgid: int, exclude: int) -> list[int]:
    """PIDs in process group ``pgid`` other than ``exclude``, read from /proc.

    Field 5 of /proc/PID/stat is the group; the command name before it may hold
    spaces or parentheses, so split after the last ')'.
    """
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == exclude:
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # the process ended while we looked: not a member any more
        rest = stat[stat.rfind(b")") + 2 :].split()
        if len(rest) > 2 and int(rest[2]) == pgid and rest[0] != b"Z":
            members.append(int(entry))
    return members


class Process:
    """One started process: its pid, pidfd and, once reaped, its exit."""

    def __init__(self, popen: subprocess.Popen[bytes], pidfd: int) -> None:
        self.pid = popen.pid
        self.started_at = time.monotonic()
        self.exit: ExitInfo | None = None
        self._popen = popen
        self._pidfd = pidfd
        self._exited = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(pidfd, self._on_exit_ready)

    def __repr__(self) -> str:
        return f"<Process pid={self.pid} {'reaped' if self.exit else 'live'}>"

    @classmethod
    def spawn(cls, spec: ChildSpec, stdout_fd: int, stderr_fd: int) -> Process:
        """Start the child in a new session with the given pipe ends; raise SpawnError."""
        try:
            popen = subprocess.Popen(
                list(spec.argv),
                stdin=subprocess.DEVNULL,
                stdout=stdout_fd,
                stderr=stderr_fd,
                env=spec.child_env(),
                cwd=spec.cwd or None,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise SpawnError(f"cannot start {spec.argv[0]!r}: {exc.strerror or exc}") from exc
        # The pidfd is taken before any await: nothing but us reaps this child,
        # so the PID cannot have been reused yet.
        return cls(popen, os.pidfd_open(popen.pid))

    @property
    def alive(self) -> bool:
        """Not yet reaped (it may already be a zombie)."""
        return self.exit is None

    @property
    def exit_ready(self) -> bool:
        """The process has ended (the pidfd is readable), reaped or not."""
        return self._exited.is_set()

    def _on_exit_ready(self) -> None:
        self._loop.remove_reader(self._pidfd)
        self._exited.set()

    async def wait_exit_ready(self) -> None:
        """Wait until the process has ended, without reaping it."""
        await self._exited.wait()

    def signal(self, sig: int) -> bool:
        """Signal exactly this process through its pidfd; False once it is reaped."""
        if self.exit is not None:
            return False
        try:
            signal.pidfd_send_signal(self._pidfd, sig)
        except ProcessLookupError:
            return False
        return True

    def signal_group(self, sig: int) -> bool:
        """Signal the whole group, only while the unreaped leader pins the group id."""
        if self.exit is not None:
            return False
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def stragglers(self) -> list[int]:
        """Other processes still in the child's group."""
        return group_members(self.pid, exclude=self.pid) if self.exit is None else []

    def reap(self) -> ExitInfo:
        """Collect the exit status; call only once ``exit_ready``."""
        if self.exit is not None:
            return self.exit
        result = os.waitid(os.P_PIDFD, self._pidfd, os.WEXITED)
        if result is None:
            raise RuntimeError(f"waitid on pid {self.pid} returned nothing although its pidfd was readable")
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        exited = result.si_code == os.CLD_EXITED
        self.exit = ExitInfo(
            pid=self.pid,
            exited=exited,
            code=result.si_status if exited else 0,
            signal=0 if exited else result.si_status,
            core_dumped=result.si_code == os.CLD_DUMPED,
            time_ns=time.time_ns(),
        )
        # Tell subprocess the child is gone so it never waits for it again.
        self._popen.returncode = result.si_status if exited else -result.si_status
        return self.exit
