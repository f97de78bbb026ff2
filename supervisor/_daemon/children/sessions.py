"""Which processes are in a child's session, found without blocking the event loop.

supd starts every child in a new session, so the session id is the child's
pid, and every process the child starts stays in that session unless it calls
``setsid`` itself. Stop and the clean-up after an exit cover every process of
that session, whatever process group it moved to (``set -m`` job control makes
one group per job).

No kernel event says that a session emptied, so /proc is read. One scan costs
about 40 ms with 3,000 processes on the host, so scans run in a worker thread,
and callers asking at the same time share one scan (``SessionScanner``): 400
children stopping at once cost a few scans, not 400 per poll.

Signals to members go through a pidfd opened on the pid and only after the
member's identity (session and start time) is read again through that pidfd's
pid: a pid reused between the scan and the signal is never hit.

A process that left the session with ``setsid`` (a daemonising helper, a
double fork) still carries the marks supd gives every child in its
environment: ``SUPD_INSTANCE`` (this supd's store) and ``SUPD_CHILD`` (the
child's name), inherited by every descendant. A scan asked for a child's name
also returns the processes of supd's user carrying both marks, so Stop and the
clean-up after an exit reach them too. The environment of a process never
changes after exec, so each process's marks are read once and kept by (pid,
start time).
"""

from __future__ import annotations

import dataclasses
import os
import signal
from collections.abc import Mapping

import anyio
import structlog

__all__ = [
    "Member",
    "SessionScanner",
    "cmdline_of",
    "kill_process_group",
    "marked_child",
    "read_stat",
    "scan_sessions",
    "signal_member",
]

log = structlog.get_logger("supd.sessions")


@dataclasses.dataclass(frozen=True, slots=True)
class Member:
    """One process as /proc/PID/stat shows it: pid, state letter, group, session, start time (ticks)."""

    pid: int
    state: str
    pgid: int
    sid: int
    start_ticks: int

    @property
    def zombie(self) -> bool:
        return self.state in ("Z", "X")


def _parse_stat(pid: int, stat: bytes) -> Member | None:
    """Fields after the command name, which may hold spaces or ')': split after the last ')'."""
    rest = stat[stat.rfind(b")") + 2 :].split()
    if len(rest) < 20:
        return None
    # rest[0] is field 3 (state); field N is rest[N - 3].
    return Member(pid, rest[0].decode(), int(rest[2]), int(rest[3]), int(rest[19]))


def read_stat(pid: int) -> Member | None:
    """The process ``pid`` now, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return _parse_stat(pid, f.read())
    except (FileNotFoundError, ProcessLookupError):
        return None


def cmdline_of(pid: int, limit: int = 300) -> str:
    """``pid``'s argv joined by spaces (at most ``limit`` characters); "" when it is gone or has none."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return ""
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")[:limit]


def scan_sessions(
    sids: frozenset[int], children: Mapping[int, str] | None = None, instance: str = "",
    marks: dict[tuple[int, int], str] | None = None,
) -> dict[int, list[Member]]:
    """Every live (non-zombie) process whose session is in ``sids``, by session. Blocking: run in a thread.

    With ``instance`` and ``children`` (session id -> child name), a process of supd's user outside those
    sessions whose environment carries ``SUPD_INSTANCE=instance`` and ``SUPD_CHILD=<name>`` is listed under
    that child's session too. ``marks`` caches each process's marks by (pid, start ticks) between scans.
    """
    found: dict[int, list[Member]] = {sid: [] for sid in sids}
    by_name = {name: sid for sid, name in (children or {}).items() if name}
    own, uid = os.getpid(), os.getuid()
    seen: set[tuple[int, int]] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        if pid == own:
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                member = _parse_stat(pid, f.read())
        except OSError:
            continue  # ended while we looked: not a member any more
        if member is None or member.zombie:
            continue
        if member.sid in found:
            found[member.sid].append(member)
        elif instance and by_name and marks is not None and pid != 1:
            key = (pid, member.start_ticks)
            seen.add(key)
            mark = marks.get(key)
            if mark is None:
                mark = marks[key] = marked_child(pid, uid, instance)
            if mark in by_name:
                found[by_name[mark]].append(member)
    if marks is not None and instance and by_name:
        for key in set(marks) - seen:
            del marks[key]
    return found


def marked_child(pid: int, uid: int, instance: str) -> str:
    """The SUPD_CHILD of ``pid`` when it is of user ``uid`` and carries SUPD_INSTANCE=instance; "" otherwise."""
    try:
        if os.stat(f"/proc/{pid}").st_uid != uid:
            return ""
        with open(f"/proc/{pid}/environ", "rb") as f:
            raw = f.read()
    except OSError:
        return ""
    child, ours = "", False
    for entry in raw.split(b"\0"):
        if entry == b"SUPD_INSTANCE=" + instance.encode():
            ours = True
        elif entry.startswith(b"SUPD_CHILD="):
            child = entry[len(b"SUPD_CHILD="):].decode("utf-8", "replace")
    return child if ours else ""


def kill_process_group(pgid: int) -> None:
    """SIGKILL process group ``pgid`` (led by a helper supd started in a new session and has not reaped yet,
    so the id cannot have been reused: an exec probe, a delivery command)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        log.debug("process_group.gone", pgid=pgid)


def signal_member(member: Member, *sigs: int) -> bool:
    """Send ``sigs``, in order, to ``member`` if it is still that very process; False when it is gone or changed.

    The pidfd pins the process: after opening it, the identity read from /proc
    is that of the process the signal goes to.
    """
    try:
        fd = os.pidfd_open(member.pid)
    except ProcessLookupError:
        return False
    try:
        now = read_stat(member.pid)
        if now is None or now.sid != member.sid or now.start_ticks != member.start_ticks:
            return False
        for sig in sigs:
            signal.pidfd_send_signal(fd, sig)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(fd)


class SessionScanner:
    """Shares /proc scans between callers: each caller gets a scan that started after it asked."""

    def __init__(self, instance: str = "") -> None:
        """``instance``: supd's SUPD_INSTANCE, so that a child's marked escapees are found too ("" : not)."""
        self.instance = instance
        self._lock = anyio.Lock()
        self._wanted: dict[int, str] = {}
        self._pending: _Pending | None = None
        self._marks: dict[tuple[int, int], str] = {}
        self.scans = 0

    def __repr__(self) -> str:
        return f"<SessionScanner scans={self.scans}>"

    async def members(self, sid: int, child: str = "") -> list[Member]:
        """Live processes in session ``sid`` other than supd itself, and those marked as ``child``'s (if given)."""
        self._wanted[sid] = child or self._wanted.get(sid, "")
        pending = self._pending
        if pending is None:
            pending = self._pending = _Pending()
            # Shielded: the callers sharing this scan must get it even if the one who started it goes away.
            with anyio.CancelScope(shield=True):
                async with self._lock:  # one scan at a time; ours starts after the request
                    self._pending = None
                    wanted, self._wanted = dict(self._wanted), {}
                    try:
                        pending.result = await anyio.to_thread.run_sync(
                            scan_sessions, frozenset(wanted), wanted, self.instance, self._marks
                        )
                    finally:
                        self.scans += 1
                        pending.done.set()
        else:
            await pending.done.wait()
        if pending.result is None:
            raise RuntimeError("the /proc scan failed; see the error logged with it")
        result = pending.result.get(sid)
        if result is None:  # asked after the scan's set was taken: scan again
            return await self.members(sid, child)
        return result


class _Pending:
    def __init__(self) -> None:
        self.done = anyio.Event()
        self.result: dict[int, list[Member]] | None = None
