"""Running one probe once: an exec, tcp, http or grpc action, cut at its timeout, as a ProbeResult.

``ProbeRunner.run(action, timeout)`` never raises for a probe that fails: a refused
connection, a non-zero exit, a 5xx, a NOT_SERVING or a timeout are all a failed
``ProbeResult`` whose message a person can act on ("exit 3: disk full",
"connection refused (127.0.0.1:8080)", "HTTP 503: starting", "timed out after 1s").
Only cancellation propagates, and a cancelled run leaves nothing behind: an exec
probe's whole process group is killed, sockets and calls are closed.

Meanings follow the kubelet's (https://kubernetes.io/docs/tasks/configure-pod-container/configure-liveness-readiness-startup-probes/):

- exec: the argv runs in the child's environment and working directory, in a new session, stdin
  from /dev/null, stdout and stderr into one pipe; exit 0 is success. On its timeout, its process
  group is killed. Processes it leaves behind after a normal exit are its own.
- tcp: a connection to host:port is success; it is closed at once.
- http: a GET that follows no redirect; a status ``HttpProbe.accepts`` is success (200-399 by
  default). Like the kubelet's, https certificates are not verified, a new connection is made for
  each probe (keep-alive would hide a server that no longer accepts), and the User-Agent is
  ``supd-probe/<version>`` unless the probe's headers set one.
- grpc: ``grpc.health.v1.Health/Check``; SERVING is success.

A runner belongs to one generation of one child and keeps what runs may share: an
httpx client (created at the first http probe; httpx is imported only then) and a
grpc channel per host:port. ``aclose()`` closes them, after the last run ended.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import anyio
import grpc
import grpc.aio
import structlog

import supervisor
from supervisor._daemon.children.sessions import kill_process_group
from supervisor.probes import ExecProbe, GrpcProbe, HttpProbe, TcpProbe
from supervisor.signals import signal_name

if TYPE_CHECKING:
    import httpx

__all__ = ["OUTPUT_LIMIT", "ProbeResult", "ProbeRunner"]

log = structlog.get_logger("supd.health")

# Bytes of an exec probe's output, or of an http body, kept in a result.
OUTPUT_LIMIT = 1024
# After an exec probe exited, how long its output pipe may stay open (held by a process it left
# behind) before the runner stops reading it: what the probe itself wrote is already in the pipe.
_OUTPUT_AFTER_EXIT_SECONDS = 0.1
# grpc channel options: no proxy from the environment (grpc honours http_proxy and grpc_proxy; the
# endpoint is a local child's), and subchannels of the channel's own, so a channel made to replace
# one in TRANSIENT_FAILURE connects afresh instead of sharing the old one's reconnect backoff.
_GRPC_OPTIONS = (("grpc.enable_http_proxy", 0), ("grpc.use_local_subchannel_pool", 1))


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    """What one run of a probe found.

    ``message`` on success: "exit 0", "connected", "HTTP 200", "SERVING"; on failure the reason:
    "exit 3: <output>", "killed by SIGKILL", "connection refused (127.0.0.1:8080)",
    "HTTP 503: <body>", "timed out after 1s", "NOT_SERVING", "grpc UNIMPLEMENTED: <details>",
    "could not run x: No such file or directory".
    """

    success: bool
    message: str
    # Seconds from the start of the run to its result (monotonic clock).
    elapsed_seconds: float
    # http: the status code (0 when there was no answer).
    status: int = 0
    # exec: the exit code, negative for death by that signal; None when it did not exit by itself.
    exit_code: int | None = None
    # exec: the last OUTPUT_LIMIT bytes of stdout and stderr together, also when timed out;
    # http: the first OUTPUT_LIMIT bytes of the body of a failure. Invalid UTF-8 is replaced;
    # "…" marks a cut.
    output: str = ""


class ProbeRunner:
    """Runs the probes of one generation of one child; keeps what runs can share (an httpx client, grpc channels).

    ``env`` and ``cwd`` are the child's: exec probes run with them (None: supd's own).
    Runs may overlap (a child's liveness and readiness probes); call ``aclose()`` once none is running.
    """

    def __init__(self, *, env: Mapping[str, str] | None = None, cwd: str | None = None) -> None:
        self._env = dict(env) if env is not None else None
        self._cwd = cwd
        self._http: httpx.AsyncClient | None = None
        self._channels: dict[str, _Channel] = {}
        self._closed = False
        self._runs = 0

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        http = "open" if self._http is not None else "none"
        return f"<ProbeRunner {state} runs={self._runs} http={http} grpc_channels={len(self._channels)}>"

    async def __aenter__(self) -> ProbeRunner:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def run(
        self,
        action: ExecProbe | TcpProbe | HttpProbe | GrpcProbe,
        timeout: float,  # noqa: ASYNC109 - the probe's own setting, applied inside with move_on_after
    ) -> ProbeResult:
        """Run ``action`` once, cut at ``timeout`` seconds; the result says success or why not.

        Raises only on cancellation (after cleaning up) and RuntimeError after ``aclose()``.
        """
        if self._closed:
            raise RuntimeError("ProbeRunner.run after aclose()")
        self._runs += 1
        started = time.monotonic()
        output = _Tail(OUTPUT_LIMIT)  # exec's output, read here so a timeout can still report it
        result: ProbeResult | None = None
        with anyio.move_on_after(timeout):
            if isinstance(action, ExecProbe):
                result = await self._exec(action, output)
            elif isinstance(action, TcpProbe):
                result = await _tcp(action)
            elif isinstance(action, HttpProbe):
                result = await self._http_get(action)
            else:
                result = await self._grpc_check(action, deadline_seconds=timeout)
        elapsed = time.monotonic() - started
        if result is None or result is _DEADLINE:  # ours, or the client library's own (the same timeout)
            return ProbeResult(False, f"timed out after {timeout:g}s", elapsed, output=output.text())
        return dataclasses.replace(result, elapsed_seconds=elapsed)

    async def aclose(self) -> None:
        """Close the http client and the grpc channels (shielded from cancellation). Idempotent."""
        self._closed = True
        with anyio.CancelScope(shield=True):
            client, self._http = self._http, None
            channels, self._channels = list(self._channels.values()), {}
            if client is not None:
                await client.aclose()
            for channel in channels:
                await channel.channel.close()

    # --- exec -----------------------------------------------------------------------------------------------

    async def _exec(self, probe: ExecProbe, output: _Tail) -> ProbeResult:
        """Run the argv to its exit; its output goes into ``output``. Kills its process group if cancelled."""
        try:
            # Shielded: a cancellation while the pipe is being attached would kill only the leader (asyncio's
            # transport cleanup) and leave the rest of its group running; from here on, ``finally`` kills it.
            with anyio.CancelScope(shield=True):
                process = await anyio.open_process(
                    list(probe.argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                    env=self._env, cwd=self._cwd, start_new_session=True,
                )
        except OSError as exc:
            return _failed(_could_not_run(probe.argv[0], exc, self._cwd))
        assert process.stdout is not None
        stdout = process.stdout
        closed = anyio.Event()

        async def read() -> None:
            async for chunk in stdout:
                output.add(chunk)
            closed.set()

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(read)
                code = await process.wait()
                with anyio.move_on_after(_OUTPUT_AFTER_EXIT_SECONDS) as late:
                    await closed.wait()
                if late.cancelled_caught:
                    log.debug("health.probe.exec.output_left_open", program=probe.argv[0])
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                if process.returncode is None:  # cut by the timeout or cancelled: the whole group goes
                    kill_process_group(process.pid)
                await process.aclose()
        if code == 0:
            return ProbeResult(True, "exit 0", 0.0, exit_code=0, output=output.text())
        if code < 0:
            return ProbeResult(False, f"killed by {signal_name(-code)}", 0.0, exit_code=code, output=output.text())
        words = output.text().strip()
        return ProbeResult(False, f"exit {code}: {words}" if words else f"exit {code}", 0.0, exit_code=code,
                           output=output.text())

    # --- http -----------------------------------------------------------------------------------------------

    def _client(self) -> httpx.AsyncClient:
        """The runner's client, made at the first http probe.

        Its own transport keeps proxies from the environment (HTTP_PROXY...) out: the endpoint is a
        local child's. No certificate is verified and no connection kept alive, as by the kubelet.
        """
        if self._http is None:
            import httpx

            transport = httpx.AsyncHTTPTransport(
                verify=False, limits=httpx.Limits(max_connections=None, max_keepalive_connections=0)
            )
            self._http = httpx.AsyncClient(
                transport=transport, follow_redirects=False, timeout=None,
                headers={"User-Agent": f"supd-probe/{supervisor.__version__}"},
            )
        return self._http

    async def _http_get(self, probe: HttpProbe) -> ProbeResult:
        import httpx

        client = self._client()
        status, body = 0, bytearray()
        try:
            async with client.stream("GET", probe.url, headers=dict(probe.headers)) as answer:
                status = answer.status_code
                if probe.accepts(status):
                    return ProbeResult(True, f"HTTP {status}", 0.0, status=status)
                # The head of the body: the status is the verdict, so an endless body must not hold it.
                async for chunk in answer.aiter_bytes():
                    body.extend(chunk)
                    if len(body) > OUTPUT_LIMIT:
                        break
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
            if isinstance(exc, httpx.TimeoutException):
                return _DEADLINE
            if not status:
                return _failed(_http_error(exc, probe.url))
            log.debug("health.probe.http.body_cut", url=probe.url, status=status, error=str(exc))
        text = _head_text(bytes(body), OUTPUT_LIMIT)
        words = text.strip()
        return ProbeResult(False, f"HTTP {status}: {words}" if words else f"HTTP {status}", 0.0, status=status,
                           output=text)

    # --- grpc -----------------------------------------------------------------------------------------------

    async def _grpc_check(self, probe: GrpcProbe, *, deadline_seconds: float) -> ProbeResult:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        channel = await self._channel(_host_port(probe.host, probe.port))
        channel.calls += 1
        try:
            stub = health_pb2_grpc.HealthStub(channel.channel)
            call = stub.Check(health_pb2.HealthCheckRequest(service=probe.service), timeout=deadline_seconds)
            answer = await _grpc_outcome(call)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                return _DEADLINE
            details = exc.details() or ""
            if code == grpc.StatusCode.NOT_FOUND and not details:  # the health protocol's word for it
                details = f"service {probe.service!r} unknown to the server"
            return _failed(f"grpc {code.name}: {details}" if details else f"grpc {code.name}")
        finally:
            channel.calls -= 1
            if channel.retired and not channel.calls:
                with anyio.CancelScope(shield=True):
                    await channel.channel.close()
        name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
        return ProbeResult(answer.status == health_pb2.HealthCheckResponse.SERVING, name, 0.0)

    async def _channel(self, target: str) -> _Channel:
        """The channel to ``target``; one that failed to connect is replaced, so that this probe dials afresh.

        A grpc channel in TRANSIENT_FAILURE fails calls at once until its reconnect backoff (growing to
        two minutes) runs out: a child that started listening meanwhile would still be reported
        unavailable. The replaced channel is closed once no call uses it.
        """
        channel = self._channels.get(target)
        if channel is not None and channel.channel.get_state() == grpc.ChannelConnectivity.TRANSIENT_FAILURE:
            del self._channels[target]
            channel.retired = True
            if not channel.calls:
                with anyio.CancelScope(shield=True):
                    await channel.channel.close()
            channel = None
        if channel is None:
            channel = self._channels[target] = _Channel(grpc.aio.insecure_channel(target, options=_GRPC_OPTIONS))
        return channel


async def _grpc_outcome(call: grpc.aio.UnaryUnaryCall[Any, Any]) -> Any:
    """The response of ``call`` once it is done; raises its AioRpcError. Cancels the call when cancelled.

    The call is not awaited until it is done: awaiting a grpc.aio call that is cancelled raises a
    new CancelledError of grpc's (its task swallows the one delivered), which anyio's cancel scopes
    do not recognise as theirs, so the cancellation would escape ``move_on_after``.
    """
    done = anyio.Event()
    call.add_done_callback(lambda _: done.set())
    try:
        await done.wait()
    finally:
        if not call.done():
            call.cancel()
    if call.cancelled():  # by someone else (its channel closed under it): a failure, not our cancellation
        raise grpc.aio.AioRpcError(grpc.StatusCode.CANCELLED, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                   details="the call was cancelled")
    return await call


@dataclasses.dataclass
class _Channel:
    """A grpc channel of a runner, the calls in flight on it, and whether it was replaced."""

    channel: grpc.aio.Channel
    calls: int = 0
    retired: bool = False


def _failed(message: str) -> ProbeResult:
    return ProbeResult(False, message, 0.0)


# What a kind returns when its client library's own deadline (the run's timeout) came first; run() words it.
_DEADLINE = _failed("timed out")


class _Tail:
    """The last ``limit`` bytes of a stream, and whether anything before them was dropped."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._data = bytearray()
        self._cut = False

    def add(self, chunk: bytes) -> None:
        self._data.extend(chunk)
        if len(self._data) > self._limit:
            del self._data[: -self._limit]
            self._cut = True

    def text(self) -> str:
        """The bytes as text: invalid UTF-8 replaced, a character split by the cut dropped, "…" marking it."""
        data = bytes(self._data)
        if not self._cut:
            return data.decode("utf-8", errors="replace")
        skip = 0
        while skip < min(3, len(data)) and data[skip] & 0xC0 == 0x80:  # continuation bytes of a cut character
            skip += 1
        return "…" + data[skip:].decode("utf-8", errors="replace")


def _head_text(data: bytes, limit: int) -> str:
    """At most ``limit`` bytes of ``data`` as text (invalid UTF-8 replaced), "…" marking a cut."""
    if len(data) <= limit:
        return data.decode("utf-8", errors="replace")
    return data[:limit].decode("utf-8", errors="ignore" if data[limit] & 0xC0 == 0x80 else "replace") + "…"


async def _tcp(probe: TcpProbe) -> ProbeResult:
    try:
        stream = await anyio.connect_tcp(probe.host, probe.port)
    except OSError as exc:
        return _failed(_os_error(exc, _host_port(probe.host, probe.port)))
    with anyio.CancelScope(shield=True):
        await stream.aclose()
    return ProbeResult(True, "connected", 0.0)


def _host_port(host: str, port: int) -> str:
    """``host:port``, an IPv6 address in brackets: ``[::1]:8080``."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _os_error(exc: BaseException, where: str) -> str:
    """An OS error met on the way to ``where`` in the OS's words, lower case: "connection refused (host:port)".

    Looks through causes (httpx and anyio wrap the OSError: "All connection attempts failed").
    """
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            break
        if isinstance(seen, OSError) and (seen.errno or seen.strerror):
            # asyncio words a refusal "Connect call failed ('127.0.0.1', 8080)": the errno says it plainly.
            words = os.strerror(seen.errno) if seen.errno and seen.errno > 0 else str(seen.strerror)
            return f"{words[:1].lower()}{words[1:]} ({where})"
        if isinstance(seen, BaseExceptionGroup) and seen.exceptions:
            seen = seen.exceptions[-1]  # the last address tried
        else:
            seen = seen.__cause__ or seen.__context__
    return f"{exc} ({where})" if str(exc) else f"{type(exc).__name__} ({where})"


def _http_error(exc: BaseException, url: str) -> str:
    """An httpx error without an answer: the OS's words for a connection error, else httpx's."""
    import httpx

    if isinstance(exc, (httpx.ConnectError, OSError)):
        where = httpx.URL(url).netloc.decode("ascii", errors="replace") if "://" in url else url
        return _os_error(exc, where)
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _could_not_run(program: str, exc: OSError, cwd: str | None) -> str:
    """Why an exec probe did not start: "could not run x: No such file or directory" (or its cwd's trouble)."""
    words = exc.strerror or str(exc)
    if cwd is not None and exc.filename == cwd:
        return f"could not run {program}: working directory {cwd}: {words}"
    return f"could not run {program}: {words}"
