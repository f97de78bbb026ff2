"""The socket's directory must be supd's own and private; the socket is never reachable by anyone else.

Guards: a ``/tmp/supd-UID`` created beforehand by another user was accepted with a warning about its mode, and
that user could then receive every supctl request; an attacker's 0777 directory with the lock file a symlink to
the victim's file made supd truncate and write that file; a symlinked directory was followed; under umask 000
another user who kept calling connect() got in before the chmod to 0600, and kept full control after it.
"""

from __future__ import annotations

import collections
import contextlib
import grp
import json
import os
import pathlib
import pwd
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator

import anyio
import grpc
import pytest

from supervisor._daemon.api.socket_dir import SocketLock, bind_unix
from supervisor.testing import running_supervisor, supd_command, wait_until

NOBODY = 65534


def run_supd(socket: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*supd_command(), "--socket", str(socket)], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user needs root")
@pytest.mark.parametrize("mode", [0o700, 0o777])
def test_a_directory_of_another_user_is_refused(tmp_path: pathlib.Path, mode: int) -> None:
    directory = tmp_path / "supd-1000"
    directory.mkdir()
    os.chown(directory, NOBODY, NOBODY)
    directory.chmod(mode)
    result = run_supd(directory / "supd.sock")
    assert result.returncode == 3, result.stderr
    assert result.stderr.splitlines()[-1] + "\n" == (
        f"supd: socket directory {directory} belongs to uid {NOBODY}, not to supd's uid 0: another user could"
        " intercept supctl's requests; remove it (supd creates it with mode 0700) or choose another --socket"
        " in a directory of your own\n"
    )
    assert not (directory / "supd.sock").exists() and not (directory / "supd.sock.lock").exists()


def test_a_directory_others_may_enter_is_refused(tmp_path: pathlib.Path) -> None:
    directory = tmp_path / "shared"
    directory.mkdir()
    directory.chmod(0o755)
    result = run_supd(directory / "supd.sock")
    assert result.returncode == 3, result.stderr
    assert result.stderr.splitlines()[-1] + "\n" == (
        f"supd: socket directory {directory} has mode 0755, supd needs 0700 so that only its own user can reach"
        f" or replace the socket: run chmod 700 {directory}, or choose another --socket in a directory of your own\n"
    )


# --- attacks by a second, real user ----------------------------------------------------------------------------------
# Each step an attacker takes runs as the user ``supd-attacker`` (runuser), with the system's /usr/bin/python3: the
# venv's interpreter lives under /root, which other users cannot enter.

ATTACKER = "supd-attacker"
SOCKET_GROUP = "supd-socket"
SYSTEM_PYTHON = "/usr/bin/python3"
# Loops connect() on argv[1] until stdin closes; prints how each attempt ended, as JSON.
CONNECT_LOOP = """
import collections, errno, json, select, socket, sys
seen = collections.Counter()
print("ready", flush=True)
while not select.select([sys.stdin], [], [], 0)[0]:
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(sys.argv[1])
        seen["connected"] += 1
    except OSError as exc:
        seen[errno.errorcode.get(exc.errno, str(exc.errno))] += 1
    finally:
        s.close()
print(json.dumps(seen))
"""


def _ensure(kind: str, name: str, create: list[str]) -> bool:
    """Whether ``name`` had to be created with ``create``."""
    try:
        (pwd.getpwnam if kind == "user" else grp.getgrnam)(name)
        return False
    except KeyError:
        subprocess.run(create, check=True, capture_output=True)
        return True


@pytest.fixture(scope="session")
def attacker() -> Iterator[pwd.struct_passwd]:
    """A second, unprivileged user (created for the session when absent), and the group ``supd-socket``."""
    if os.geteuid() != 0 or shutil.which("runuser") is None or not os.path.exists(SYSTEM_PYTHON):
        pytest.skip("attacks by a second user need root, runuser and /usr/bin/python3")
    made_user = _ensure("user", ATTACKER, ["useradd", "--system", "--no-create-home", "--shell", "/bin/sh", ATTACKER])
    made_group = _ensure("group", SOCKET_GROUP, ["groupadd", "--system", SOCKET_GROUP])
    yield pwd.getpwnam(ATTACKER)
    if made_user:
        subprocess.run(["userdel", ATTACKER], check=True)
    if made_group:
        subprocess.run(["groupdel", SOCKET_GROUP], check=True)


