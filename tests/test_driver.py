"""The child driver in-process: real processes, staged races, every wait under ``fail_after``."""

from __future__ import annotations

import os
import pathlib
import re
import resource
import signal
import subprocess
import sys
from collections.abc import AsyncIterator

import anyio
import pytest

from supervisor._daemon.children import lifecycle as lc
from supervisor._daemon.children.driver import ChildDriver
from supervisor._daemon.children.sessions import SessionScanner, read_stat, scan_sessions
from supervisor._daemon.output.records import EventKind
from supervisor.errors import FailedPrecondition, NotFound, Unavailable
from supervisor.spec import ChildSpec

from inproc import BASH, gone, output, ready, sh, until

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def tg() -> AsyncIterator[anyio.abc.TaskGroup]:
    async with anyio.create_task_group() as group:
        yield group
        group.cancel_scope.cancel()


async def started(tg: anyio.abc.TaskGroup, spec: ChildSpec) -> ChildDriver:
    driver = ChildDriver(spec, scanner=SessionScanner())
    await tg.start(driver.run)
    with anyio.fail_after(10):
        await driver.start()
    return driver


def session_of(pid: int) -> list[int]:
    return [m.pid for m in scan_sessions(frozenset({pid}))[pid]]


async def test_a_child_inherits_only_fds_0_to_2(tg, tmp_path: pathlib.Path):
    leak = os.open(tmp_path / "leak", os.O_CREAT | os.O_WRONLY)
    os.set_inheritable(leak, True)  # would reach the child if supd did not close it
    try:
        code = "import os\nprint([fd for fd in range(3, 4096) if os.path.exists(f'/proc/self/fd/{fd}')])"
        driver = await started(tg, ChildSpec(name="fds", argv=(sys.executable, "-S", "-c", code)))
        await until(lambda: driver.state is lc.State.EXITED)
        # The listing opens one fd of its own for /proc/self/fd: all the child holds is 0-2 and that.
        data = output(driver)
        assert data.strip() in (b"[]", b"[3]"), data
    finally:
        os.close(leak)


async def test_an_exit_racing_a_stop_is_reported_once_as_requested(tg):
    driver = await started(tg, sh("race", "exec sleep 1000"))
    pid = driver.statistics().pid
    os.kill(pid, signal.SIGKILL)  # the exit and the Stop reach the driver in the same instant
    with anyio.fail_after(10):
        ended = await driver.stop()
    assert ended is not None and ended.pid == pid and ended.requested and not ended.exited
    assert driver.state is lc.State.STOPPED
    kinds = [s.event.kind for s in map(driver.ring.find, range(1, driver.ring.next_seq)) if s and s.event]
    assert kinds.count(EventKind.EXITED) == 1 and kinds[-1] is EventKind.STOPPED


STUBBORN = "trap '' TERM; sleep 1000 & echo ready; wait"


async def test_restart_during_shutdown_is_unavailable_and_nothing_outlives_it(tg, tmp_path: pathlib.Path):
    driver = await started(tg, sh("stubborn", "trap '' TERM; sleep 1000 & echo ready; wait", stop_grace_seconds=30))
    await ready(driver)
    pid = driver.statistics().pid
    await until(lambda: session_of(pid) != [pid], what="the grandchild")
    members = scan_sessions(frozenset({pid}))[pid]
    result: list[object] = []

    async def shut() -> None:
        result.append(await driver.shutdown(0.5))

    tg.start_soon(shut)
    await until(lambda: driver.lifecycle.then is lc.Then.SHUTDOWN)
    with pytest.raises(Unavailable, match="shutting down"), anyio.fail_after(10):
        await driver.restart()
    await until(lambda: result, what="the shutdown")
    assert driver.state is lc.State.REMOVED
    assert all(gone(m.pid, m.start_ticks) for m in members), members
    with pytest.raises((FailedPrecondition, NotFound)):
        await driver.restart()


