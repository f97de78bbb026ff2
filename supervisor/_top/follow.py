"""The log pane's source: one child's Stream followed in a thread, the last lines kept.

The follower has a channel of its own, so that leaving the pane (``close``)
closes it: gRPC cancels the call in flight and the thread ends, whatever the
Stream was waiting for. A Stream that ends otherwise (the child removed, supd
gone) leaves the reason in ``error``; the pane shows it.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable

from supervisor import _cli_format as fmt
from supervisor.client import Client, Connection
from supervisor.client._records import Line
from supervisor.errors import SupervisorError
from supervisor.v1 import supervisor_pb2 as pb

__all__ = ["Follower", "LogLine"]

LogLine = tuple[str, str]  # (kind, text): kind is "stdout", "stderr", "event" or "gap"


def _entry(name: str, item: Line | pb.Event | pb.Gap) -> LogLine:
    if isinstance(item, Line):
        return item.stream, item.text
    if isinstance(item, pb.Event):
        return "event", fmt.describe_event(name, item).removeprefix("supctl: ")
    return "gap", fmt.describe_gap(name, item).removeprefix("supctl: ")


class Follower:
    """Follows ``name`` from its last ``keep`` lines on; calls ``changed()`` (from its thread) on each record."""

    def __init__(self, connection: Connection, name: str, keep: int, changed: Callable[[], None]) -> None:
        self.name = name
        self.lines: collections.deque[LogLine] = collections.deque(maxlen=keep)
        self.error: str | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._unseen = False  # a change not yet taken by snapshot(): one wake-up per screen, not per line
        self._changed = changed
        self._client = Client(connection)
        self._thread = threading.Thread(target=self._run, args=(keep,), name=f"top-follow-{name}", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"<Follower {self.name} lines={len(self.lines)} closed={self._closed} error={self.error!r}>"

    def _run(self, keep: int) -> None:
        try:
            for item in self._client.follow(self.name, tail=keep, reconnect=0):
                with self._lock:
                    self.lines.append(_entry(self.name, item))
                    wake, self._unseen = not self._unseen, True
                if wake:
                    self._changed()
            ended = "the stream ended (the child was removed, or supd shut down)"
        except SupervisorError as exc:
            ended = f"the stream failed: {exc}"
        with self._lock:
            if not self._closed:
                self.error = ended
        self._changed()

    @property
    def running(self) -> bool:
        """Whether the stream is still followed."""
        return self._thread.is_alive()

    def snapshot(self) -> tuple[list[LogLine], str | None]:
        """The lines kept, oldest first, and why the stream ended (None while it runs)."""
        with self._lock:
            self._unseen = False
            return list(self.lines), self.error

    def close(self) -> None:
        """Cancel the stream and wait (briefly) for the thread to end."""
        with self._lock:
            self._closed = True
        self._client.close()
        self._thread.join(timeout=5.0)
