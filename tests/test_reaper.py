"""The orphan reaper: orphans are reaped, and no exit status of a child supd waits for is ever taken.

In this process: the subreaper flag brings a double-forked grandchild to us, a
child spawned in a worker thread but not yet recorded is never reaped, and
asyncio's children keep their exit codes. Under ``unshare --pid`` with a real
supd as PID 1: a double fork, 1,000 orphans, and 200 watched children exiting
at once beside orphans, each reporting its own code (a blanket ``waitpid(-1)``
got up to 77 of 200 wrong). A PID 1 that never reaps shows the zombie checks
can fail.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import anyio
import anyio.lowlevel
import pytest
from structlog.testing import capture_logs

from supervisor._daemon.children import reaper as reaper_module
from supervisor._daemon.children.process import Process
from supervisor._daemon.children.reaper import (
    PR_SET_CHILD_SUBREAPER,
    OrphanReaper,
    become_subreaper,
    leader_children,
)
from supervisor.spec import ChildSpec
from supervisor.testing import SupervisorProcess, supd_command, wait_until
from supervisor.v1 import supervisor_pb2 as pb
from supervisor.v1 import supervisor_pb2_grpc as pb_grpc

from conftest import spawn, wait_state
from inproc import until

HELPER = str(pathlib.Path(__file__).with_name("pid1_child.py"))
UNSHARE = shutil.which("unshare")


# /proc as seen from here (the host's PID namespace) ------------------------------------------


def stat_of(pid: int) -> tuple[int, str] | None:
    """(parent pid, state letter) of ``pid``, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            rest = f.read().rsplit(b")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(rest[1]), rest[0].decode()


def states_below(root: int) -> dict[int, str]:
    """The state letter of every descendant of ``root`` (all of a PID namespace, when ``root`` is its PID 1)."""
    table: dict[int, tuple[int, str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (st := stat_of(int(entry))) is not None:
            table[int(entry)] = st
    below, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, (ppid, _) in table.items() if ppid in frontier} - below
        below |= frontier
    return {pid: table[pid][1] for pid in sorted(below)}


def zombies_below(root: int) -> list[int]:
    """Zombies among the descendants of ``root``."""
    return [pid for pid, state in states_below(root).items() if state == "Z"]


def thread_children() -> dict[int, list[int]]:
    """This process's children by the thread that forked them (proc(5) ``task/TID/children``)."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(FileNotFoundError):  # a thread that just ended
            out[int(tid)] = [int(p) for p in pathlib.Path(f"/proc/self/task/{tid}/children").read_text().split()]
    return out


def marks(path: pathlib.Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


@pytest.fixture
def subreaper() -> Iterator[None]:
    """Make this test process child subreaper for one test, and clear the flag afterwards."""
    assert become_subreaper()
    try:
        yield
    finally:
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) == 0


# In this process -------------------------------------------------------------------------------


def test_a_double_forked_grandchild_comes_to_the_subreaper_and_is_reaped(subreaper: None, tmp_path: pathlib.Path):
    before = frozenset(leader_children())  # whatever pytest started earlier is not ours to reap
    reaper = OrphanReaper(owned=lambda: before, interval=60)  # 60 s: only SIGCHLD can wake it in time
    mark = tmp_path / "marks"

    async def scenario() -> None:
        # Without a reaper the grandchild stays our zombie: it really was re-parented to this process.
        done = await anyio.run_process([sys.executable, HELPER, "double-fork", str(mark)], check=False)
        assert done.returncode == 0
        [grandchild] = marks(mark)
        assert stat_of(grandchild) == (os.getpid(), "Z")
        async with anyio.create_task_group() as tg:
            tg.start_soon(reaper.run)
            await until(lambda: stat_of(grandchild) is None, 5, "the zombie to be reaped")
            # A second orphan, while the reaper waits: SIGCHLD wakes it (the safety net is 60 s away).
            done = await anyio.run_process([sys.executable, HELPER, "double-fork", str(mark)], check=False)
            assert done.returncode == 0, "asyncio's child lost its exit code"
            second = marks(mark)[1]
            await until(lambda: stat_of(second) is None, 5, "the second orphan to be reaped")
            tg.cancel_scope.cancel()

    anyio.run(scenario)
    assert reaper.reaped == 2
    assert reaper.wakes >= 1


def test_a_child_spawned_but_not_yet_recorded_is_never_reaped():
    """The spawn race: a worker thread forked the child, it exited, and its PID is not in owned() yet."""
    before = frozenset(leader_children())
    owned: set[int] = set(before)
    reaper = OrphanReaper(owned=lambda: owned)

    def start(code: int) -> Process:
        r, w = os.pipe2(os.O_CLOEXEC)
        try:
            return Process.spawn(ChildSpec(name="c", argv=("sh", "-c", f"exit {code}")), w, w)
        finally:
            os.close(r)
            os.close(w)

    async def scenario() -> None:
        for code in range(1, 31):
            proc = await anyio.to_thread.run_sync(start, code)
            await until(proc.exit_ready, 5, "the child to exit")
            # The premise: a zombie child of this process, listed under a worker thread, not the leader.
            assert stat_of(proc.pid) == (os.getpid(), "Z")
            by_thread = thread_children()
            assert proc.pid not in by_thread[os.getpid()]
            assert any(proc.pid in pids for pids in by_thread.values())
            assert reaper.reap_now() == 0  # the pass a naive reaper would have taken it in
            owned.add(proc.pid)  # recorded only now, as the driver does after the spawn returns
            exit = proc.reap()
            assert (exit.exited, exit.code, exit.collected_elsewhere) == (True, code, False)

    anyio.run(scenario)
    assert reaper.reaped == 0


def test_a_child_of_an_ended_thread_moves_to_the_leader_and_owned_keeps_it():
    before = frozenset(leader_children())
    box: list[subprocess.Popen[bytes]] = []
    thread = threading.Thread(target=lambda: box.append(subprocess.Popen(["sh", "-c", "exit 3"])))
    thread.start()
    thread.join()
    [popen] = box
    wait_until(lambda: popen.pid in leader_children() and stat_of(popen.pid) == (os.getpid(), "Z"), 5)
    owned = set(before) | {popen.pid}
    assert OrphanReaper(owned=lambda: owned).reap_now() == 0
    assert popen.wait(5) == 3
    # And what owned() does not name is taken: the same situation, unrecorded, is an orphan to the reaper.
    thread = threading.Thread(target=lambda: box.append(subprocess.Popen(["sh", "-c", "exit 4"])))
    thread.start()
    thread.join()
    stray = box[1]
    wait_until(lambda: stray.pid in leader_children() and stat_of(stray.pid) == (os.getpid(), "Z"), 5)
    assert OrphanReaper(owned=lambda: before).reap_now() == 1
    assert stat_of(stray.pid) is None
    stray.returncode = -1  # reaped above; subprocess must not wait for it again


def test_asyncio_children_exiting_at_once_keep_their_codes_while_the_reaper_hammers():
    """anyio.open_process forks on the loop thread, so its children sit on the leader's list beside orphans."""
    before = frozenset(leader_children())
    reaper = OrphanReaper(owned=lambda: before, interval=0.001)
    codes: dict[int, int] = {}

    async def hammer() -> None:
        while True:
            reaper.reap_now()
            await anyio.lowlevel.checkpoint()

    async def scenario() -> None:
        procs = {
            code: await anyio.open_process(
                ["sh", "-c", f"read x; exit {code}"],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            for code in range(1, 61)
        }
        # The premise: all 60 are on the leader's list, and a pass leaves every one of them alone.
        assert {p.pid for p in procs.values()} <= set(leader_children())
        assert reaper.reap_now() == 0
        assert reaper.statistics().owned_skipped >= 60
        async with anyio.create_task_group() as tg:
            tg.start_soon(reaper.run)
            tg.start_soon(hammer)
            for proc in procs.values():
                assert proc.stdin is not None
                await proc.stdin.aclose()  # EOF: all 60 exit at once
            for code, proc in procs.items():
                codes[code] = await proc.wait()
                await proc.aclose()
            tg.cancel_scope.cancel()

    anyio.run(scenario)
    assert {c: r for c, r in codes.items() if c != r} == {}


def test_run_refuses_a_thread_other_than_the_leader():
    reaper = OrphanReaper(owned=frozenset)
    errors: list[BaseException] = []

    def in_thread() -> None:
        try:
            anyio.run(reaper.run)
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join(10)
    assert [str(e) for e in errors] == [
        "the orphan reaper must run on the main thread: orphans are re-parented to it"
    ]


def test_without_a_children_file_the_reaper_says_so_and_reaps_nothing(monkeypatch: pytest.MonkeyPatch):
    def missing() -> list[int]:
        raise FileNotFoundError(2, "No such file or directory", "/proc/self/task/1/children")

    monkeypatch.setattr(reaper_module, "leader_children", missing)
    reaper = OrphanReaper(owned=frozenset)
    with capture_logs() as logs:
        anyio.run(reaper.run)  # returns: nothing to run without a way to tell orphans apart
    assert [(e["event"], e["log_level"]) for e in logs] == [("orphan.reaper.unavailable", "error")]
    assert "children" in logs[0]["error"]
    assert reaper.reaped == 0


# Under unshare --pid, a real supd as PID 1 --------------------------------------------------


def _unshare_works() -> bool:
    if UNSHARE is None or os.geteuid() != 0:
        return False
    return subprocess.run([UNSHARE, "--fork", "--pid", "--mount-proc", "true"], check=False).returncode == 0


needs_unshare = pytest.mark.skipif(not _unshare_works(), reason="needs root and unshare --pid --mount-proc")


def _one_child_of(pid: int) -> int | None:
    found = [int(p) for tid in os.listdir(f"/proc/{pid}/task")
             for p in pathlib.Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
    return found[0] if len(found) == 1 else None


def _answers(handle: SupervisorProcess) -> bool:
    if handle.proc.poll() is not None:
        raise AssertionError(f"supd exited with {handle.proc.returncode}: {handle.stderr_text()}")
    if not handle.socket.exists():
        return False
    with handle.channel() as channel:
        try:
            pb_grpc.SupervisorStub(channel).List(pb.ListRequest(), timeout=1.0)
        except Exception:
            return False
    return True


@contextlib.contextmanager
def supd_as_pid1(tmp_path: pathlib.Path) -> Iterator[tuple[pb_grpc.SupervisorStub, int]]:
    """supd as PID 1 of a new PID namespace: a stub and supd's PID as seen from here."""
    assert UNSHARE is not None
    socket, stderr_path = tmp_path / "run" / "supd.sock", tmp_path / "supd.stderr"
    with stderr_path.open("wb") as err:
        proc = subprocess.Popen(
            [UNSHARE, "--fork", "--pid", "--mount-proc", "--kill-child", *supd_command(),
             "--socket", str(socket), "--state-dir", str(tmp_path / "state")],
            stdin=subprocess.DEVNULL, stdout=err, stderr=err,
        )
    handle = SupervisorProcess(proc=proc, socket=socket, stderr_path=stderr_path)
    try:
        supd = wait_until(lambda: _one_child_of(proc.pid), 10, what="unshare to fork supd")
        wait_until(lambda: _answers(handle), 15, what="supd to answer")
        with handle.channel() as channel:
            yield pb_grpc.SupervisorStub(channel), supd
        assert "orphan.reaper.started" in handle.stderr_text()
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(supd, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()  # --kill-child: supd follows, and with PID 1 the whole namespace
                proc.wait()


def exit_of(stub: pb_grpc.SupervisorStub, name: str) -> tuple[bool, int]:
    info = stub.Health(pb.HealthRequest(name=name), timeout=5).children[0]
    return info.last_exit.exited, info.last_exit.code


@needs_unshare
def test_pid1_a_double_fork_leaves_no_zombie(tmp_path: pathlib.Path):
    mark = tmp_path / "marks"
    with supd_as_pid1(tmp_path) as (stub, supd):
        spawn(stub, "df", [sys.executable, HELPER, "double-fork", str(mark)])
        wait_state(stub, "df", pb.CHILD_STATE_EXITED)
        assert exit_of(stub, "df") == (True, 0)
        assert len(marks(mark)) == 1
        wait_until(lambda: not zombies_below(supd), 5, what="no zombie in the namespace")


@needs_unshare
def test_pid1_a_thousand_orphans_are_all_reaped_promptly(tmp_path: pathlib.Path):
    mark = tmp_path / "marks"
    with supd_as_pid1(tmp_path) as (stub, supd):
        spawn(stub, "flood", [sys.executable, HELPER, "orphans", "1000", str(mark)])
        most = 0
        deadline = time.monotonic() + 30
        while stub.Health(pb.HealthRequest(name="flood"), timeout=5).children[0].state != pb.CHILD_STATE_EXITED:
            most = max(most, len(zombies_below(supd)))
            assert time.monotonic() < deadline, "the flood did not finish"
        assert exit_of(stub, "flood") == (True, 0)
        assert len(set(marks(mark))) == 1000  # every orphan ran to its end
        started = time.monotonic()
        wait_until(lambda: not zombies_below(supd), 2, what="no zombie left after 1,000 orphans")
        print(f"most zombies seen at once: {most}; none left {time.monotonic() - started:.3f}s after the flood")


@needs_unshare
def test_pid1_200_watched_children_exit_at_once_beside_orphans_and_keep_their_codes(tmp_path: pathlib.Path):
    fifo, ready, mark = tmp_path / "go", tmp_path / "ready", tmp_path / "marks"
    os.mkfifo(fifo)
    hold = os.open(fifo, os.O_RDWR)  # a writer, so that the children's opens do not block; closing it is "go"
    try:
        with supd_as_pid1(tmp_path) as (stub, supd):
            for code in range(1, 201):
                # The child and a background job both wait for EOF on the fifo; the job outlives its
                # parent or becomes its zombie, and is supd's orphan either way.
                script = (f'exec 3<"{fifo}"; sh -c "read x" <&3 >/dev/null 2>&1 & '
                          f'echo >>"{ready}"; read x <&3; exit {code}')
                spawn(stub, f"c{code}", ["sh", "-c", script])
            wait_until(lambda: len(ready.read_text().splitlines()) == 200 if ready.exists() else False, 20,
                       what="200 children waiting on the fifo")
            spawn(stub, "flood", [sys.executable, HELPER, "orphans", "300", str(mark)])
            os.close(hold)
            hold = -1
            for code in range(1, 201):
                wait_state(stub, f"c{code}", pb.CHILD_STATE_EXITED, timeout=20)
            wrong = {code: got for code in range(1, 201) if (got := exit_of(stub, f"c{code}")) != (True, code)}
            assert wrong == {}, f"{len(wrong)} of 200 exit codes wrong"
            wait_state(stub, "flood", pb.CHILD_STATE_EXITED, timeout=20)
            assert exit_of(stub, "flood") == (True, 0)
            wait_until(lambda: not zombies_below(supd), 5, what="no zombie in the namespace")
    finally:
        if hold >= 0:
            os.close(hold)


@needs_unshare
def test_a_pid1_that_never_reaps_leaves_the_zombie_the_checks_look_for(tmp_path: pathlib.Path):
    """The control: the same double fork under a lazy PID 1 leaves one zombie, and zombies_below sees it."""
    assert UNSHARE is not None
    mark = tmp_path / "marks"
    proc = subprocess.Popen([UNSHARE, "--fork", "--pid", "--mount-proc", "--kill-child", sys.executable, HELPER,
                             "lazy-init", sys.executable, HELPER, "double-fork", str(mark)])
    try:
        init = wait_until(lambda: _one_child_of(proc.pid), 10, what="unshare to fork the init")
        wait_until(lambda: len(marks(mark)) == 1, 10, what="the orphan to run")
        # Once the init has waited for its child, the orphan's zombie is all that is left, for good.
        def only_one() -> dict[int, str] | None:
            states = states_below(init)
            return states if len(states) == 1 else None

        left = wait_until(only_one, 10, what="the orphan alone below the init")
        assert list(left.values()) == ["Z"]
    finally:
        proc.kill()
        proc.wait()
