"""The interactive ``supctl top``: keys on the main thread, supd's answers from worker threads.

The main thread waits (``select``) on the keyboard and on a wake-up pipe, and
is the only one that changes what is shown. A poller thread asks supd for
Health every interval; each Restart or Stop runs in a thread of its own; the
log pane's Stream runs in the follower's. They hand their results over a queue
and write one byte to the pipe, so the screen changes as soon as something
happens, with no polling clock of its own.

When supd goes away the view says so above the last table it had and the
poller keeps asking every interval; the table comes back when supd answers.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import os
import queue
import select
import threading
import time
from typing import TYPE_CHECKING

from rich.console import Console, RenderableType
from rich.live import Live

from supervisor import _cli_format as fmt
from supervisor._cli_errors import rpc_failure
from supervisor._top import control, terminal, view
from supervisor._top.follow import Follower
from supervisor._top.model import Row, Sample, header_line, line_rates, rows_of
from supervisor.client._errors import rpc_error_of
from supervisor.errors import SupervisorError
from supervisor.v1 import supervisor_pb2 as pb

if TYPE_CHECKING:
    from supervisor.client import Client

__all__ = ["run_interactive"]

LOG_LINES_KEPT = 1000


@dataclasses.dataclass(frozen=True, slots=True)
class _Answer:
    """A Health answer and when (monotonic) it came."""

    at: float
    health: pb.HealthResponse


@dataclasses.dataclass(frozen=True, slots=True)
class _Down:
    """A failed Health call, in the words supctl uses for it."""

    message: str


@dataclasses.dataclass(frozen=True, slots=True)
class _Status:
    """The outcome of a Restart or Stop, for the status line."""

    text: str


def _failure_text(exc: SupervisorError, command: str, name: str | None, address: str) -> str:
    cause = rpc_error_of(exc)
    if cause is None:
        return exc.message
    return rpc_failure(cause, argparse.Namespace(command_name=command, name=name), address, None).message


class _Top:
    def __init__(self, supd: Client, interval: float, console: Console) -> None:
        self.supd, self.interval, self.console = supd, interval, console
        self.address = supd.connection.address
        self.inbox: queue.SimpleQueue[_Answer | _Down | _Status | None] = queue.SimpleQueue()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        self.poke = threading.Event()  # refresh now (after a request), or stop (with self.done)
        self.done = False
        self._pipe_lock = threading.Lock()  # the pipe is closed once, under it; no write after
        self.view = control.View()
        self.rows: list[Row] = []
        self.header = f"supd at {self.address}: waiting for the first answer"
        self.problem: str | None = None
        self.status = ""
        self.sample: Sample | None = None
        self.follower: Follower | None = None

    def post(self, item: _Answer | _Down | _Status | None) -> None:
        """Hand ``item`` to the main thread and wake it; nothing once the view is closed."""
        with self._pipe_lock:
            if self.done:
                return
            self.inbox.put(item)
            with contextlib.suppress(BlockingIOError):  # a full pipe wakes the main thread all the same
                os.write(self.wake_w, b"\0")

    def poll(self) -> None:
        """The poller thread: Health every interval, or at once when poked."""
        while not self.done:
            try:
                self.post(_Answer(time.monotonic(), self.supd.health()))
            except SupervisorError as exc:
                self.post(_Down(_failure_text(exc, "top", None, self.address)))
            self.poke.wait(self.interval)
            self.poke.clear()

    def request(self, req: control.Restart | control.Stop) -> None:
        """A request thread: Restart or Stop one child, then say how it went and refresh."""
        command = "restart" if isinstance(req, control.Restart) else "stop"
        try:
            if isinstance(req, control.Restart):
                child = self.supd.restart(req.name)
                text = f"restart {req.name}: {fmt.state_name(child.state)}, pid {child.pid or '-'}, " + (
                    f"generation {child.generation}"
                )
                if why := child.last_start_error or child.fatal_reason:  # BACKOFF or FATAL: the start failed
                    text += f": {why}"
            else:
                resp = self.supd.stop(req.name)
                how = fmt.describe_exit(resp.exit) if resp.HasField("exit") else "was not running"
                text = f"stop {req.name}: {fmt.state_name(resp.child.state)} ({how})"
        except SupervisorError as exc:
            text = _failure_text(exc, command, req.name, self.address)
        self.post(_Status(text))
        self.poke.set()

    def take(self, item: _Answer | _Down | _Status | None) -> None:
        if isinstance(item, _Answer):
            now = Sample.of(item.at, item.health.children)
            self.rows = rows_of(item.health.children, line_rates(self.sample, now))
            self.sample, self.problem = now, None
            self.header = header_line(self.address, item.health, datetime.datetime.now().astimezone())
            self.view = dataclasses.replace(self.view, cursor=self.view.cursor.settle([r.name for r in self.rows]))
        elif isinstance(item, _Down):
            self.problem = f"{item.message}; retrying every {self.interval:g}s"
        elif isinstance(item, _Status):
            self.status = item.text

    def key(self, key: str) -> bool:
        """Carry out one key; False when it quits."""
        self.view, req = control.press(self.view, key, [r.name for r in self.rows])
        if isinstance(req, control.Quit):
            return False
        if isinstance(req, control.Restart | control.Stop):
            verb = "restarting" if isinstance(req, control.Restart) else "stopping"
            self.status = f"{verb} {req.name}..."
            threading.Thread(target=self.request, args=(req,), name=f"top-{verb}", daemon=True).start()
        elif isinstance(req, control.Follow):
            self.follower = Follower(self.supd.connection, req.name, LOG_LINES_KEPT, lambda: self.post(None))
        elif isinstance(req, control.Unfollow):
            self._unfollow()
        return True

    def _unfollow(self) -> None:
        if self.follower is not None:
            self.follower.close()
            self.follower = None

    def screen(self) -> RenderableType:
        if self.view.mode is control.Mode.LOGS and self.follower is not None:
            lines, error = self.follower.snapshot()
            return view.logs_screen(self.follower.name, lines, error, self.console.size.height)
        return view.table_screen(self.header, self.rows, self.view, self.problem, self.status, console=self.console)

    def run(self, keyboard: int) -> int:
        poller = threading.Thread(target=self.poll, name="top-poll", daemon=True)
        poller.start()
        try:
            with terminal.cbreak(keyboard), Live(console=self.console, screen=True, auto_refresh=False) as live:
                while True:
                    live.update(self.screen(), refresh=True)
                    ready, _, _ = select.select([keyboard, self.wake_r], [], [])
                    if self.wake_r in ready:
                        os.read(self.wake_r, 4096)
                        while not self.inbox.empty():
                            self.take(self.inbox.get_nowait())
                    if keyboard in ready:
                        data = os.read(keyboard, 1024)
                        if not data or not all(self.key(k) for k in terminal.decode(data)):
                            return 0
        finally:
            self._unfollow()
            with self._pipe_lock:
                self.done = True
                os.close(self.wake_r)
                os.close(self.wake_w)
            self.poke.set()
            poller.join(timeout=1.0)  # a Health call in flight ends by its deadline; the thread is a daemon


def run_interactive(supd: Client, interval: float, keyboard: int) -> int:
    """Show the live view until ``q`` (returns 0); ``keyboard`` is the terminal's file descriptor."""
    return _Top(supd, interval, Console(highlight=False)).run(keyboard)
