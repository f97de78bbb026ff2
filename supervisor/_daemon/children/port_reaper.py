"""Before a child starts: find who holds its ports, and stop a stale holder only when it is provably ours.

A child declares the ports it listens on (``ChildSpec.ports``). In the step
before every spawn, supd asks the kernel who holds them (ports.py: socket
inode → pid, never a process name) and decides for each holder:

- PID 1, supd itself and supd's other live children are never touched;
- a process of supd's user carrying this store's ``SUPD_INSTANCE`` and this
  child's ``SUPD_CHILD`` in its environment is an earlier instance of this
  child (left by a crashed supd, or escaped from an earlier stop): it is
  reaped; so is any process of supd's user when the spec says
  ``port_holders = "same-user"``;
- any other holder fails the start with FAILED_PRECONDITION naming its pid,
  user and command line; backoff applies, and Health shows the reason.

Reaping: an optional POST to ``port_holder_stop_url`` (the holder's own way to
stop), then SIGTERM to the holder (and its session, when it leads one) through
a pidfd after its start time was checked again, the child's stop grace (at most
20 s, inside the start's own deadline), SIGKILL; then the ports must be seen
free. Every reaping is a PORT_HOLDER_REAPED event with the pid, the command
line and how it ended.
"""

from __future__ import annotations

import os
import pwd
import signal
import time
from collections.abc import Callable

import anyio
import structlog

from supervisor._daemon.children.driver import ChildDriver
from supervisor._daemon.children.ports import Holder, PortSpec, find_holders_report, port_is_free
from supervisor._daemon.children.process_book import CHILD_ENV, INSTANCE_ENV
from supervisor._daemon.children.sessions import Member, read_stat, scan_sessions, signal_member
from supervisor._daemon.output.records import ChildEvent, EventKind
from supervisor.errors import FailedPrecondition
from supervisor.spec import ChildSpec, PortHolders

__all__ = ["PortReaper"]

log = structlog.get_logger("supd.ports")
# The longest grace a holder gets: the whole start must fit in the driver's 30 s prepare deadline.
MAX_HOLDER_GRACE_SECONDS = 20.0
# How long the ports may stay held after the holders are gone (the kernel closes sockets as the process ends).
PORT_RELEASE_SECONDS = 5.0
_POLL_SECONDS = 0.02


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


