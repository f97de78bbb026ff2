"""Descendants that left the child's session with ``setsid`` are still the child's: Stop and the clean-up reach them.

They carry the marks supd gives every child (SUPD_INSTANCE, SUPD_CHILD) in their inherited environment; a
process without those marks, in a session of its own, is never touched.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from supervisor.v1 import supervisor_pb2 as pb
from supervisor.v1 import supervisor_pb2_grpc as pb_grpc

from conftest import process_gone, spawn, wait_for

# The grandchild leaves the session, ignores SIGTERM, and writes its pid where the test can read it.
ESCAPE = "setsid sh -c 'trap \"\" TERM; echo $$ > {pidfile}; exec sleep 1000' & echo ready; wait"


def test_stop_reaches_a_descendant_that_called_setsid(stub: pb_grpc.SupervisorStub, tmp_path) -> None:
    pidfile = tmp_path / "escapee"
    spawn(stub, "runner", ["/bin/sh", "-c", ESCAPE.format(pidfile=pidfile)], stop_grace_seconds=0.5)
    pid = wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() and int(pidfile.read_text()), 10,
                   what="the escapee's pid")
    assert os.getsid(pid) == pid, "the escapee leads a session of its own"
    stopped = stub.Stop(pb.StopRequest(name="runner"), timeout=30)
    assert process_gone(pid), "the escapee ignoring SIGTERM was killed after the grace"
    assert stopped.exit.killed_after_grace or "SIGKILL" in stopped.exit.description


def test_the_cleanup_after_an_exit_reaches_escapees_but_not_strangers(stub: pb_grpc.SupervisorStub, tmp_path) -> None:
    stranger = subprocess.Popen(["sleep", "1000"], start_new_session=True)  # no marks: never supd's
    try:
        pidfile = tmp_path / "escapee"
        script = f"setsid sh -c 'echo $$ > {pidfile}; exec sleep 1000' & sleep 0.2; exit 0"
        spawn(stub, "daemonizer", ["/bin/sh", "-c", script], stop_grace_seconds=1)
        pid = wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() and int(pidfile.read_text()), 10,
                       what="the escapee's pid")
        wait_for(lambda: stub.Health(pb.HealthRequest(name="daemonizer"), timeout=5).children[0].state
                 == pb.CHILD_STATE_EXITED, 20, what="the exit to be reported")
        assert process_gone(pid), "what the child left behind was stopped before its exit was reported"
        assert stranger.poll() is None, "a process without supd's marks is never touched"
    finally:
        stranger.kill()
        stranger.wait()


def _cgroup2_writable() -> bool:
    from supervisor._daemon.children.cgroups import _own_cgroup_dir

    base = _own_cgroup_dir()
    return base is not None and os.access(base, os.W_OK)


@pytest.mark.skipif(not _cgroup2_writable(), reason="no writable cgroup2 hierarchy here: the marks are all there is")
def test_a_descendant_that_cleared_its_environment_is_still_caught_by_the_cgroup(
    stub: pb_grpc.SupervisorStub, tmp_path
) -> None:
    pidfile = tmp_path / "escapee"
    # It forks a moment after its start: the move into the cgroup happens right after exec, and a process forked
    # before that instant is outside (the session and the marks still cover that case).
    script = (
        f"sleep 0.3; setsid env -i /bin/sh -c 'trap \"\" TERM; echo $$ > {pidfile}; exec sleep 1000' & echo ready; wait"
    )
    spawn(stub, "wiper", ["/bin/sh", "-c", script], stop_grace_seconds=0.5)
    pid = wait_for(lambda: pidfile.exists() and pidfile.read_text().strip() and int(pidfile.read_text()), 10,
                   what="the escapee's pid")
    with open(f"/proc/{pid}/environ", "rb") as f:
        assert b"SUPD_INSTANCE" not in f.read(), "no marks: only the cgroup knows it is the child's"
    with open(f"/proc/{pid}/cgroup") as f:
        assert "supd-" in f.read()
    stub.Stop(pb.StopRequest(name="wiper"), timeout=30)
    assert wait_for(lambda: process_gone(pid), 10, what="the escapee to be gone")


@pytest.mark.skipif(not _cgroup2_writable(), reason="no writable cgroup2 hierarchy here")
def test_supd_leaves_no_cgroup_behind(tmp_path) -> None:
    from supervisor.testing import running_supervisor

    with running_supervisor(tmp_path) as sup:
        child = spawn(sup.stub(), "c", ["sleep", "100"])
        with open(f"/proc/{child.pid}/cgroup") as f:
            path = next(line.strip()[3:] for line in f if line.startswith("0::"))
    from supervisor._daemon.children.cgroups import _own_cgroup_dir

    base = _own_cgroup_dir()
    assert base is not None and "supd-" in path
    root = os.path.dirname(os.path.join(base, path.lstrip("/")))
    assert not os.path.exists(root), f"{root} is left behind after a clean exit"
