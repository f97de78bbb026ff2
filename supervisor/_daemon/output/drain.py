"""Always-on draining of every child's pipes, on threads of their own, never on the event loop.

Seed 01 is why this exists: a pipe nobody reads fills up and freezes the child
while it looks alive. Every pipe is read from the moment of spawn, in chunks of
up to ``READ_SIZE``, whether or not a client listens; what is read goes straight to
the ring and the sinks, none of which may block.

A ``Poller`` thread waits in ``epoll`` on its pipes and reads each ready pipe
once per turn (the GIL is released in both), so the gRPC event loop never
spends time on a child's output: a flood costs the control plane only the GIL
time of turning reads into records. With the C core (native.py), the read, the
line count and the cutting run without the GIL in one call, so supd runs
``DRAIN_THREADS`` pollers (each new pipe goes to the one with the fewest) and
they drain in parallel; the pure-Python path holds the GIL while it counts, so
one poller is all it can use. A ``PipeDrain`` is one pipe:
its lock is held while a read is being cut and emitted, so ``abandon`` (from
the event loop) never interleaves with the poller on the same pipe. Starting
the poller lowers CPython's switch interval to ``SWITCH_INTERVAL`` (0.5 ms,
from 5 ms), so the event loop waits at most that long for the GIL after each
of its own system calls while the poller is busy.

Bytes after the last newline are held; when a pipe stays quiet for
``QUIET_SECONDS`` with bytes held, they are emitted as a partial record (no
newline: the next record of that stream continues it), so a prompt written
without a newline is seen while the child waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import select
import sys
import threading
import time
from collections.abc import Callable

import structlog

from supervisor._daemon.output import native
from supervisor._daemon.output.lines import LineAssembler
from supervisor._daemon.output.records import line_count

__all__ = ["PIPE_SIZE", "QUIET_SECONDS", "READ_SIZE", "LineAssembler", "PipeDrain", "Poller", "make_pipe"]

# Bytes per read at most. Measured with 10 children flooding on 2 cores: 512 KiB against 1 MiB halved the
# writes that stalled over 10 ms (and the longest stall from about 50 to 40 ms) at the same bytes/s, for
# about 6% more CPU; 256 KiB cost 20% more CPU for little more.
READ_SIZE = 512 * 1024
PIPE_SIZE = 1 << 20
QUIET_SECONDS = 0.2
SWITCH_INTERVAL = 0.0005
# A read at least this big means the pipe was filling up: the poller is behind (see ``Poller.behind``).
BEHIND_BYTES = 256 * 1024
log = structlog.get_logger("supd.drain")
# Poller threads: two where the C core reads and cuts without the GIL (one per core on the 2-core machines
# measured: 10 children flooding drained 1.1 GB/s with one, 1.6 GB/s with two), else one;
# ``SUPD_DRAIN_THREADS=N`` overrides it.
DRAIN_THREADS = int(
    os.environ.get("SUPD_DRAIN_THREADS") or (min(2, os.cpu_count() or 1) if native.core is not None else 1)
)

# Takes the parts of one read as LineAssembler returns them, and the lines in each; called on the poller thread.
Emit = Callable[[list[bytes], list[int]], None]


def make_pipe() -> tuple[int, int]:
    """A close-on-exec pipe enlarged where the kernel allows: (read_fd, write_fd).

    An unprivileged user past its pipe quota keeps the default (as small as
    4 KiB); the drain stays correct then, it just wakes up more often.
    Raises OSError when no pipe can be made.
    """
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        fcntl.fcntl(r, fcntl.F_SETPIPE_SZ, PIPE_SIZE)  # the kernel may round up: never smaller
    except OSError as exc:
        size = fcntl.fcntl(r, fcntl.F_GETPIPE_SZ)
        log.warning("drain.pipe.small", size=size, wanted=PIPE_SIZE, error=exc.strerror)
    os.set_blocking(r, False)
    return r, w


class PipeDrain:
    """Reads one pipe on the poller thread until EOF, handing each read's records to ``emit``.

    ``emit(parts, counts)`` runs on the poller thread (or on the caller's thread during
    ``abandon``), with this drain's lock held, and must not block.
    ``on_read(n)`` is told the bytes of every read. ``await wait_done()``
    returns once EOF was reached and the last record (the unterminated line
    included) was emitted; ``done`` says the same without waiting. Construct
    it on the event loop's thread.
    """

    def __init__(
        self,
        fd: int,
        max_line: int,
        emit: Emit,
        label: str,
        read_size: int = READ_SIZE,
        *,
        on_read: Callable[[int], None] | None = None,
        poller: Poller | None = None,
        start: bool = True,
    ) -> None:
        self.fd = fd
        self.read_size = read_size
        self.label = label
        self.bytes_read = 0
        self.last_read = 0  # bytes of the latest read (0 when none)
        self._emit = emit
        self._on_read = on_read
        self._assembler = LineAssembler(max_line)
        self._lock = threading.Lock()
        self._done = False
        self._quiet_since = 0.0  # monotonic time of the last read while bytes are held
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._done_event = asyncio.Event()
        self._poller = poller or Poller.default()
        self._started = False
        if start:
            self.start()

    def __repr__(self) -> str:
        return f"<PipeDrain {self.label} fd={self.fd} read={self.bytes_read}{' eof' if self._done else ''}>"

    def start(self) -> None:
        """Begin reading (once; made with ``start=False``, nothing is read before this)."""
        with self._lock:
            if self._started or self._done:
                return
            self._started = True
            self._poller.register(self)

    @property
    def done(self) -> bool:
        """True once the pipe reached EOF (or was abandoned) and everything read was emitted."""
        return self._done

    async def wait_done(self) -> None:
        """Return once ``done``."""
        await self._done_event.wait()

    def on_ready(self, buf: bytearray) -> bool:
        """Poller thread: read once and emit; True when bytes are now held without a newline.

        Every record is allocated at its exact size. The C core asks the pipe how much it holds (FIONREAD)
        and reads straight into a bytes object of that size; the Python path reads into the poller's one
        buffer ``buf`` and copies out. (Reading into a fresh 1 MiB bytes object and shrinking it left
        supd's resident set at 1.2-1.3x its rings' bytes, from heap fragmentation, against 1.01x.)
        """
        self.last_read = 0
        with self._lock:
            if self._done:
                return False
            try:
                n, parts, counts = self._assembler.read(self.fd, buf, self.read_size)
            except BlockingIOError:
                return self._assembler.held > 0
            except OSError as exc:
                # EIO and friends: the pipe is unusable; end it like EOF, but say so.
                log.error(
                    "drain.read.failed", pipe=self.label, errno=errno.errorcode.get(exc.errno or 0), error=str(exc)
                )
                n = 0
            if not n:
                try:
                    self._finish()
                finally:  # done even if emitting the tail failed: nobody waits for this pipe in vain
                    self._loop_call(self._done_event.set)
                return False
            self.bytes_read += n
            self.last_read = n
            if self._on_read is not None:
                self._on_read(n)
            if parts:
                self._emit(parts, counts)
            if self._assembler.held:
                self._quiet_since = time.monotonic()
                return True
            return False

    def quiet_due(self) -> float:
        """Monotonic time at which held bytes become a partial record."""
        return self._quiet_since + QUIET_SECONDS

    def flush_quiet(self, now: float) -> bool:
        """Poller thread: emit held bytes if the pipe was quiet long enough; True while bytes stay held."""
        with self._lock:
            if self._done or not self._assembler.held:
                return False
            if now < self._quiet_since + QUIET_SECONDS:
                return True
            parts = self._assembler.flush_partial()
            if parts:
                self._emit(parts, [line_count(p) for p in parts])
            if self._assembler.held:
                self._quiet_since = now  # part of a UTF-8 character: one more quiet period, then it goes too
                return True
            return False

    def _finish(self) -> None:
        """Lock held: stop reading, close the fd, emit the held tail, mark done."""
        self._done = True
        self._poller.unregister(self)
        os.close(self.fd)
        parts = self._assembler.finish()
        if parts:
            self._emit(parts, [line_count(p) for p in parts])

    def _loop_call(self, callback: Callable[[], object]) -> None:
        try:
            self._loop.call_soon_threadsafe(callback)
        except RuntimeError:  # the loop is closed: supd is exiting and nobody waits any more
            log.debug("drain.loop.closed", pipe=self.label)

    def abandon(self) -> None:
        """Stop reading now (the child is removed, supd exits, or reading failed): emit the held tail, close the fd.

        Called on the event loop's thread, or on the poller's after a failure.
        """
        with self._lock:
            if self._done:
                return
            try:
                self._finish()
            finally:  # done even if emitting the tail failed: nobody waits for this pipe in vain
                if threading.get_ident() == self._loop_thread:
                    self._done_event.set()
                else:
                    self._loop_call(self._done_event.set)


class Poller:
    """One thread that waits in epoll on every registered pipe and reads each ready one; see the module docstring.

    ``behind`` is True while the latest turn read at least ``BEHIND_BYTES`` from
    some pipe (that pipe was filling up): Stream readers then step aside for a
    moment (see stream.py), so the GIL goes to the drain and no child blocks on
    its pipe because of a reader.

    ``register``/``unregister`` may be called from any thread. An exception
    while handling one pipe is logged with its traceback, counted in
    ``errors``, and that pipe is abandoned; the thread goes on with the others.
    """

    _pool: list[Poller] = []  # noqa: RUF012 - the process's pollers, shared on purpose
    _pool_lock = threading.Lock()

    def __init__(self, buffer_size: int = READ_SIZE) -> None:
        self._epoll = select.epoll()
        self._drains: dict[int, PipeDrain] = {}
        self._held: set[PipeDrain] = set()
        self._buf = bytearray(buffer_size)
        self._stop = False
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._epoll.register(self._wake_r, select.EPOLLIN)
        self.errors = 0
        self.behind = False
        # A thread that waits for the GIL gets it after at most this long (CPython's default is 5 ms): the
        # event loop then waits at most that for the drain after each of its own system calls.
        if sys.getswitchinterval() > SWITCH_INTERVAL:
            sys.setswitchinterval(SWITCH_INTERVAL)
        log.debug(
            "drain.core",
            implementation=native.IMPLEMENTATION,
            count=native.core.COUNT_PATH if native.core is not None else None,
            reason=native.UNAVAILABLE_REASON or None,
            threads=DRAIN_THREADS,
        )
        self._thread = threading.Thread(target=self._run, name="supd-drain", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"<Poller pipes={len(self._drains)} errors={self.errors}{' stopped' if self._stop else ''}>"

    @classmethod
    def default(cls) -> Poller:
        """The process's poller with the fewest pipes; the ``DRAIN_THREADS`` pollers start on first use."""
        with cls._pool_lock:
            if not cls._pool:
                cls._pool.extend(Poller() for _ in range(DRAIN_THREADS))
            return min(cls._pool, key=lambda p: len(p._drains))

    @classmethod
    def any_behind(cls) -> bool:
        """True while some poller of the process is behind (see ``behind``)."""
        return any(p.behind for p in cls._pool)

    def register(self, drain: PipeDrain) -> None:
        self._drains[drain.fd] = drain
        self._epoll.register(drain.fd, select.EPOLLIN)

    def unregister(self, drain: PipeDrain) -> None:
        """Forget ``drain`` (before its fd is closed)."""
        if self._drains.get(drain.fd) is drain:
            del self._drains[drain.fd]
        with contextlib.suppress(OSError):  # never registered, or the epoll is closed: nothing to forget
            self._epoll.unregister(drain.fd)

    def stop(self) -> None:
        """Stop the thread (tests); registered pipes are left as they are."""
        self._stop = True
        os.write(self._wake_w, b"x")
        self._thread.join()
        self._epoll.close()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _timeout(self) -> float:
        if not self._held:
            return -1
        due = min(d.quiet_due() for d in self._held)
        return max(0.0, due - time.monotonic())

    def _run(self) -> None:
        while not self._stop:
            try:
                events = self._epoll.poll(self._timeout())
            except InterruptedError:
                continue
            self._turn(events)

    def _turn(self, events: list[tuple[int, int]]) -> None:
        """Read every ready pipe, then emit what went quiet. A method of its own so that no drain stays
        referenced from the thread's frame while it waits in epoll: a removed child's drain, and through
        it the child's ring, is not kept by this thread (once its held bytes are emitted, within 0.2 s)."""
        drains, held = self._drains, self._held
        behind = False
        for fd, _mask in events:
            drain = drains.get(fd)
            if drain is None:
                continue  # the wake-up pipe, or a drain abandoned since the poll
            try:
                if drain.on_ready(self._buf):
                    held.add(drain)
                else:
                    held.discard(drain)
            except Exception:  # noqa: BLE001 - one pipe's failure must not stop every other pipe
                self._failed(drain)
            behind = behind or drain.last_read >= BEHIND_BYTES
        self.behind = behind
        if held:
            now = time.monotonic()
            for drain in [d for d in held if d.quiet_due() <= now]:
                try:
                    if not drain.flush_quiet(now):
                        held.discard(drain)
                except Exception:  # noqa: BLE001 - as above
                    self._failed(drain)

    def _failed(self, drain: PipeDrain) -> None:
        self.errors += 1
        self._held.discard(drain)
        log.exception("drain.failed", pipe=drain.label, errors=self.errors)
        try:
            drain.abandon()
        except Exception:
            log.exception("drain.abandon.failed", pipe=drain.label)
            self.unregister(drain)