async def test_a_shutdown_shortens_a_long_stop_in_flight(tg):
    driver = await started(tg, sh("slow", "trap '' TERM; sleep 1000 & echo ready; wait", stop_grace_seconds=60))
    await ready(driver)
    stop_result: list[object] = []

    async def stop() -> None:
        stop_result.append(await driver.stop(60))

    tg.start_soon(stop)
    await until(lambda: driver.state is lc.State.STOPPING)
    with anyio.fail_after(10):  # far below the 60 s grace of the Stop in flight
        ended = await driver.shutdown(0.3)
    assert ended is not None and ended.killed_after_grace and "SIGKILL" in ended.description
    await until(lambda: stop_result)
    assert driver.state is lc.State.REMOVED


async def test_stop_covers_every_group_of_the_session(tg):
    driver = await started(tg, sh("jobs", "set -m; sleep 1000 & sleep 1001 & wait", BASH))
    pid = driver.statistics().pid
    await until(lambda: len(session_of(pid)) >= 3, what="both jobs")
    members = scan_sessions(frozenset({pid}))[pid]
    assert len({m.pgid for m in members}) >= 3  # job control: one group per job, none the leader's
    with anyio.fail_after(10):
        ended = await driver.stop()
    assert ended is not None
    assert all(gone(m.pid, m.start_ticks) for m in members), members


async def test_an_exit_leaving_a_job_behind_stops_the_job_before_reporting(tg):
    driver = await started(tg, sh("leaver", "set -m; sleep 1001 & echo $!; exit 0", BASH))
    await until(lambda: driver.state is not lc.State.RUNNING)
    assert driver.state is lc.State.EXITED
    sleeper = int(output(driver).split()[0])
    assert read_stat(sleeper) is None or read_stat(sleeper).zombie  # type: ignore[union-attr]
    last = driver.last_exit
    assert last is not None and last.exited and last.code == 0


async def test_leftovers_killed_are_described_apart_from_the_leader(tg):
    # The leader dies on SIGTERM; a job of its session ignores it and needs SIGKILL.
    script = "set -m; (trap '' TERM; echo ready; exec sleep 1002) & wait"
    driver = await started(tg, sh("mixed", script, BASH, stop_grace_seconds=0.3))
    await ready(driver)
    pid = driver.statistics().pid
    await until(lambda: len(session_of(pid)) >= 2)
    with anyio.fail_after(10):
        ended = await driver.stop()
    assert ended is not None and ended.killed_after_grace
    assert ended.description.startswith("killed by SIGTERM;"), ended.description
    assert re.search(r"1 leftover process of its session killed by SIGKILL after 0\.\d+s grace", ended.description)


async def test_a_leftover_in_the_leaders_own_group_is_counted_before_sigkill(tg):
    # No job control: the subshell shares the leader's group, so the group SIGKILL alone would end it.
    driver = await started(tg, sh("same-group", "(trap '' TERM; echo ready; exec sleep 1003) & wait", BASH,
                                  stop_grace_seconds=0.3))
    await ready(driver)
    with anyio.fail_after(10):
        ended = await driver.stop()
    assert ended is not None and ended.description.startswith("killed by SIGTERM; 1 leftover process"), ended


async def restart_in_background(tg: anyio.abc.TaskGroup, driver: ChildDriver) -> list[BaseException]:
    """Start a Restart and return once it is stopping the process; its refusal lands in the list."""
    outcome: list[BaseException] = []

    async def restart() -> None:
        try:
            await driver.restart()
        except (FailedPrecondition, Unavailable) as exc:
            outcome.append(exc)

    tg.start_soon(restart)
    await until(lambda: driver.lifecycle.then is lc.Then.START)
    return outcome


async def test_a_restart_cancelled_by_a_later_stop_is_refused_not_reported_as_started(tg):
    driver = await started(tg, sh("cancel", STUBBORN, stop_grace_seconds=1))
    await ready(driver)
    outcome = await restart_in_background(tg, driver)
    with anyio.fail_after(10):
        await driver.stop()
    await until(lambda: outcome, what="the restart's answer")
    assert "stopped before it could start again" in str(outcome[0])
    assert driver.state is lc.State.STOPPED and driver.generation == 1


async def test_a_restart_overtaken_by_a_remove_is_failed_precondition_not_unavailable(tg):
    driver = await started(tg, sh("overtaken", STUBBORN, stop_grace_seconds=1))
    await ready(driver)
    outcome = await restart_in_background(tg, driver)
    with anyio.fail_after(10):
        await driver.remove()
    await until(lambda: outcome, what="the restart's answer")
    assert type(outcome[0]) is FailedPrecondition and "was removed" in str(outcome[0])


