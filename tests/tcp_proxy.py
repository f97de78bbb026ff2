"""A TCP proxy to a Unix socket that a test can cut and bring back: a real network break, no mock.

``with TcpProxy(socket_path) as proxy:`` listens on ``proxy.address``
(127.0.0.1:PORT); ``proxy.cut()`` closes the listener and every connection
through it (the peers see their sockets closed), ``proxy.resume()`` listens on
the same port again.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType

from supervisor.testing import free_port


class TcpProxy:
    def __init__(self, target: str) -> None:
        self.target = target
        self.port = free_port()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self.accepted = 0  # connections accepted, over every resume

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> TcpProxy:
        self.resume()
        return self

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self.cut()

    def resume(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(16)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            doomed, self._open = self._open, set()
            listener, self._listener = self._listener, None
        for sock in [*doomed, *([listener] if listener else [])]:
            with contextlib.suppress(OSError):  # not connected (the listener) or already closed by the peer
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # cut
            upstream = socket.socket(socket.AF_UNIX)
            upstream.connect(self.target)
            with self._lock:
                if self._listener is not listener:
                    client.close()
                    upstream.close()
                    return
                self._open |= {client, upstream}
                self.accepted += 1
            threading.Thread(target=_pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=_pump, args=(upstream, client), daemon=True).start()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass  # one side was cut: the other pump's socket is closed by cut() too
    finally:
        with contextlib.suppress(OSError):  # already closed
            dst.shutdown(socket.SHUT_WR)
