"""Handing a child its stored state: one delivery with the child's method, retried by the seed's rules.

``deliver`` runs one delivery of one revision: an HTTP request (the Caddy
``POST /load`` case), an atomic file write with an optional signal, or a
program fed the state on stdin. The outcome is one of three:

- ``Delivered``: the child accepted the state (a success code, exit 0, the
  file written and signalled);
- ``DeliveryRejected`` (FAILED_PRECONDITION): the child said no, with its own
  words: a 4xx (any non-success status below 500) and its body, or a non-zero
  exit and its stderr. Never retried: the same state would be refused again;
- ``DeliveryFailed`` (UNAVAILABLE): the state could not be handed over:
  connection errors, timeouts and 5xx kept failing until the retries, the
  budget or the caller's deadline ran out, or a local error (the file could not
  be written, the program not found, the child gone before the signal) that a
  retry would not mend.

Retries wait ``retry.backoff.jittered(n)`` before retry n, and stop early when
the next wait would pass the budget (``retry.budget_seconds`` from the first
attempt) or the caller's deadline; no attempt runs past either, as each is cut
to what is left of them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import ssl
import subprocess
import tempfile
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

import anyio
import structlog

from supervisor._daemon.children.sessions import kill_process_group
from supervisor.delivery import ExecDelivery, FileDelivery, HttpDelivery, StateDelivery
from supervisor.environment import child_environment
from supervisor.errors import FailedPrecondition, Unavailable
from supervisor.signals import signal_name

if TYPE_CHECKING:
    import httpx
    from tenacity import RetryCallState

__all__ = [
    "BODY_LIMIT",
    "Delivered",
    "DeliveryFailed",
    "DeliveryRejected",
    "Target",
    "bounded_text",
    "deliver",
    "wait_accepting",
    "write_state_file",
]

log = structlog.get_logger("supd.state")

# Bytes of a child's answer (an HTTP body, an exec's stderr) kept in an error message.
BODY_LIMIT = 4096
# After an exec program exited, how long its stderr may stay open (held by a process it left behind) before
# supd stops reading it: what the program itself wrote is already in the pipe.
_STDERR_AFTER_EXIT_SECONDS = 0.1


@dataclasses.dataclass(frozen=True)
class Target:
    """The child a state goes to, and the revision it is."""

    child: str
    # The running process; 0 when there is none (a file written before a start).
    pid: int
    revision: int
    content_type: str
    # Signals the child's process (through its pidfd); returns False when the process is gone.
    send_signal: Callable[[int], bool] | None = None
    # The child's environment (ChildSpec.child_env): an exec delivery runs with it, plus its SUPD_* variables.
    env: Mapping[str, str] = dataclasses.field(default_factory=lambda: child_environment({}))


@dataclasses.dataclass(frozen=True)
class Delivered:
    """The child accepted the state after ``attempts`` attempts (1: at once)."""

    attempts: int
    # What accepted it: "HTTP 200", "exit 0", "wrote /etc/x.json, sent SIGHUP".
    detail: str


class DeliveryRejected(FailedPrecondition):
    """The child refused the state: a non-success HTTP status below 500, or an exec exit other than 0.

    ``status`` is ``"HTTP 400"``, ``"exit 3"`` or ``"signal SIGSEGV"``; ``reason`` the child's own
    words (at most BODY_LIMIT bytes of its body or stderr, decoded with replacement characters).
    """

    def __init__(self, target: Target, attempts: int, status: str, reason: str) -> None:
        told = f": {reason}" if reason else ""
        super().__init__(f"child {target.child!r} rejected state revision {target.revision}: {status}{told}")
        self.attempts = attempts
        self.status = status
        self.reason = reason


class DeliveryFailed(Unavailable):
    """The state could not be handed over; ``last_error`` says what the last attempt met.

    ``stopped_by`` says why no further attempt was made: ``"retries"`` (all spent),
    ``"budget"`` (the next wait would pass ``retry.budget_seconds``), ``"deadline"`` (the
    caller's) or ``"error"`` (a local error that a retry would not mend).
    """

    def __init__(
        self, target: Target, attempts: int, *, elapsed: float, last_error: str, where: str, stopped_by: str
    ) -> None:
        plural = "attempt" if attempts == 1 else "attempts"
        super().__init__(
            f"child {target.child!r} did not take state revision {target.revision} "
            f"after {attempts} {plural} in {elapsed:.1f}s: {last_error} ({where})"
        )
        self.attempts = attempts
        self.last_error = last_error
        self.stopped_by = stopped_by


class _Retryable(Exception):
    """One attempt met a connection error, a timeout or a 5xx; the text says which."""


class _Refused(Exception):
    """The child said no with ``status``; ``reason`` is its own words."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(status)
        self.status = status
        self.reason = reason


class _Local(Exception):
    """A local error that a retry would not mend (a file not writable, a program not found)."""


async def deliver(
    delivery: StateDelivery,
    state: bytes,
    target: Target,
    *,
    deadline: float | None = None,
    on_attempt: Callable[[int, str], None] | None = None,
) -> Delivered:
    """Deliver ``state`` (bytes) to ``target`` with ``delivery``'s method and retry rules.

    ``deadline`` is a ``time.monotonic()`` instant (the RPC's); no attempt or wait runs past it.
    ``on_attempt(n, error)`` is called after each failed attempt n (from 1), the last one included,
    whether it is retried or not. Returns Delivered. Raises DeliveryRejected (the child said no)
    or DeliveryFailed (retries, budget or deadline spent, or a local error).
    """
    from tenacity import AsyncRetrying, retry_if_exception_type  # here: a supd that delivers no state never loads it

    started = time.monotonic()
    end = started + delivery.retry.budget_seconds
    bounded_by = "budget"
    if deadline is not None and deadline < end:
        end, bounded_by = deadline, "deadline"
    method = delivery.method
    where = _where(method)
    attempts = 0
    stopped_by = "error"  # until the stop rule says it was the retries, the budget or the deadline

    def left() -> float:
        return end - time.monotonic()

    def stop(state: RetryCallState) -> bool:
        nonlocal stopped_by
        if state.attempt_number > delivery.retry.retries:
            stopped_by = "retries"
            return True
        if time.monotonic() + state.upcoming_sleep >= end:
            stopped_by = bounded_by
            return True
        return False

    def before_sleep(state: RetryCallState) -> None:
        log.warning(
            "state.delivery.retry", child=target.child, pid=target.pid, rev=target.revision,
            attempt=state.attempt_number, wait_seconds=round(state.upcoming_sleep, 3),
            error=str(state.outcome.exception()) if state.outcome else "", to=where,
        )

    async with _attempt_runner(method, state, target) as once:
        retrying = AsyncRetrying(
            sleep=anyio.sleep,
            stop=stop,
            wait=lambda state: delivery.retry.backoff.jittered(state.attempt_number),
            retry=retry_if_exception_type(_Retryable),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    attempts += 1
                    try:
                        if left() <= 0:
                            stopped_by = bounded_by
                            raise _Local(f"no time left before the {bounded_by}")
                        detail = await once(min(left(), _attempt_timeout(method)))
                    except (_Retryable, _Local, _Refused) as exc:
                        if on_attempt is not None:
                            on_attempt(attempts, _describe(exc))
                        raise
        except _Refused as exc:
            raise DeliveryRejected(target, attempts, exc.status, exc.reason) from None
        except (_Local, _Retryable) as exc:
            raise DeliveryFailed(
                target, attempts, elapsed=time.monotonic() - started, last_error=str(exc), where=where,
                stopped_by=stopped_by,
            ) from None
    log.info("state.delivery.complete", child=target.child, rev=target.revision, attempts=attempts, detail=detail)
    return Delivered(attempts=attempts, detail=detail)


def _describe(exc: Exception) -> str:
    if isinstance(exc, _Refused):
        return f"{exc.status}: {exc.reason}" if exc.reason else exc.status
    return str(exc)


def _where(method: HttpDelivery | FileDelivery | ExecDelivery) -> str:
    if isinstance(method, HttpDelivery):
        via = f" via {method.unix_socket}" if method.unix_socket else ""
        return f"{method.method} {method.url}{via}"
    if isinstance(method, FileDelivery):
        return f"file {method.path}"
    return f"exec {method.argv[0]}"


def _attempt_timeout(method: HttpDelivery | FileDelivery | ExecDelivery) -> float:
    return method.timeout_seconds if isinstance(method, (HttpDelivery, ExecDelivery)) else float("inf")


Attempt = Callable[[float], Awaitable[str]]


@contextlib.asynccontextmanager
async def _attempt_runner(
    method: HttpDelivery | FileDelivery | ExecDelivery, state: bytes, target: Target
) -> AsyncIterator[Attempt]:
    """One attempt of the method as ``once(timeout_seconds) -> detail``; an HTTP client lives across attempts."""
    if isinstance(method, HttpDelivery):
        async with _http_client(method) as client:
            yield lambda seconds: _http_attempt(client, method, state, target.content_type, seconds)
    elif isinstance(method, FileDelivery):
        yield lambda seconds: _file_attempt(method, state, target)
    else:
        yield lambda seconds: _exec_attempt(method, state, target, seconds)


def bounded_text(data: bytes) -> str:
    """At most BODY_LIMIT bytes of a child's words as text (invalid UTF-8 replaced), ``…`` marking a cut."""
    cut = len(data) > BODY_LIMIT
    text = data[:BODY_LIMIT].decode("utf-8", errors="replace").strip()
    return text + "…" if cut else text


# --- http ---------------------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _http_client(m: HttpDelivery) -> AsyncIterator[httpx.AsyncClient]:
    """A client for one delivery (its connection kept across retries), over TCP or ``m.unix_socket``.

    httpx is imported here, so a supd whose children take no HTTP delivery never loads it. The
    explicit transport also keeps proxies from the environment (HTTP_PROXY...) out: the endpoint
    is a local child's. https verifies certificates with httpx's defaults.
    """
    import httpx

    # Plain http never uses TLS (redirects are not followed): no CA bundle to load. https loads it once, in a
    # worker thread: building a context takes 30-60 ms, too long for the event loop and for every delivery.
    verify: ssl.SSLContext | bool = await _tls_context() if m.url.startswith("https://") else False
    transport = httpx.AsyncHTTPTransport(uds=m.unix_socket or None, verify=verify)
    client = httpx.AsyncClient(transport=transport, timeout=m.timeout_seconds)
    try:
        yield client
    finally:
        with anyio.CancelScope(shield=True):
            await client.aclose()


_TLS: list[ssl.SSLContext] = []


async def _tls_context() -> ssl.SSLContext:
    """The one TLS context of https deliveries (system CAs, or SSL_CERT_FILE), built once off the event loop."""
    if not _TLS:
        context = await anyio.to_thread.run_sync(ssl.create_default_context)
        _TLS[:] = [context]
    return _TLS[0]


async def _http_attempt(
    client: httpx.AsyncClient, m: HttpDelivery, state: bytes, content_type: str, seconds: float
) -> str:
    """One request. Returns "HTTP <status>" when accepted; raises _Refused (4xx...) or _Retryable (5xx, I/O)."""
    import httpx

    headers = dict(m.headers)
    if not any(key.lower() == "content-type" for key in headers):
        headers["Content-Type"] = content_type
    status, body, cut_short = 0, bytearray(), ""
    try:
        with anyio.fail_after(seconds):
            async with client.stream(m.method, m.url, content=state, headers=headers, timeout=seconds) as answer:
                status = answer.status_code
                if m.accepts(status):
                    return f"HTTP {status}"
                async for chunk in answer.aiter_bytes():
                    body.extend(chunk)
                    if len(body) > BODY_LIMIT:
                        break
    except (TimeoutError, httpx.HTTPError) as exc:
        if status:  # the verdict came with the status line; only the words were cut short
            cut_short = f" [the rest of the body was lost: {_transport_error(exc)}]"
        elif isinstance(exc, (TimeoutError, httpx.TimeoutException)):
            raise _Retryable(f"no answer within {seconds:.2f}s") from None
        else:
            raise _Retryable(_transport_error(exc)) from None
    words = bounded_text(bytes(body)) + cut_short
    if status >= 500:
        raise _Retryable(f"HTTP {status}: {words}" if words else f"HTTP {status}")
    raise _Refused(f"HTTP {status}", words)


def _transport_error(exc: BaseException) -> str:
    """A connection error as text, with the OS's words where httpx hides them.

    ``ConnectError: Connection refused`` rather than anyio's ``All connection attempts failed``.
    """
    if isinstance(exc, TimeoutError):
        return "timed out"
    name = type(exc).__name__
    cause, depth = exc.__cause__ or exc.__context__, 0
    while cause is not None and depth < 8:
        if isinstance(cause, OSError) and cause.errno and cause.errno > 0:
            return f"{name}: {os.strerror(cause.errno)}"
        cause, depth = cause.__cause__ or cause.__context__, depth + 1
    return f"{name}: {exc}" if str(exc) else name


# --- file ---------------------------------------------------------------------------------------------------


def write_state_file(file: FileDelivery, state: bytes) -> None:
    """Write ``state`` to ``file.path`` atomically, with permission bits ``file.mode``. Raises OSError.

    A temporary file in the same directory is written and fsynced, renamed over the path, and the
    directory fsynced, so a reader (or a crash) sees the old bytes or the new ones, never a mix.
    """
    directory, name = os.path.split(file.path)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
    try:
        with open(fd, "wb") as f:
            os.fchmod(f.fileno(), file.mode)  # exact bits, whatever the umask
            f.write(state)
            f.flush()
            os.fsync(f.fileno())
        os.rename(temporary, file.path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


async def _file_attempt(m: FileDelivery, state: bytes, target: Target) -> str:
    """Write the file (in a worker thread), then signal a running child. Raises _Local; never retried."""
    try:
        await anyio.to_thread.run_sync(write_state_file, m, state)
    except OSError as exc:
        raise _Local(f"could not write {m.path}: {exc.strerror or exc}") from exc
    detail = f"wrote {m.path}"
    if not m.signal:
        return detail
    name = signal_name(m.signal)
    if not target.pid:
        return detail  # no process yet: it reads the file when it starts
    if target.send_signal is None:
        log.warning("state.file.no_signaller", child=target.child, pid=target.pid, signal=name)
        return detail
    if not target.send_signal(m.signal):
        raise _Local(f"wrote {m.path}, but the child exited before {name} could be sent")
    return f"{detail}, sent {name}"


# --- exec ---------------------------------------------------------------------------------------------------


async def _exec_attempt(m: ExecDelivery, state: bytes, target: Target, seconds: float) -> str:
    """Run the program once with ``state`` on its stdin, for at most ``seconds``; "exit 0" when it accepts.

    Raises _Refused (another exit, or death by a signal, with the last BODY_LIMIT bytes of its stderr),
    _Retryable (no exit in time: its whole process group is killed) or _Local (the program could not start).
    Processes it leaves behind after a normal exit are its own; only a timeout or a cancellation kills them.
    """
    env = {
        **target.env,
        "SUPD_CHILD": target.child,
        "SUPD_CHILD_PID": str(target.pid),
        "SUPD_STATE_REVISION": str(target.revision),
        "SUPD_STATE_CONTENT_TYPE": target.content_type,
    }
    try:
        # Shielded: a cancellation while the pipes are being attached would kill only the leader (asyncio's
        # transport cleanup) and leave the rest of its group running; from here on, ``finally`` kills the group.
        with anyio.CancelScope(shield=True):
            process = await anyio.open_process(
                list(m.argv), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                env=env, start_new_session=True,
            )
    except OSError as exc:
        raise _Local(f"could not run {m.argv[0]}: {exc.strerror or exc}") from exc
    assert process.stdin is not None and process.stderr is not None
    stdin, stderr = process.stdin, process.stderr
    tail = bytearray()

    async def feed() -> None:
        try:
            await stdin.send(state)
            await stdin.aclose()
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            # The program exited or closed its stdin without reading it all: its exit status decides.
            log.debug("state.exec.stdin_closed", child=target.child, program=m.argv[0])

    stderr_closed = anyio.Event()

    async def read_stderr() -> None:
        async for chunk in stderr:
            tail.extend(chunk)
            del tail[:-BODY_LIMIT]
        stderr_closed.set()

    try:
        with anyio.fail_after(seconds):
            async with anyio.create_task_group() as tg:
                # Both pipes at once: a program that writes much to stderr before it reads stdin must not stall.
                tg.start_soon(feed)
                tg.start_soon(read_stderr)
                code = await process.wait()
                with anyio.move_on_after(_STDERR_AFTER_EXIT_SECONDS) as late:
                    await stderr_closed.wait()
                if late.cancelled_caught:
                    log.info("state.exec.stderr_left_open", child=target.child, program=m.argv[0])
                tg.cancel_scope.cancel()
    except TimeoutError:
        words = bounded_text(bytes(tail))
        raise _Retryable(
            f"no exit within {seconds:.2f}s, its process group killed" + (f": {words}" if words else "")
        ) from None
    finally:
        with anyio.CancelScope(shield=True):
            if process.returncode is None:
                kill_process_group(process.pid)
                await process.wait()
            await stderr.aclose()
            await stdin.aclose()
    if code == 0:
        return "exit 0"
    status = f"exit {code}" if code > 0 else f"signal {signal_name(-code).removeprefix('signal ')}"
    raise _Refused(status, bounded_text(bytes(tail)))


# --- readiness ----------------------------------------------------------------------------------------------


async def wait_accepting(delivery: StateDelivery, deadline: float, *, poll_seconds: float = 0.01) -> bool:
    """Wait until the delivery endpoint accepts a connection; False when ``deadline`` (monotonic) comes first.

    http: a TCP connection to the URL's host and port (80/443 by default), or to ``unix_socket``,
    tried every ``poll_seconds`` (the endpoint offers no event to wait on). file and exec: True at once.
    """
    m = delivery.method
    if not isinstance(m, HttpDelivery):
        return True
    url = urllib.parse.urlsplit(m.url)
    host = url.hostname or "localhost"
    port = url.port or (443 if url.scheme == "https" else 80)
    while (remaining := deadline - time.monotonic()) > 0:
        with anyio.move_on_after(remaining):
            try:
                stream = await (anyio.connect_unix(m.unix_socket) if m.unix_socket else anyio.connect_tcp(host, port))
            except OSError:  # refused, or not there yet: the very thing polled for
                await anyio.sleep(min(poll_seconds, max(deadline - time.monotonic(), 0.0)))
                continue
            await stream.aclose()
            return True
    return False
