"""One process: spawn errors that name the real cause, exits described one way, pidfd discipline."""

from __future__ import annotations

import os
import pathlib
import signal

import pytest

from supervisor._daemon.children.exits import describe_exit, finish_exit
from supervisor._daemon.children.process import (
    PidfdUnavailable,
    Process,
    SpawnError,
    check_pidfd_support,
)
from supervisor._daemon.children.sessions import read_stat
from supervisor._daemon.output.records import ExitRecord
from supervisor.spec import ChildSpec
from supervisor.testing import wait_until


def spec(*argv: str, cwd: str = "") -> ChildSpec:
    return ChildSpec(name="p", argv=argv, cwd=cwd)


def spawn(s: ChildSpec) -> Process:
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        return Process.spawn(s, w, w)
    finally:
        os.close(r)
        os.close(w)


def test_a_missing_program_is_named():
    with pytest.raises(SpawnError, match=r"program '/nonexistent/prog' not found$"):
        spawn(spec("/nonexistent/prog"))


def test_a_missing_interpreter_is_named_not_the_script(tmp_path: pathlib.Path):
    script = tmp_path / "run.sh"
    script.write_text("#!/no/such/shell -e\necho hi\n")
    script.chmod(0o755)
    with pytest.raises(SpawnError, match=r"interpreter '/no/such/shell' named on the #! line of .*run.sh"):
        spawn(spec(str(script)))


def test_a_missing_working_directory_is_named(tmp_path: pathlib.Path):
    gone = tmp_path / "gone"
    with pytest.raises(SpawnError, match=r"working directory '.*/gone' does not exist"):
        spawn(spec("/bin/true", cwd=str(gone)))


def test_a_script_without_execute_permission_says_so(tmp_path: pathlib.Path):
    script = tmp_path / "noexec.sh"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o644)
    with pytest.raises(SpawnError, match="Permission denied"):
        spawn(spec(str(script)))


def test_no_pidfd_support_names_the_kernel_feature(monkeypatch: pytest.MonkeyPatch):
    # A kernel older than 5.3 or a seccomp profile without pidfd_open cannot be staged here.
    def enosys(pid: int) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", enosys)
    with pytest.raises(PidfdUnavailable, match=r"ENOSYS.*Linux 5.3 or later.*pidfd_open"):
        check_pidfd_support()


def test_a_leader_reaped_elsewhere_pins_no_group_and_is_gone():
    proc = spawn(spec("/bin/sleep", "1000"))
    os.kill(proc.pid, signal.SIGKILL)
    os.waitpid(proc.pid, 0)  # another reaper took it: its pid and group id are free for reuse
    assert proc.exit_ready()
    assert proc.signal_group(signal.SIGTERM) is False  # no killpg on an id that may be a stranger's
    record = proc.reap()
    assert record.collected_elsewhere and record.failed
    assert proc.signal(signal.SIGTERM) is False


def test_a_zombie_leader_still_pins_its_group():
    proc = spawn(spec("/bin/sh", "-c", "exit 3"))
    wait_until(proc.exit_ready, what="the child to exit")
    member = read_stat(proc.pid)
    assert member is not None and member.zombie
    assert proc.signal_group(0) is True  # unreaped: the group id is still ours
    record = proc.reap()
    assert record.exited and record.code == 3 and read_stat(proc.pid) is None


def test_exit_descriptions():
    base = ExitRecord(pid=1, exited=False, code=0, signal=int(signal.SIGKILL), core_dumped=False, time_ns=0)
    assert describe_exit(base) == "killed by SIGKILL"
    assert describe_exit(base, killed_after_grace=2) == "killed by SIGKILL after 2s grace"
    term = ExitRecord(pid=1, exited=False, code=0, signal=int(signal.SIGTERM), core_dumped=False, time_ns=0)
    # The leader ended on SIGTERM; only a leftover needed SIGKILL: say so, do not blame the leader.
    assert describe_exit(term, killed_after_grace=2, leftovers_killed=1) == (
        "killed by SIGTERM; 1 leftover process of its session killed by SIGKILL after 2s grace"
    )
    code = ExitRecord(pid=1, exited=True, code=0, signal=0, core_dumped=False, time_ns=0)
    assert describe_exit(code, leftovers_killed=2).endswith("2 leftover processes of its session killed by SIGKILL")
    done = finish_exit(term, 4, requested=True, grace=2, leader_killed=False, leftovers_killed=1)
    assert done.generation == 4 and done.requested and done.killed_after_grace and "leftover" in done.description
