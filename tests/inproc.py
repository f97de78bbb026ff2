"""Helpers for in-process tests of the children package: shell children, output, waits under deadlines."""

from __future__ import annotations

from collections.abc import Callable

import anyio

from supervisor._daemon.children.driver import ChildDriver
from supervisor._daemon.children.sessions import read_stat
from supervisor.spec import ChildSpec, RestartPolicy


def sh(name: str, script: str, shell: str = "/bin/sh", **fields: object) -> ChildSpec:
    fields.setdefault("restart", RestartPolicy.NEVER)
    fields.setdefault("stop_grace_seconds", 5.0)
    return ChildSpec(name=name, argv=(shell, "-c", script), **fields)  # type: ignore[arg-type]


BASH = "/bin/bash"  # job control (set -m) without a terminal: dash turns it off


async def until(predicate: Callable[[], object], seconds: float = 10.0, what: str = "") -> None:
    """Poll ``predicate`` under a deadline: the process world has no event for most of these."""
    with anyio.fail_after(seconds, reason=f"waiting for {what or predicate}"):
        while not predicate():  # noqa: ASYNC110 - /proc and a ring offer no event to wait on
            await anyio.sleep(0.01)


def output(driver: ChildDriver) -> bytes:
    ring = driver.ring
    return b"".join(s.data for s in map(ring.find, range(ring.oldest_seq, ring.next_seq)) if s and not s.event)


async def ready(driver: ChildDriver) -> None:
    """Wait for the child's first line: its traps are set once it printed."""
    await until(lambda: b"ready" in output(driver), what=f"{driver.name} to print ready")


def gone(pid: int, start_ticks: int) -> bool:
    now = read_stat(pid)
    return now is None or now.start_ticks != start_ticks or now.zombie