class PortReaper:
    """The prepare step that frees a child's ports."""

    def __init__(self, instance: str, owned: Callable[[], set[int]] = set) -> None:
        """``instance``: this store's id; ``owned()``: the pids of supd's live children (settable later)."""
        self._instance = instance
        self.owned = owned

    async def prepare(self, driver: ChildDriver) -> None:
        """Free the child's ports or raise FailedPrecondition naming who holds them and why they stay."""
        spec = driver.spec
        if not spec.ports:
            return
        wanted = [PortSpec(p.port, p.protocol) for p in spec.ports]
        holders, unseen = await anyio.to_thread.run_sync(find_holders_report, wanted, (INSTANCE_ENV, CHILD_ENV))
        if not holders and not unseen:
            return
        by_pid: dict[int, list[Holder]] = {}
        for h in holders:
            by_pid.setdefault(h.pid, []).append(h)
        refusals = [why for hs in by_pid.values() if (why := self._refusal(spec, hs[0]))]
        refusals += [
            f"port {p} is held by a process supd cannot see (another user's, or another container's in the pod):"
            " supd leaves it alone"
            for p in unseen
        ]
        if refusals:
            raise FailedPrecondition("; ".join(refusals))
        for hs in by_pid.values():
            await self._reap(driver, hs)
        await self._wait_free(wanted)

    def _refusal(self, spec: ChildSpec, h: Holder) -> str:
        """Why ``h`` may not be stopped; "" when it may."""
        ports = f"port {h.port.port}/{h.port.protocol} is held by pid {h.pid} (user {_user(h.uid)}: {h.cmdline})"
        if h.pid == 1:
            return f"{ports}, which is PID 1: supd never stops it"
        if h.pid == os.getpid():
            return f"{ports}, which is supd itself"
        if h.pid in self.owned():
            other = h.marker.get(CHILD_ENV, "another child")
            return f"{ports}, a running child of this supd ({other}): two children cannot share a port"
        same_user = h.uid == os.getuid()
        ours = same_user and h.marker.get(INSTANCE_ENV) == self._instance and h.marker.get(CHILD_ENV) == spec.name
        if ours or (same_user and spec.port_holders is PortHolders.SAME_USER):
            return ""
        if spec.port_holders is PortHolders.SAME_USER:
            return (
                f"{ports}, a process of another user than supd's ({_user(os.getuid())}): supd never stops it;"
                " stop it yourself"
            )
        return (
            f"{ports}; supd cannot prove it started that process for {spec.name!r} and leaves it alone: stop it"
            " yourself, or set port_holders = same-user to let supd stop processes of its own user"
        )

    async def _reap(self, driver: ChildDriver, held: list[Holder]) -> None:
        h = held[0]
        member = read_stat(h.pid)
        if member is None or member.start_ticks != h.start_ticks:
            return  # gone meanwhile, or another process now: nothing to stop
        spec = driver.spec
        grace = min(spec.stop_grace_seconds, MAX_HOLDER_GRACE_SECONDS)
        began = time.monotonic()
        how = ""
        if spec.port_holder_stop_url and await self._ask_to_stop(spec.port_holder_stop_url, h):
            how = await self._wait_gone([member], grace, "after the stop request")
        if not how:
            members = [member]
            if member.sid == member.pid:  # it leads a session: its whole session goes, as a Stop would do
                found = await anyio.to_thread.run_sync(scan_sessions, frozenset({member.sid}))
                members += [m for m in found.get(member.sid, []) if m.pid != member.pid]
            for m in members:
                signal_member(m, signal.SIGTERM)
            how = await self._wait_gone(members, grace, "by SIGTERM")
            if not how:
                killed = [m.pid for m in members if signal_member(m, signal.SIGKILL)]
                await self._wait_gone(members, PORT_RELEASE_SECONDS, "")
                how = f"killed by SIGKILL after {grace:g}s grace" + (f" ({len(killed)} processes)" if killed else "")
        ports = ", ".join(f"{x.port.port}/{x.port.protocol}" for x in held)
        message = f"pid {h.pid} ({h.cmdline}) held {ports}: stopped {how} in {time.monotonic() - began:.2f}s"
        driver.output.append_event(
            ChildEvent(kind=EventKind.PORT_HOLDER_REAPED, time_ns=time.time_ns(), generation=driver.generation,
                       message=message, pid=h.pid)
        )
        log.warning("child.port_holder.reaped", child=spec.name, pid=h.pid, cmdline=h.cmdline, ports=ports, how=how)

    async def _ask_to_stop(self, url: str, h: Holder) -> bool:
        import httpx

        try:
            async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(verify=False), timeout=2.0) as client:
                answer = await client.post(url)
        except httpx.HTTPError as exc:
            log.info("child.port_holder.stop_request_failed", pid=h.pid, url=url, error=repr(exc))
            return False
        log.info("child.port_holder.stop_requested", pid=h.pid, url=url, status=answer.status_code)
        return answer.is_success

    async def _wait_gone(self, members: list[Member], seconds: float, how: str) -> str:
        """``how`` once every member is gone within ``seconds``; "" otherwise."""
        with anyio.move_on_after(seconds):
            while any(_alive(m) for m in members):  # noqa: ASYNC110 - /proc offers no event to wait on
                await anyio.sleep(_POLL_SECONDS)
            return how or "gone"
        return ""

    async def _wait_free(self, ports: list[PortSpec]) -> None:
        with anyio.move_on_after(PORT_RELEASE_SECONDS):
            while not all(await anyio.to_thread.run_sync(lambda: [port_is_free(p) for p in ports])):  # noqa: ASYNC110
                await anyio.sleep(_POLL_SECONDS)  # the kernel offers no event for a port coming free
            return
        raise FailedPrecondition(
            f"ports {', '.join(f'{p.port}/{p.protocol}' for p in ports)} are still held {PORT_RELEASE_SECONDS:g}s"
            " after their holders were stopped"
        )


def _alive(member: Member) -> bool:
    now = read_stat(member.pid)
    return now is not None and now.start_ticks == member.start_ticks and not now.zombie
