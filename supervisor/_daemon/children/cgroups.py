"""A cgroup v2 per child process, where a writable cgroup2 hierarchy is mounted: nothing the child starts escapes.

supd makes ``<its own cgroup>/supd-<instance>/`` and, for each process it
spawns, ``<name>.<generation>`` in it; the process is moved in right after
exec (``cgroup.procs``), so every process it starts from then on is in it,
whatever it does to its session, its process group or its environment. A stop
signals every member, and at the end of the grace ``cgroup.kill`` ends what is
left at once; ``cgroup.events`` says when the cgroup is empty.

Where there is no writable cgroup2 hierarchy (v1 only, a read-only mount, an
unprivileged container), supd says so once and relies on the session and the
marks children inherit (sessions.py). Sources: Documentation/admin-guide/cgroup-v2.rst
(cgroup.procs, cgroup.kill since Linux 5.14, cgroup.events).

A process forked by the child in the instant between its exec and the move
stays outside; the session and the marks still cover it.
"""

from __future__ import annotations

import contextlib
import os
import signal

import structlog

__all__ = ["Cgroup", "CgroupRoot", "find_root"]

log = structlog.get_logger("supd.cgroups")


def _own_cgroup_dir() -> str | None:
    """The directory of supd's own cgroup in a mounted cgroup2 hierarchy; None when there is none."""
    mount = None
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                sep = fields.index("-")
                if fields[sep + 1] == "cgroup2":
                    mount = fields[4]
                    break
        with open("/proc/self/cgroup") as f:
            own = next((line.strip()[3:] for line in f if line.startswith("0::")), None)
    except (OSError, ValueError):
        return None
    if mount is None or own is None:
        return None
    return os.path.join(mount, own.lstrip("/"))


class CgroupRoot:
    """``<supd's cgroup>/supd-<instance>``: where the children's cgroups are made."""

    def __init__(self, path: str) -> None:
        self.path = path

    def remove(self) -> None:
        """Remove the root once every child's cgroup is gone (at supd's exit); a busy one stays, logged."""
        Cgroup(self.path).remove()

    def make(self, child: str, generation: int) -> Cgroup | None:
        """A fresh cgroup for one process of ``child``; None (logged) when it cannot be made."""
        path = os.path.join(self.path, f"{child}.{os.getpid()}.{generation}")
        try:
            with contextlib.suppress(FileExistsError):
                os.mkdir(path, 0o755)
        except OSError as exc:
            log.warning("cgroup.make.failed", path=path, error=exc.strerror or str(exc))
            return None
        return Cgroup(path)


def find_root(instance: str) -> CgroupRoot | None:
    """The root for children's cgroups, made now; None (logged once) when cgroup2 is not usable here."""
    base = _own_cgroup_dir()
    if base is None:
        log.info("cgroup.unavailable", reason="no cgroup2 hierarchy mounted (or supd is in none)")
        return None
    path = os.path.join(base, f"supd-{instance[:12]}")
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o755)
        if not os.access(os.path.join(path, "cgroup.procs"), os.W_OK):
            raise PermissionError(f"{path}/cgroup.procs is not writable")
    except OSError as exc:
        log.info("cgroup.unavailable", path=path, reason=str(exc))
        return None
    log.info("cgroup.root", path=path)
    return CgroupRoot(path)


class Cgroup:
    """One process's cgroup: move it in, list, signal and kill its members, remove it once empty."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"<Cgroup {self.path}>"

    def add(self, pid: int) -> bool:
        """Move ``pid`` in; False (logged) when the kernel refuses."""
        try:
            with open(os.path.join(self.path, "cgroup.procs"), "w") as f:
                f.write(str(pid))
        except OSError as exc:
            log.warning("cgroup.add.failed", path=self.path, pid=pid, error=exc.strerror or str(exc))
            return False
        return True

    def pids(self) -> list[int]:
        """The processes in it now ([] once it is gone)."""
        try:
            with open(os.path.join(self.path, "cgroup.procs")) as f:
                return [int(line) for line in f if line.strip()]
        except FileNotFoundError:
            return []

    def populated(self) -> bool:
        """Whether any process is in it (``cgroup.events``)."""
        try:
            with open(os.path.join(self.path, "cgroup.events")) as f:
                return any(line.split() == ["populated", "1"] for line in f)
        except FileNotFoundError:
            return False

    def kill(self) -> bool:
        """SIGKILL every process in it at once (``cgroup.kill``, Linux 5.14+); else each member. True when done."""
        try:
            with open(os.path.join(self.path, "cgroup.kill"), "w") as f:
                f.write("1")
            return True
        except FileNotFoundError:
            pass  # an older kernel: no cgroup.kill; the members one by one
        except OSError as exc:
            log.warning("cgroup.kill.failed", path=self.path, error=exc.strerror or str(exc))
        for pid in self.pids():
            self._kill_member(pid)
        return True

    def _kill_member(self, pid: int) -> None:
        """SIGKILL ``pid`` through a pidfd, only if that very process is still in this cgroup."""
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            return
        try:
            with open(f"/proc/{pid}/cgroup") as f:
                if not any(line.startswith("0::") and self.path.endswith(line.strip()[3:]) for line in f):
                    return
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        except (FileNotFoundError, ProcessLookupError):
            return
        finally:
            os.close(fd)

    def remove(self) -> None:
        """Remove the cgroup once it is empty (a populated one is left, and logged)."""
        try:
            os.rmdir(self.path)
        except FileNotFoundError:
            return
        except OSError as exc:
            log.warning("cgroup.remove.failed", path=self.path, error=exc.strerror or str(exc))