def as_attacker(*argv: str, group: str | None = None) -> subprocess.CompletedProcess[str]:
    extra = ["-g", group] if group else []
    return subprocess.run(["runuser", "-u", ATTACKER, *extra, "--", *argv], capture_output=True, text=True, check=True)


@contextlib.contextmanager
def connecting(path: pathlib.Path) -> Iterator[collections.Counter[str]]:
    """The attacker calls connect() on ``path`` in a loop for as long as the block runs; how the attempts ended."""
    seen: collections.Counter[str] = collections.Counter()
    loop = subprocess.Popen(
        ["runuser", "-u", ATTACKER, "--", SYSTEM_PYTHON, "-c", CONNECT_LOOP, str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    assert loop.stdin is not None and loop.stdout is not None
    assert loop.stdout.readline() == "ready\n"  # connecting before the block starts
    try:
        yield seen
    finally:
        out, _ = loop.communicate("", timeout=30)
        seen.update(json.loads(out))


@pytest.fixture
def shared_tmp() -> Iterator[pathlib.Path]:
    """A directory like /tmp (mode 1777) where the attacker may create entries."""
    path = pathlib.Path(tempfile.mkdtemp(prefix="supd-test-", dir="/tmp"))
    path.chmod(0o1777)
    yield path
    shutil.rmtree(path)


def test_an_attackers_open_directory_with_a_symlinked_lock_is_refused(
    attacker: pwd.struct_passwd, shared_tmp: pathlib.Path
) -> None:
    victim = shared_tmp / "victim.conf"
    victim.write_text("precious\n")
    victim.chmod(0o600)
    directory = shared_tmp / "supd-0"
    as_attacker("sh", "-c", f"mkdir -m 0777 {directory} && ln -s {victim} {directory}/supd.sock.lock")
    result = run_supd(directory / "supd.sock")
    assert result.returncode == 3, result.stderr
    assert f"socket directory {directory} belongs to uid {attacker.pw_uid}, not to supd's uid 0" in result.stderr
    assert victim.read_text() == "precious\n"
    assert sorted(os.listdir(directory)) == ["supd.sock.lock"]


def test_a_symlinked_lock_file_in_our_own_directory_is_not_followed(tmp_path: pathlib.Path) -> None:
    victim = tmp_path / "victim.conf"
    victim.write_text("precious\n")
    directory = tmp_path / "run"
    directory.mkdir(mode=0o700)
    (directory / "supd.sock.lock").symlink_to(victim)
    result = run_supd(directory / "supd.sock")
    assert result.returncode == 3, result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"supd: lock file {directory}/supd.sock.lock is a symbolic link; supd never follows one there: remove it"
    )
    assert victim.read_text() == "precious\n"


def test_a_symlinked_socket_directory_is_refused(attacker: pwd.struct_passwd, shared_tmp: pathlib.Path) -> None:
    target = shared_tmp / "private"
    target.mkdir(mode=0o700)  # supd's own and private: only the link in front of it is the attacker's
    link = shared_tmp / "supd-0"
    as_attacker("ln", "-s", str(target), str(link))
    result = run_supd(link / "supd.sock")
    assert result.returncode == 3, result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"supd: socket directory {link} is a symbolic link (to {target}); supd does not follow it, since whoever"
        " controls the link controls the socket: give --socket the real directory"
    )
    assert os.listdir(target) == []


