"""The listening side: a private socket directory, one supd per socket, the gRPC server.

grpcio silently unlinks and takes over a socket path that a live server still
uses, so the exclusive lock on ``<socket>.lock`` is what makes "one supd per
socket" true: a second supd is refused with the first one's pid, and a stale
socket left by a dead supd is replaced.
"""

from __future__ import annotations

import fcntl
import os
import stat

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from supervisor._daemon.api.limits import ApiLimits, RequestGuard, server_options
from supervisor._daemon.api.service import SupervisorService
from supervisor.paths import MAX_SOCKET_PATH_BYTES
from supervisor.v1 import supervisor_pb2 as pb
from supervisor.v1 import supervisor_pb2_grpc as pb_grpc

__all__ = ["SERVICE_NAME", "SocketError", "SocketLock", "build_server", "check_private_directory"]

log = structlog.get_logger("supd.server")
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Supervisor"].full_name


class SocketError(Exception):
    """The socket cannot be served: path too long, directory unusable, or another supd holds it."""


class SocketLock:
    """Holds ``<socket>.lock`` for as long as supd serves the socket."""

    def __init__(self, socket_path: str) -> None:
        if len(os.fsencode(socket_path)) > MAX_SOCKET_PATH_BYTES:
            raise SocketError(
                f"socket path is {len(os.fsencode(socket_path))} bytes, the kernel allows at most"
                f" {MAX_SOCKET_PATH_BYTES}: choose a shorter --socket path ({socket_path})"
            )
        self.path = socket_path
        self.lock_path = socket_path + ".lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        """Create the 0700 directory, take the lock, clear a stale socket.

        Raises SocketError when the directory cannot be created, is not private
        to supd (see ``check_private_directory``), or another supd holds the lock.
        """
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise SocketError(f"cannot create socket directory {directory}: {exc.strerror}") from exc
        check_private_directory(directory)
        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise SocketError(f"cannot open lock file {self.lock_path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise SocketError(
                f"another supd (pid {holder}) is serving {self.path}; stop it or choose another --socket"
            ) from None
        os.ftruncate(fd, 0)
        written = os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        if written <= 0:
            raise SocketError(f"cannot record our pid in {self.lock_path}")
        self._fd = fd
        if os.path.lexists(self.path):
            log.info("server.socket.stale_replaced", socket=self.path)
            os.unlink(self.path)

    def release(self) -> None:
        """Remove the socket and let go of the lock (the lock file stays: unlinking it would race)."""
        if self._fd is None:
            return
        if os.path.lexists(self.path):
            os.unlink(self.path)
        os.ftruncate(self._fd, 0)  # no dead pid left behind for a `kill $(cat ...)`
        os.close(self._fd)
        self._fd = None


def check_private_directory(directory: str) -> None:
    """Refuse a socket directory that another user owns or that others may enter: SocketError saying what to do.

    Whoever owns the directory (or may write in it) can replace the socket and
    receive every request meant for supd, so it must belong to supd's effective
    uid and have mode 0700 (``/tmp/supd-UID`` created beforehand by another
    user is the case this guards).
    """
    try:
        st = os.stat(directory)
    except OSError as exc:
        raise SocketError(f"cannot inspect socket directory {directory}: {exc.strerror}") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise SocketError(f"socket directory {directory} is not a directory; choose another --socket")
    euid = os.geteuid()
    if st.st_uid != euid:
        raise SocketError(
            f"socket directory {directory} belongs to uid {st.st_uid}, not to supd's uid {euid}: another user could"
            f" intercept supctl's requests; remove it (supd creates it with mode 0700) or choose another --socket"
            f" in a directory of your own"
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise SocketError(
            f"socket directory {directory} has mode {mode:04o}, supd needs 0700 so that only its own user can"
            f" reach or replace the socket: run chmod 700 {directory}, or choose another --socket in a directory"
            f" of your own"
        )


async def build_server(
    service: SupervisorService, socket_path: str, limits: ApiLimits | None = None
) -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
    """A started gRPC server with our service, grpc.health.v1 and reflection, on the socket, within ``limits``."""
    limits = limits or ApiLimits()
    server = grpc.aio.server(options=server_options(limits), interceptors=[RequestGuard(limits)])
    pb_grpc.add_SupervisorServicer_to_server(service, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
        server,
    )
    server.add_insecure_port("unix:" + socket_path)
    await server.start()
    os.chmod(socket_path, 0o600)
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, health_servicer
