"""The Unix socket's directory, its lock and its binding: nobody but supd's user (and a chosen group) gets near it.

The directory is checked with ``lstat`` and then held open (``O_NOFOLLOW``), so
no symlink is followed and the checks stand for the directory used afterwards:
it must belong to supd's effective uid with mode 0700, or with ``--socket-group``
0750/0770 and that group. Whoever owns that directory, or may write in it, can
replace the socket and receive every request meant for supd; whoever may
connect to the socket has all of supd's rights.

grpcio silently unlinks and takes over a socket path that a live server still
uses, so the exclusive lock on ``<socket>.lock`` (opened with ``O_NOFOLLOW``,
a regular file of ours) is what makes "one supd per socket" true: a second supd
is refused with the first one's pid, and a stale socket left by a dead supd is
replaced.

grpcio binds in its own threads with the process umask, and the umask is
process-wide (children started at that moment would inherit a changed one), so
the socket is bound instead inside ``<socket>.tmp``, a 0700 directory of its
own, given its mode (and group), and then renamed into place: at no moment can
anyone else connect to it with looser permissions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import grp
import os
import stat
from collections.abc import Callable

import structlog

from supervisor.paths import MAX_SOCKET_PATH_BYTES

__all__ = ["SocketError", "SocketLock", "bind_unix", "check_private_directory"]

log = structlog.get_logger("supd.server")
# The directory the socket is bound in before it is renamed into place, beside the socket; the socket inside it.
BIND_SUFFIX = ".tmp"
BIND_NAME = "s"


class SocketError(Exception):
    """The socket cannot be served: path too long, directory unusable, or another supd holds it."""


@dataclasses.dataclass(frozen=True)
class Access:
    """Who may reach the socket: supd's user, and the members of ``gid`` when one is configured."""

    gid: int | None = None
    group: str = ""

    @property
    def socket_mode(self) -> int:
        return 0o600 if self.gid is None else 0o660


def resolve_group(group: str) -> Access:
    """The Access of ``--socket-group``: a group name or number ("" for none). Raises SocketError if unknown."""
    if not group:
        return Access()
    try:
        entry = grp.getgrgid(int(group)) if group.isdigit() else grp.getgrnam(group)
    except (KeyError, ValueError, OverflowError):
        raise SocketError(f"--socket-group: no group named {group!r} on this system; create it or name another") \
            from None
    return Access(entry.gr_gid, entry.gr_name)


# The locks this process holds, by socket path: bind_unix finds there who may reach the socket it binds.
_held: dict[str, SocketLock] = {}