def test_the_socket_is_never_reachable_before_its_mode_is_set(
    attacker: pwd.struct_passwd, shared_tmp: pathlib.Path
) -> None:
    """Under umask 000 grpcio binds the socket 0777; bound in a private directory it is unreachable until 0600.

    The socket's directory is opened to others (0755) after the lock is taken, so that only the socket's own mode
    and the private bind stand between the attacker and supd; the attacker loops connect() through 50 binds.
    """
    directory = shared_tmp / "run"
    lock = SocketLock(str(directory / "supd.sock"))
    lock.acquire()
    directory.chmod(0o755)
    old_umask = os.umask(0)
    try:
        with connecting(directory / "supd.sock") as seen:
            anyio.run(_bind_and_serve, lock, 50)
    finally:
        os.umask(old_umask)
        lock.release()
    assert seen["connected"] == 0, seen
    assert seen["EACCES"] > 0, f"the attacker never met the published socket: {seen}"


async def _bind_and_serve(lock: SocketLock, times: int) -> None:
    for _ in range(times):
        server = grpc.aio.server()
        publish = bind_unix(server.add_insecure_port, lock.path)
        await server.start()
        publish()
        assert stat.S_IMODE(os.stat(lock.path).st_mode) == 0o600
        await server.stop(None)  # the next publish renames over the socket left in place


def test_supd_started_under_umask_000_never_lets_another_user_in(
    attacker: pwd.struct_passwd, shared_tmp: pathlib.Path
) -> None:
    socket = shared_tmp / "supd-0" / "supd.sock"
    with connecting(socket) as seen:
        for _ in range(2):
            with subprocess.Popen(
                [*supd_command(), "--socket", str(socket), "--state-dir", str(shared_tmp / "state")],
                stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, umask=0,
            ) as proc:
                try:
                    wait_until(lambda: socket.exists() or proc.poll() is not None, 15, what="supd's socket")
                    assert proc.poll() is None, proc.communicate()[1]
                    assert stat.S_IMODE(socket.stat().st_mode) == 0o600
                    assert stat.S_IMODE(socket.parent.stat().st_mode) == 0o700
                finally:
                    proc.terminate()
                    assert proc.wait(30) == 0
    assert seen["connected"] == 0, seen
    assert sorted(os.listdir(socket.parent)) == ["supd.sock.lock"], "no bind directory or socket left behind"


def test_a_socket_group_lets_its_members_in_and_nobody_else(
    attacker: pwd.struct_passwd, shared_tmp: pathlib.Path
) -> None:
    socket = shared_tmp / "run" / "supd.sock"  # where running_supervisor puts it
    connect_once = "import socket, sys; socket.socket(socket.AF_UNIX).connect(sys.argv[1]); print('in')"
    with running_supervisor(shared_tmp, ["--socket-group", SOCKET_GROUP]):
        gid = grp.getgrnam(SOCKET_GROUP).gr_gid
        for path, mode in ((socket, 0o660), (socket.parent, 0o750)):
            st = path.stat()
            assert (stat.S_IMODE(st.st_mode), st.st_gid) == (mode, gid), path
        assert as_attacker(SYSTEM_PYTHON, "-c", connect_once, str(socket), group=SOCKET_GROUP).stdout == "in\n"
        with pytest.raises(subprocess.CalledProcessError) as refused:
            as_attacker(SYSTEM_PYTHON, "-c", connect_once, str(socket))
        assert "PermissionError" in refused.value.stderr


def test_a_socket_group_needs_a_directory_of_that_group(tmp_path: pathlib.Path) -> None:
    directory = tmp_path / "run"
    directory.mkdir(mode=0o700)
    result = subprocess.run(
        [*supd_command(), "--socket", str(directory / "supd.sock"), "--socket-group", "root"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 3, result.stderr
    assert result.stderr.splitlines()[-1] == (
        f"supd: socket directory {directory} has mode 0700 and group root; with --socket-group root supd needs"
        " mode 0750 or 0770 and that group, so that only its own user and the group's members reach the socket:"
        f" run chgrp root {directory} && chmod 750 {directory}"
    )


def test_an_unknown_socket_group_is_refused(tmp_path: pathlib.Path) -> None:
    result = subprocess.run(
        [*supd_command(), "--socket", str(tmp_path / "run" / "supd.sock"), "--socket-group", "no-such-group-x"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 3, result.stderr
    assert result.stderr.splitlines()[-1] == (
        "supd: --socket-group: no group named 'no-such-group-x' on this system; create it or name another"
    )
