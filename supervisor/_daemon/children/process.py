"""Spawning, signalling and reaping one child process, exactly that process.

A child runs in a new session, so it leads its own session and process group.
Its exit is seen through a pidfd (no thread per child, no SIGCHLD), and signals
meant for it go through that pidfd, so a reused PID is never hit. The group is
signalled only after the pidfd showed the leader unreaped: its zombie pins the
group id, so the group cannot be a stranger's. An exit collected by another
reaper (a PID 1 shim, a stray ``waitpid``) is "gone", never a reason to signal
a group whose id may already be someone else's.
"""

from __future__ import annotations

import errno
import os
import select
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping

import anyio
import structlog

from supervisor._daemon.children.exits import unknown_exit
from supervisor._daemon.output.records import ExitRecord
from supervisor.spec import ChildSpec

__all__ = ["PidfdUnavailable", "Process", "SpawnError", "check_pidfd_support", "explain_spawn_error"]

log = structlog.get_logger("supd.process")


class SpawnError(Exception):
    """The program could not be started; the message names what is missing (program, interpreter, directory)."""


class PidfdUnavailable(Exception):
    """The kernel or a seccomp profile does not allow pidfd_open (Linux 5.3+) and pidfd_send_signal (5.1+)."""


def check_pidfd_support() -> None:
    """Raise PidfdUnavailable, naming the kernel feature, when pidfds cannot be used here."""
    try:
        fd = os.pidfd_open(os.getpid())
    except OSError as exc:
        raise PidfdUnavailable(
            f"pidfd_open failed ({errno.errorcode.get(exc.errno or 0, exc.errno)}: {exc.strerror}): supd needs "
            "pidfds (Linux 5.3 or later, and a seccomp profile that allows pidfd_open and pidfd_send_signal)"
        ) from exc
    except AttributeError as exc:
        raise PidfdUnavailable("this Python has no os.pidfd_open: supd needs Linux 5.3+ and Python 3.9+") from exc
    os.close(fd)


def _interpreter_of(path: str) -> str | None:
    """The program named on a ``#!`` line of ``path``, if it has one."""
    try:
        with open(path, "rb") as f:
            head = f.read(256)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    words = head[2:].split(b"\n", 1)[0].split()
    return os.fsdecode(words[0]) if words else None


def explain_spawn_error(spec: ChildSpec, exc: OSError) -> str:
    """Name what is really missing: the working directory, the program, or its ``#!`` interpreter."""
    program = spec.argv[0]
    if spec.cwd and not os.path.isdir(spec.cwd):
        return f"working directory {spec.cwd!r} does not exist (or is not a directory)"
    if isinstance(exc, FileNotFoundError):
        path = spec.child_env().get("PATH", os.defpath)
        resolved = program if "/" in program else shutil.which(program, path=path)
        if resolved is not None:
            full = os.path.join(spec.cwd or os.getcwd(), resolved)
            if os.path.exists(full):
                interpreter = _interpreter_of(full)
                if interpreter is not None and not os.path.exists(interpreter):
                    return f"interpreter {interpreter!r} named on the #! line of {program!r} does not exist"
                return f"cannot start {program!r}: {exc.strerror}"
        return f"program {program!r} not found" + ("" if "/" in program else " in PATH")
    return f"cannot start {program!r}: {exc.strerror or exc}"


class Process:
    """One started process: its pid, pidfd and, once reaped, its exit."""

    def __init__(self, popen: subprocess.Popen[bytes], pidfd: int) -> None:
        self.pid = popen.pid
        self.started_at = time.monotonic()
        self.exit: ExitRecord | None = None
        self._popen = popen
        self._pidfd = pidfd
        self._exited = anyio.Event()

    def __repr__(self) -> str:
        return f"<Process pid={self.pid} {'reaped' if self.exit else 'live'}>"

    @classmethod
    def spawn(
        cls,
        spec: ChildSpec,
        stdout_fd: int,
        stderr_fd: int,
        extra_env: Mapping[str, str] | None = None,
        after_exec: Callable[[int], object] | None = None,
    ) -> Process:
        """Start the child in a new session with the given pipe ends; raise SpawnError.

        ``extra_env`` is added to the spec's environment (supd's identity marks); ``after_exec(pid)`` runs
        the moment the child has exec'd (it is moved into its cgroup there).

        The child inherits only fds 0-2. Once forked, any failure (no pidfd:
        EMFILE, a seccomp profile) kills and reaps the process before raising,
        so nothing runs untracked.
        """
        try:
            popen = subprocess.Popen(
                list(spec.argv),
                stdin=subprocess.DEVNULL,
                stdout=stdout_fd,
                stderr=stderr_fd,
                env={**spec.child_env(), **(extra_env or {})},
                cwd=spec.cwd or None,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise SpawnError(explain_spawn_error(spec, exc)) from exc
        if after_exec is not None:
            after_exec(popen.pid)
        # The pidfd is taken before any await: nothing but us reaps this child,
        # so the PID cannot have been reused yet.
        try:
            pidfd = os.pidfd_open(popen.pid)
        except OSError as exc:
            popen.kill()  # still our unreaped child: the pid is pinned, this hits exactly it
            popen.wait()
            raise SpawnError(
                f"started pid {popen.pid} but could not watch it (pidfd_open: {exc.strerror}); killed it"
            ) from exc
        return cls(popen, pidfd)

    @property
    def alive(self) -> bool:
        """Not yet reaped (it may already be a zombie)."""
        return self.exit is None

    def exit_ready(self) -> bool:
        """The process has ended (the pidfd is readable), reaped or not."""
        if self.exit is not None:
            return True
        poller = select.poll()  # not select(): a pidfd may be numbered past FD_SETSIZE (1024)
        poller.register(self._pidfd, select.POLLIN)
        return bool(poller.poll(0))

    async def watch(self) -> None:
        """Wait on the pidfd until the process ends (without reaping it). Run once, in the generation's tasks."""
        if self.exit is None:
            await anyio.wait_readable(self._pidfd)
        self._exited.set()

    async def wait_exit_ready(self) -> None:
        """Wait until ``watch`` saw the process end; any number of tasks may wait."""
        await self._exited.wait()

    def _leader_pins_group(self) -> bool:
        """True while our unreaped leader (running or zombie) holds the group and session ids."""
        if self.exit is not None:
            return False
        if not self.exit_ready():
            return True
        try:
            os.waitid(os.P_PIDFD, self._pidfd, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return False  # reaped by someone else: the ids are free for reuse
        return True

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
        """Signal the leader's group, only while the unreaped leader pins the group id."""
        if not self._leader_pins_group():
            return False
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def reap(self) -> ExitRecord:
        """Collect the exit status; call only once ``exit_ready``. An exit collected elsewhere is "gone"."""
        if self.exit is not None:
            return self.exit
        try:
            result = os.waitid(os.P_PIDFD, self._pidfd, os.WEXITED)
        except ChildProcessError:
            result = None
        os.close(self._pidfd)
        if result is None:
            log.warning("child.exit.collected_elsewhere", pid=self.pid)
            self.exit = unknown_exit(self.pid)
            self._popen.returncode = -1
            return self.exit
        exited = result.si_code == os.CLD_EXITED
        self.exit = ExitRecord(
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
