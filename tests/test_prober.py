"""The prober in-process: the kubelet's thresholds with real exec probes steered by a file, under ``fail_after``."""

from __future__ import annotations

import pathlib
import time

import anyio
import pytest

from supervisor._daemon.health.prober import Prober, Verdict
from supervisor.probes import ExecProbe, Probe
from supervisor.spec import ChildSpec

from inproc import until

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def steered(flag: pathlib.Path, **fields: float) -> Probe:
    """Succeeds while ``flag`` holds "ok"."""
    fields.setdefault("period_seconds", 0.02)
    script = f'[ "$(cat {flag} 2>/dev/null)" = ok ] || {{ echo "flag says no"; exit 1; }}'
    return Probe(ExecProbe(("/bin/sh", "-c", script)), **fields)  # type: ignore[arg-type]


def child(**probes: Probe) -> ChildSpec:
    return ChildSpec(name="c", argv=("true",), **probes)  # type: ignore[arg-type]


class Verdicts:
    def __init__(self) -> None:
        self.seen: list[Verdict] = []

    async def __call__(self, verdict: Verdict) -> None:
        self.seen.append(verdict)


async def test_readiness_needs_its_success_and_failure_thresholds(tmp_path: pathlib.Path) -> None:
    flag = tmp_path / "flag"
    spec = child(readiness_probe=steered(flag, success_threshold=3, failure_threshold=2))
    verdicts = Verdicts()
    prober = Prober(spec, 1, time.monotonic(), verdicts)
    state = prober.statuses["readiness"]
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(prober.run)
            await until(lambda: state.failures >= 3, what="failures before any success")
            assert verdicts.seen == [], "a child is not ready until proven so: no NOT_READY without a READY first"
            flag.write_text("ok")
            await until(lambda: verdicts.seen, what="ready")
            assert state.successes >= 3 and verdicts.seen == [Verdict(1, "readiness", ready=True, reason="exit 0")]
            flag.write_text("no")
            await until(lambda: len(verdicts.seen) == 2, what="not ready")
            assert verdicts.seen[1].ready is False
            assert "failed 2 times in a row: exit 1: flag says no" in verdicts.seen[1].reason
            tg.cancel_scope.cancel()


async def test_liveness_at_its_threshold_is_unhealthy_and_probing_stops(tmp_path: pathlib.Path) -> None:
    flag = tmp_path / "flag"
    spec = child(liveness_probe=steered(flag, failure_threshold=3), readiness_probe=steered(flag))
    verdicts = Verdicts()
    prober = Prober(spec, 7, time.monotonic(), verdicts)
    with anyio.fail_after(20):
        await prober.run()  # returns by itself: nothing is left to probe once the child is unhealthy
    assert [v for v in verdicts.seen if v.unhealthy] == [
        Verdict(7, "liveness", unhealthy=True, reason="liveness probe failed 3 times in a row: exit 1: flag says no")
    ]
    assert prober.statuses["liveness"].runs == 3


async def test_startup_holds_the_others_off_until_it_passes(tmp_path: pathlib.Path) -> None:
    flag = tmp_path / "flag"
    spec = child(startup_probe=steered(flag, failure_threshold=1000), liveness_probe=steered(tmp_path / "live"))
    (tmp_path / "live").write_text("ok")
    verdicts = Verdicts()
    prober = Prober(spec, 1, time.monotonic(), verdicts)
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(prober.run)
            await until(lambda: prober.statuses["startup"].runs >= 5, what="startup runs")
            assert prober.statuses["liveness"].runs == 0 and verdicts.seen == []
            flag.write_text("ok")
            await until(lambda: prober.statuses["liveness"].runs >= 2, what="liveness after startup")
            assert prober.statuses["startup"].passed
            # No readiness probe: ready as soon as the startup probe passed.
            assert verdicts.seen == [Verdict(1, "startup", ready=True)]
            tg.cancel_scope.cancel()


async def test_a_failing_startup_probe_is_unhealthy_at_its_threshold(tmp_path: pathlib.Path) -> None:
    spec = child(startup_probe=steered(tmp_path / "never", failure_threshold=4))
    verdicts = Verdicts()
    with anyio.fail_after(20):
        await Prober(spec, 2, time.monotonic(), verdicts).run()
    assert [(v.probe, v.unhealthy) for v in verdicts.seen] == [("startup", True)]


async def test_a_hanging_probe_delays_no_other_child(tmp_path: pathlib.Path) -> None:
    hang = child(readiness_probe=Probe(ExecProbe(("sleep", "30")), period_seconds=0.02, timeout_seconds=0.5))
    (tmp_path / "ok").write_text("ok")
    quick = child(readiness_probe=steered(tmp_path / "ok"))
    slow, fast = Prober(hang, 1, time.monotonic(), Verdicts()), Prober(quick, 1, time.monotonic(), Verdicts())
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(slow.run)
            tg.start_soon(fast.run)
            await until(lambda: slow.statuses["readiness"].runs >= 1, what="one timed-out probe")
            assert fast.statuses["readiness"].runs >= 5, "the quick child's probes ran while the other hung"
            last = slow.statuses["readiness"].last
            assert last is not None and "timed out after 0.5s" in last.message
            tg.cancel_scope.cancel()


def test_the_schedule_is_a_fixed_ticker() -> None:
    from supervisor._daemon.health.prober import _next_due

    assert _next_due(10.0, 1.0, 10.3) == 11.0, "on time: one period after the last tick"
    assert _next_due(10.0, 1.0, 13.5) == 14.0, "late: the next tick on the grid, missed runs are not piled up"
    assert _next_due(10.0, 1.0, 11.0) == 11.0