async def test_an_exit_collected_by_another_reaper_is_gone_not_running(tg):
    driver = await started(tg, sh("stolen", "exec sleep 1000"))
    pid = driver.statistics().pid
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)  # noqa: ASYNC222 - someone else (a PID 1 shim, a stray waitpid) takes the status first
    await until(lambda: driver.state is not lc.State.RUNNING)
    assert driver.state is lc.State.EXITED  # restart=never; on-failure would restart
    assert driver.last_exit is not None and "collected by another process" in driver.last_exit.description
    with anyio.fail_after(10):
        assert await driver.stop() is None  # nothing runs: no group signal, no INTERNAL


async def test_a_removed_working_directory_is_named(tg, tmp_path: pathlib.Path):
    work = tmp_path / "work"
    work.mkdir()
    driver = await started(tg, sh("cwd", "exit 0", cwd=str(work)))
    await until(lambda: driver.state is lc.State.EXITED)
    work.rmdir()
    with anyio.fail_after(10):
        await driver.restart()
    assert driver.state is lc.State.FATAL
    assert f"working directory {str(work)!r} does not exist" in driver.lifecycle.fatal_reason


async def test_a_failed_pidfd_after_fork_kills_the_process(tg, monkeypatch: pytest.MonkeyPatch):
    # The kernel refusing pidfd_open (EMFILE, a seccomp profile) cannot be staged after a fork from here.
    real_popen = subprocess.Popen
    started_pids: list[int] = []

    class Recording(real_popen):  # type: ignore[misc, valid-type]
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            started_pids.append(self.pid)

    def refuse(pid: int) -> int:
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(subprocess, "Popen", Recording)
    monkeypatch.setattr(os, "pidfd_open", refuse)
    driver = await started(tg, sh("nopidfd", "exec sleep 1000"))
    monkeypatch.undo()
    assert driver.state is lc.State.FATAL
    assert "could not watch it (pidfd_open: Too many open files); killed it" in driver.lifecycle.fatal_reason
    assert started_pids and read_stat(started_pids[0]) is None  # killed and reaped, not running untracked


async def test_requests_after_removal_are_refused_not_internal(tg):
    driver = await started(tg, sh("bye", "exec sleep 1000", stop_grace_seconds=1))
    with anyio.fail_after(10):
        await driver.remove()
    for call in (driver.start, driver.stop, driver.restart, driver.remove):
        with pytest.raises((FailedPrecondition, NotFound)), anyio.fail_after(5):
            await call()
    with pytest.raises(NotFound), anyio.fail_after(5):
        await driver.send_signal(signal.SIGTERM, False)


async def test_signal_to_a_child_without_a_process_is_failed_precondition(tg):
    driver = await started(tg, sh("done", "exit 0"))
    await until(lambda: driver.state is lc.State.EXITED)
    with pytest.raises(FailedPrecondition, match="no running process"), anyio.fail_after(5):
        await driver.send_signal(signal.SIGHUP, False)


async def test_session_scans_are_shared_between_concurrent_callers():
    scanner = SessionScanner()
    own = os.getpid()
    results: list[list[object]] = []

    async def ask() -> None:
        results.append(list(await scanner.members(own)))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            for _ in range(50):
                group.start_soon(ask)
    assert len(results) == 50
    assert scanner.scans <= 3, scanner  # one running, one queued behind it: not fifty


async def test_descriptors_numbered_past_1024_work(tg):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"RLIMIT_NOFILE hard limit is {hard}: cannot hold 1,100 descriptors")
    if soft < 2048:
        resource.setrlimit(resource.RLIMIT_NOFILE, (2048, hard))  # as supd raises its own at start
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]  # the next pidfd and pipes land above 1024
    try:
        driver = await started(tg, sh("high", "echo ready; exec sleep 1000", stop_grace_seconds=1))
        await ready(driver)
        with anyio.fail_after(10):
            ended = await driver.stop()
        assert ended is not None and ended.signal == signal.SIGTERM and driver.state is lc.State.STOPPED
    finally:
        for fd in held:
            os.close(fd)
