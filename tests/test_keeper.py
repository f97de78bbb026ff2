"""The state keeper in-process: Reload and replay races staged under ``fail_after``, with a real store."""

from __future__ import annotations

import pathlib
import time
from collections.abc import AsyncIterator

import anyio
import pytest

from supervisor._daemon.children import lifecycle as lc
from supervisor._daemon.children.registry import Registry
from supervisor._daemon.output.records import EventKind
from supervisor._daemon.state.deliver import DeliveryRejected
from supervisor._daemon.state.keeper import StateKeeper
from supervisor._daemon.state.store import AsyncStateStore, StateStore
from supervisor.delivery import ExecDelivery, StateDelivery
from supervisor.errors import Aborted, FailedPrecondition

from inproc import sh, until

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def keeper(tmp_path: pathlib.Path) -> AsyncIterator[StateKeeper]:
    store = StateStore.open(str(tmp_path / "state"))
    try:
        async with StateKeeper(AsyncStateStore(store)) as k:
            yield k
    finally:
        store.close()


@pytest.fixture
async def registry(keeper: StateKeeper) -> AsyncIterator[Registry]:
    async with Registry(keeper=keeper) as reg:
        yield reg
        with anyio.fail_after(15):
            await reg.shutdown(time.monotonic() + 5)


def execd(script: str) -> StateDelivery:
    return StateDelivery(ExecDelivery(("/bin/sh", "-c", script), timeout_seconds=10))


def events(child: object, kind: EventKind) -> list[object]:
    ring = child.ring  # type: ignore[attr-defined]
    found = (ring.find(seq) for seq in range(ring.oldest_seq, ring.next_seq))
    return [s.event for s in found if s is not None and s.event is not None and s.event.kind is kind]


async def test_concurrent_reloads_are_serialised(registry: Registry, keeper: StateKeeper, tmp_path: pathlib.Path):
    # Two deliveries that overlapped would find the other's lock directory and be rejected (exit 9).
    lock = tmp_path / "delivering"
    script = f"mkdir {lock} || exit 9; cat > /dev/null; sleep 0.2; rmdir {lock}"
    child = await registry.spawn(sh("c", "sleep 100", state_delivery=execd(script)))
    results: list[int] = []

    async def reload(payload: bytes) -> None:
        revision, _ = await keeper.reload(child, payload, "text/plain", None)
        results.append(revision)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for n in range(3):
                tg.start_soon(reload, b"state %d" % n)
    assert sorted(results) == [1, 2, 3]
    assert keeper.status("c").accepted == 3 and keeper.applied(child)


async def test_a_reload_does_not_wait_behind_a_stop_grace(registry: Registry, keeper: StateKeeper):
    child = await registry.spawn(
        sh("stubborn", "trap '' TERM; echo ready; while :; do sleep 0.05; done", stop_grace_seconds=30,
           state_delivery=execd("cat > /dev/null"))
    )
    await until(lambda: child.statistics().pid, what="the child to run")
    async with anyio.create_task_group() as tg:
        tg.start_soon(registry.stop, "stubborn")
        await until(lambda: child.state is lc.State.STOPPING, what="the stop to begin")
        with anyio.fail_after(2), pytest.raises(FailedPrecondition, match="no running process"):
            await keeper.reload(child, b"x", "", None)
        await registry.remove("stubborn", grace=0.1)


async def test_a_rejected_reload_changes_nothing_and_cas_names_the_current(registry: Registry, keeper: StateKeeper):
    child = await registry.spawn(
        sh("c", "sleep 100", state_delivery=execd('read x; [ "$x" != bad ] || { echo "no: bad" >&2; exit 4; }'))
    )
    with anyio.fail_after(10):
        assert (await keeper.reload(child, b"good\n", "", 0))[0] == 1
        with pytest.raises(DeliveryRejected, match="exit 4: no: bad"):
            await keeper.reload(child, b"bad\n", "", None)
        with pytest.raises(Aborted, match="accepted revision 1, not 0"):
            await keeper.reload(child, b"good\n", "", 0)
        stored, history = await keeper.get("c")
    assert stored is not None and (stored.revision, stored.state) == (1, b"good\n")
    assert [(r.revision, r.accepted) for r in history] == [(2, False), (1, True)]
    assert len(events(child, EventKind.STATE_FAILED)) == 1 and len(events(child, EventKind.STATE_APPLIED)) == 1


async def test_a_cancelled_reload_is_recorded_failed_not_accepted(registry: Registry, keeper: StateKeeper):
    child = await registry.spawn(sh("c", "sleep 100", state_delivery=execd("cat > /dev/null; sleep 30")))
    with anyio.move_on_after(0.5):
        await keeper.reload(child, b"never", "", None)
    with anyio.fail_after(10):
        stored, history = await keeper.get("c")
    assert stored is None and keeper.status("c").accepted == 0
    assert history[0].error == "the Reload ended before the child answered"


async def test_restart_replays_the_accepted_revision_to_the_new_process(
    registry: Registry, keeper: StateKeeper, tmp_path: pathlib.Path
):
    seen = tmp_path / "seen"
    child = await registry.spawn(sh("c", "sleep 100", state_delivery=execd(f"cat > {seen}.$SUPD_CHILD_PID")))
    with anyio.fail_after(10):
        await keeper.reload(child, b"v1", "", None)
        first = child.statistics().pid
        await registry.restart("c")
        second = child.statistics().pid
        await until(lambda: keeper.applied(child), what="the replay to the new process")
    assert second != first
    assert (tmp_path / f"seen.{second}").read_bytes() == b"v1", "the new process got the accepted revision"
    assert keeper.status("c").applied_generation == 2


async def test_removing_a_child_forgets_its_state_and_replacing_keeps_it(registry: Registry, keeper: StateKeeper):
    spec = sh("c", "sleep 100", state_delivery=execd("cat > /dev/null"))
    child = await registry.spawn(spec)
    with anyio.fail_after(10):
        await keeper.reload(child, b"v1", "", None)
        replaced = await registry.spawn(spec, replace=True)
        await until(lambda: keeper.applied(replaced), what="the replay to the replacing child")
        assert (await keeper.get("c"))[0] is not None
        await registry.remove("c")
        assert (await keeper.get("c")) == (None, [])
        assert await keeper.store.specs() == []


async def test_replay_waits_for_the_startup_probe_when_the_child_has_one(
    registry: Registry, keeper: StateKeeper, tmp_path: pathlib.Path
):
    from supervisor.probes import ExecProbe, Probe

    flag, seen = tmp_path / "flag", tmp_path / "seen"
    probe = Probe(ExecProbe(("/bin/sh", "-c", f'[ "$(cat {flag} 2>/dev/null)" = ok ]')), period_seconds=0.02,
                  failure_threshold=1000)
    spec = sh("c", "sleep 100", state_delivery=execd(f"cat > {seen}"), startup_probe=probe)
    flag.write_text("ok")
    child = await registry.spawn(spec)
    with anyio.fail_after(10):
        await until(lambda: child.started_up, what="started up")
        await keeper.reload(child, b"v1", "", None)
        flag.write_text("no")
        seen.unlink()
        await registry.restart("c")
        # The startup probe fails for the new process: no replay while it does.
        await until(lambda: any(p.failures >= 3 for p in child.statistics().probes), what="three failed probes")
        assert not seen.exists()
        flag.write_text("ok")
        await until(lambda: keeper.applied(child), what="the replay once the probe passed")
    assert seen.read_bytes() == b"v1"