class SocketLock:
    """Holds ``<socket>.lock`` (and the directory, open) for as long as supd serves the socket."""

    def __init__(self, socket_path: str, group: str = "") -> None:
        self.path = os.path.abspath(socket_path)
        self.directory, self.name = os.path.split(self.path)
        self.lock_path = self.path + ".lock"
        self.bind_path = os.path.join(self.path + BIND_SUFFIX, BIND_NAME)
        size = len(os.fsencode(self.bind_path))
        if max(size, len(os.fsencode(self.path))) > MAX_SOCKET_PATH_BYTES:
            raise SocketError(
                f"socket path is {len(os.fsencode(socket_path))} bytes; supd binds it first as {self.bind_path}"
                f" ({size} bytes) and the kernel allows at most {MAX_SOCKET_PATH_BYTES}: choose a shorter --socket"
                f" path ({socket_path})"
            )
        self.group = group
        self.access = Access()
        self._fd: int | None = None
        self._dir_fd: int | None = None

    def __repr__(self) -> str:
        return f"<SocketLock {self.path} {'held' if self._fd is not None else 'free'} group={self.group or '-'}>"

    def acquire(self) -> None:
        """Create the private directory if needed, check it, take the lock, clear a stale socket.

        Raises SocketError when the group is unknown, the directory cannot be
        created or is not private to supd (see ``check_private_directory``),
        the lock file is not a regular file of supd's user, or another supd
        holds the lock.
        """
        self.access = resolve_group(self.group)
        dir_fd = _open_private_directory(self.directory, self.access)
        try:
            fd = _open_lock(self.lock_path, self.name + ".lock", dir_fd)
        except BaseException:
            os.close(dir_fd)
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            os.close(dir_fd)
            raise SocketError(
                f"another supd (pid {holder}) is serving {self.path}; stop it or choose another --socket"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd, self._dir_fd = fd, dir_fd
        if _unlink(self.name, dir_fd):
            log.info("server.socket.stale_replaced", socket=self.path)
        self._clear_bind_directory()
        _held[self.path] = self

    def release(self) -> None:
        """Remove the socket and let go of the lock (the lock file stays: unlinking it would race)."""
        if self._fd is None or self._dir_fd is None:
            return
        _held.pop(self.path, None)
        _unlink(self.name, self._dir_fd)
        self._clear_bind_directory()
        os.ftruncate(self._fd, 0)  # no dead pid left behind for a `kill $(cat ...)`
        os.close(self._fd)
        os.close(self._dir_fd)
        self._fd = self._dir_fd = None

    def prepare_bind(self) -> str:
        """A fresh 0700 ``<socket>.tmp`` directory; the path to bind in it."""
        assert self._dir_fd is not None, "prepare_bind before acquire"
        self._clear_bind_directory()
        os.mkdir(self.name + BIND_SUFFIX, 0o700, dir_fd=self._dir_fd)
        return self.bind_path

    def publish(self) -> None:
        """Give the bound socket its mode (and group) inside the private directory, then rename it into place."""
        assert self._dir_fd is not None, "publish before acquire"
        bound = os.path.join(self.name + BIND_SUFFIX, BIND_NAME)
        os.chmod(bound, self.access.socket_mode, dir_fd=self._dir_fd)
        if self.access.gid is not None:
            os.chown(bound, -1, self.access.gid, dir_fd=self._dir_fd, follow_symlinks=False)
        os.rename(bound, self.name, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)
        self._clear_bind_directory()

    def _clear_bind_directory(self) -> None:
        """Remove ``<socket>.tmp`` and the socket bound in it, left by a failed or killed start."""
        assert self._dir_fd is not None
        name = self.name + BIND_SUFFIX
        _unlink(os.path.join(name, BIND_NAME), self._dir_fd)
        with contextlib.suppress(FileNotFoundError):
            os.rmdir(name, dir_fd=self._dir_fd)


def bind_unix(add_port: Callable[[str], object], socket_path: str) -> Callable[[], None]:
    """Bind with ``add_port("unix:...")`` in the lock's private directory; the function that publishes the socket.

    Call the returned function once the server has started: the socket gets
    mode 0600 (0660 and its group with ``--socket-group``) and is renamed to
    ``socket_path``. Raises SocketError when no SocketLock of this process
    holds ``socket_path``.
    """
    lock = _held.get(os.path.abspath(socket_path))
    if lock is None:
        raise SocketError(f"{socket_path}: take its SocketLock before binding it")
    add_port("unix:" + lock.prepare_bind())
    return lock.publish


def _unlink(path: str, dir_fd: int) -> bool:
    """Remove ``path`` (relative to ``dir_fd``) if it exists; whether it did."""
    try:
        os.unlink(path, dir_fd=dir_fd)
    except FileNotFoundError:
        return False
    return True


def _open_private_directory(directory: str, access: Access) -> int:
    """Create ``directory`` (0700, or 0750 of the group) unless it exists, check it, and open it without following."""
    parent = os.path.dirname(directory)
    try:
        os.makedirs(parent, exist_ok=True)
        os.mkdir(directory, 0o700)
        if access.gid is not None:
            os.chown(directory, -1, access.gid, follow_symlinks=False)
            os.chmod(directory, 0o750)
    except FileExistsError:
        pass  # checked below, whoever made it
    except OSError as exc:
        raise SocketError(f"cannot create socket directory {directory}: {exc.strerror}") from exc
    seen = check_private_directory(directory, access)
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise SocketError(f"cannot open socket directory {directory}: {exc.strerror}") from exc
    opened = os.fstat(fd)
    if (opened.st_dev, opened.st_ino) != (seen.st_dev, seen.st_ino):
        os.close(fd)
        raise SocketError(f"socket directory {directory} was replaced while supd checked it; start supd again")
    return fd


def _open_lock(lock_path: str, name: str, dir_fd: int) -> int:
    """Open (or create, 0600) the lock file without following a symlink; refuse anything but a regular file of ours."""
    try:
        fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, 0o600, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise SocketError(
                f"lock file {lock_path} is a symbolic link; supd never follows one there: remove it"
            ) from None
        raise SocketError(f"cannot open lock file {lock_path}: {exc.strerror}") from exc
    st = os.fstat(fd)
    euid = os.geteuid()
    if not stat.S_ISREG(st.st_mode) or st.st_uid != euid:
        os.close(fd)
        what = "is not a regular file" if not stat.S_ISREG(st.st_mode) else f"belongs to uid {st.st_uid}"
        raise SocketError(f"lock file {lock_path} {what}, supd needs a regular file of uid {euid}: remove it")
    return fd


def check_private_directory(directory: str, access: Access = Access()) -> os.stat_result:
    """Refuse a socket directory that is a symlink, another user's, or open to others: SocketError saying what to do.

    Whoever owns the directory (or may write in it) can replace the socket and
    receive every request meant for supd, so it must belong to supd's effective
    uid with mode 0700, or, with ``--socket-group``, 0750 or 0770 and that group
    (``/tmp/supd-UID`` created beforehand by another user is the case this
    guards). Returns the directory's ``lstat``.
    """
    try:
        st = os.lstat(directory)
    except OSError as exc:
        raise SocketError(f"cannot inspect socket directory {directory}: {exc.strerror}") from exc
    if stat.S_ISLNK(st.st_mode):
        raise SocketError(
            f"socket directory {directory} is a symbolic link (to {os.readlink(directory)}); supd does not follow"
            f" it, since whoever controls the link controls the socket: give --socket the real directory"
        )
    if not stat.S_ISDIR(st.st_mode):
        raise SocketError(f"socket directory {directory} is not a directory; choose another --socket")
    euid = os.geteuid()
    if st.st_uid != euid:
        raise SocketError(
            f"socket directory {directory} belongs to uid {st.st_uid}, not to supd's uid {euid}: another user could"
            f" intercept supctl's requests; remove it (supd creates it with mode 0700) or choose another --socket"
            f" in a directory of your own"
        )
    mode = stat.S_IMODE(st.st_mode) & 0o777
    if access.gid is None and mode & 0o077:
        raise SocketError(
            f"socket directory {directory} has mode {mode:04o}, supd needs 0700 so that only its own user can"
            f" reach or replace the socket: run chmod 700 {directory}, or choose another --socket in a directory"
            f" of your own"
        )
    if access.gid is not None and (st.st_gid != access.gid or mode not in (0o750, 0o770)):
        raise SocketError(
            f"socket directory {directory} has mode {mode:04o} and group {_group_name(st.st_gid)}; with"
            f" --socket-group {access.group} supd needs mode 0750 or 0770 and that group, so that only its own"
            f" user and the group's members reach the socket: run chgrp {access.group} {directory} && chmod 750"
            f" {directory}"
        )
    return st


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)
