"""The registry in-process: the only way to change a child, races staged under ``fail_after``."""

from __future__ import annotations

import gc
import time
import weakref
from collections.abc import AsyncIterator

import anyio
import pytest

from supervisor._daemon import memory
from supervisor._daemon.children import lifecycle as lc
from supervisor._daemon.children.registry import Registry
from supervisor._daemon.children.sessions import scan_sessions
from supervisor.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, Unavailable

from inproc import gone, output, sh, until

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def registry() -> AsyncIterator[Registry]:
    async with Registry() as reg:
        yield reg
        with anyio.fail_after(15):
            await reg.shutdown(time.monotonic() + 5)


STUBBORN = "trap '' TERM; sleep 1000 & echo ready; wait"


async def test_restart_racing_remove_leaves_nothing_running(registry: Registry):
    child = await registry.spawn(sh("slow", STUBBORN, stop_grace_seconds=1))
    await until(lambda: b"ready" in output(child))
    pid = child.statistics().pid
    members = scan_sessions(frozenset({pid}))[pid]
    removed: list[object] = []

    async def remove() -> None:
        removed.append(await registry.remove("slow"))

    async with anyio.create_task_group() as tg:
        tg.start_soon(remove)
        await until(lambda: child.state is lc.State.STOPPING)
        with pytest.raises((FailedPrecondition, NotFound)), anyio.fail_after(10):
            await registry.restart("slow")
    assert removed and registry.all() == []
    assert all(gone(m.pid, m.start_ticks) for m in members), members
    with pytest.raises(NotFound):
        await registry.restart("slow")


async def test_restart_after_shutdown_began_is_unavailable(registry: Registry):
    child = await registry.spawn(sh("slow", STUBBORN, stop_grace_seconds=2))
    await until(lambda: b"ready" in output(child))
    pid = child.statistics().pid
    members = scan_sessions(frozenset({pid}))[pid]
    async with anyio.create_task_group() as tg:
        tg.start_soon(registry.shutdown, time.monotonic() + 3)
        await until(lambda: child.state is lc.State.STOPPING)
        for call in (registry.restart("slow"), registry.stop("slow"), registry.remove("slow")):
            with pytest.raises(Unavailable, match="shutting down"):
                await call
        with pytest.raises(Unavailable):
            await registry.spawn(sh("new", "sleep 1000"))
    assert child.state is lc.State.REMOVED
    assert all(gone(m.pid, m.start_ticks) for m in members), members


async def test_name_locks_do_not_grow_with_names_asked_about(registry: Registry):
    for i in range(200):
        with pytest.raises(NotFound):
            await registry.remove(f"nobody-{i}")
        with pytest.raises(NotFound):
            await registry.stop(f"nobody-{i}")
    await registry.spawn(sh("one", "exec sleep 1000", stop_grace_seconds=1))
    await registry.remove("one")
    assert registry.lock_count == 0


async def test_duplicate_names_and_replace(registry: Registry):
    first = await registry.spawn(sh("dup", "exec sleep 1000", stop_grace_seconds=1))
    with pytest.raises(AlreadyExists, match="--replace"):
        await registry.spawn(sh("dup", "exec sleep 1000"))
    second = await registry.spawn(sh("dup", "exec sleep 1000", stop_grace_seconds=1), replace=True)
    assert second is not first and first.state is lc.State.REMOVED and registry.all() == [second]


async def test_a_grace_beyond_the_bound_is_invalid(registry: Registry):
    await registry.spawn(sh("g", "exec sleep 1000", stop_grace_seconds=1))
    with pytest.raises(InvalidArgument, match=r"grace_seconds: must be > 0 and at most 3600 s \(0 means"):
        await registry.stop("g", 4000)


async def test_a_slow_removal_does_not_hold_up_another_child(registry: Registry):
    slow = await registry.spawn(sh("slow", STUBBORN, stop_grace_seconds=3))
    await until(lambda: b"ready" in output(slow))
    async with anyio.create_task_group() as tg:
        tg.start_soon(registry.remove, "slow")
        await until(lambda: slow.state is lc.State.STOPPING)
        with anyio.fail_after(2):  # well inside the 3 s the removal takes
            fast = await registry.spawn(sh("fast", "exec sleep 1000", stop_grace_seconds=1))
            await registry.stop("fast")
        assert fast.state is lc.State.STOPPED and slow.state is lc.State.STOPPING


async def started_ring(registry: Registry, name: str) -> weakref.ref[object]:
    """Spawn ``name``, wait for its output, and return a weak reference to its ring (no strong one is kept)."""
    child = await registry.spawn(sh(name, "seq 1 20000; echo ready; exec sleep 1000"))
    await until(lambda: b"ready" in output(child))
    return weakref.ref(child.output.ring)


async def test_a_removed_childs_ring_is_freed_without_the_cycle_collector(registry: Registry):
    # The ring holds all of a child's kept output (8 MiB by default). Left to the cycle collector, which
    # runs its full pass rarely, rings of removed children piled up: 10 children added and removed in
    # turn grew supd by about their rings' bytes each time.
    gc.collect()
    gc.disable()
    try:
        ring = await started_ring(registry, "gone")
        await registry.remove("gone")
        await until(lambda: ring() is None, what="the removed child's ring to be freed")
    finally:
        gc.enable()


async def test_the_memory_of_a_removed_childs_ring_goes_back_to_the_system(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
):
    asked: list[int] = []  # memory.RELEASER.trims when the ring was freed
    release = memory.release_soon

    def recorded() -> None:
        asked.append(memory.RELEASER.trims)
        release()

    monkeypatch.setattr(memory, "release_soon", recorded)
    await started_ring(registry, "trimmed")
    assert not asked, "nothing is released while the child is declared"
    await registry.remove("trimmed")
    await until(lambda: asked, what="the removed child's ring to be freed")
    await until(lambda: memory.RELEASER.trims > asked[0], what="malloc_trim after the ring was freed")
