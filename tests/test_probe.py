"""One probe run once, against real servers and programs (``probe_servers.py``): exec, tcp, http, grpc.

Every kind has to tell success from failure in words a person can act on, cut a hang at its
timeout, and leave nothing behind when it is cut or cancelled. Timeouts are kept short (0.5 s)
so the whole file stays fast; every wait is under a deadline.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import selectors
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import anyio
import httpx
import pytest

from supervisor._daemon.health.probe import OUTPUT_LIMIT, ProbeResult, ProbeRunner
from supervisor.probes import ExecProbe, GrpcProbe, HttpProbe, TcpProbe
from supervisor.testing import free_port

from conftest import process_gone
from inproc import until

pytestmark = pytest.mark.anyio

SERVERS = str(pathlib.Path(__file__).with_name("probe_servers.py"))
CUT = 0.5  # the timeout of probes meant to hang


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Server:
    """A running probe_servers.py child: its port, and its stdout for the lines it prints."""

    def __init__(self, proc: subprocess.Popen[str], port: int) -> None:
        self.proc, self.port = proc, port
        self.serving = True  # grpc: the status of service ""

    def toggle(self) -> None:
        """grpc: flip service "" between SERVING and NOT_SERVING, and wait until the server says it did."""
        self.proc.send_signal(signal.SIGUSR1)
        self.serving = not self.serving
        assert self.line() == f"status {'SERVING' if self.serving else 'NOT_SERVING'}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def line(self, seconds: float = 10.0) -> str:
        """The next line the server prints, waited for under a deadline."""
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            assert sel.select(seconds), f"no line within {seconds}s"
        return self.proc.stdout.readline().strip()

    async def post(self, path: str) -> None:
        async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(), timeout=10) as client:
            assert (await client.post(self.url + path)).status_code == 200

    async def get(self, path: str) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(), timeout=10) as client:
            return await client.get(self.url + path)


@contextlib.contextmanager
def server(kind: str, *args: str, port: int = 0) -> Iterator[Server]:
    """Run ``probe_servers.py kind --port port args``; on leaving, SIGTERM it and check it exited 0."""
    proc = subprocess.Popen(
        [sys.executable, SERVERS, kind, "--port", str(port), *args], stdout=subprocess.PIPE, text=True
    )
    try:
        handle = Server(proc, 0)
        words = handle.line().split()
        assert words[0] == "listening", words
        handle.port = int(words[1])
        yield handle
    finally:
        proc.send_signal(signal.SIGCONT)  # in case a test froze it
        proc.terminate()
        code = proc.wait(10)
        proc.stdout.close()  # type: ignore[union-attr]
    assert code == 0, f"probe_servers.py {kind} exited {code} on SIGTERM"


@pytest.fixture(scope="module")
def http_server() -> Iterator[Server]:
    with server("http") as web:
        yield web


@pytest.fixture
def web(http_server: Server) -> Iterator[Server]:
    """The module's http server, its /healthz answering 200 again after the test."""
    yield http_server
    no_proxy = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    no_proxy.open(urllib.request.Request(http_server.url + "/control/ok", method="POST"), timeout=10).close()


@pytest.fixture(scope="module")
def grpc_server() -> Iterator[Server]:
    with server("grpc") as rpc:
        yield rpc


@pytest.fixture
def rpc(grpc_server: Server) -> Iterator[Server]:
    """The module's grpc server, running and SERVING again after the test."""
    yield grpc_server
    grpc_server.proc.send_signal(signal.SIGCONT)
    if not grpc_server.serving:
        grpc_server.toggle()


async def freeze(server: Server) -> None:
    """SIGSTOP the server and wait until every thread of it is stopped (the signal is delivered asynchronously)."""
    server.proc.send_signal(signal.SIGSTOP)

    def stopped() -> bool:
        states = []
        for task in pathlib.Path(f"/proc/{server.proc.pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError):  # a thread that ended meanwhile
                states.append(task.joinpath("stat").read_text().rsplit(")", 1)[1].split()[0])
        return all(state in ("T", "t") for state in states)

    await until(stopped, 5, what="the server to stop")



def timed_out(result: ProbeResult, seconds: float = CUT) -> None:
    """The result of a run cut at its timeout: said so, and cut in time (not early, not much later)."""
    assert not result.success
    assert result.message == f"timed out after {seconds:g}s"
    assert seconds - 0.05 <= result.elapsed_seconds < seconds + 1.0, result.elapsed_seconds


# --- exec ---------------------------------------------------------------------------------------------------


async def test_exec_exit_0_is_success_with_its_output() -> None:
    async with ProbeRunner() as runner:
        result = await runner.run(ExecProbe(("sh", "-c", "echo fine; echo also >&2")), 5)
    assert (result.success, result.message, result.exit_code) == (True, "exit 0", 0)
    assert result.output == "fine\nalso\n"
    assert 0 < result.elapsed_seconds < 5


async def test_exec_exit_3_reports_its_output_and_runs_in_the_childs_env_and_cwd(tmp_path: pathlib.Path) -> None:
    env = {"PATH": os.environ["PATH"], "WHO": "the probe"}
    async with ProbeRunner(env=env, cwd=str(tmp_path)) as runner:
        script = 'echo "$WHO in $(pwd)"; echo "disk full" >&2; exit 3'
        result = await runner.run(ExecProbe(("sh", "-c", script)), 5)
    assert not result.success
    assert result.exit_code == 3
    assert result.message == f"exit 3: the probe in {tmp_path}\ndisk full"
    assert result.output == f"the probe in {tmp_path}\ndisk full\n"


async def test_exec_keeps_the_last_output_limit_bytes() -> None:
    code = "import sys; sys.stdout.write('é' * 3000 + 'END'); sys.exit(1)"  # 2-byte characters, cut anywhere
    async with ProbeRunner() as runner:
        result = await runner.run(ExecProbe((sys.executable, "-c", code)), 5)
    assert result.output.startswith("…") and result.output.endswith("éEND")
    assert "\ufffd" not in result.output  # no half character where the cut fell
    assert OUTPUT_LIMIT - 2 <= len(result.output[1:].encode()) <= OUTPUT_LIMIT
    assert result.message == f"exit 1: {result.output}"


async def test_exec_killed_by_a_signal() -> None:
    async with ProbeRunner() as runner:
        result = await runner.run(ExecProbe(("sh", "-c", "kill -KILL $$")), 5)
    assert (result.success, result.message, result.exit_code) == (False, "killed by SIGKILL", -signal.SIGKILL)


async def test_exec_timeout_kills_its_whole_group_and_keeps_its_output() -> None:
    script = 'sleep 60 & echo "grandchild $!"; echo "leader $$"; wait'
    async with ProbeRunner() as runner:
        result = await runner.run(ExecProbe(("sh", "-c", script)), CUT)
    timed_out(result)
    assert result.exit_code is None
    words = dict(line.split() for line in result.output.splitlines())
    leader, grandchild = int(words["leader"]), int(words["grandchild"])
    assert process_gone(leader)  # reaped by the runner before it returned
    await until(lambda: process_gone(grandchild), 5, what="the background sleep to be killed with the group")


async def test_exec_that_exits_is_done_at_once_though_a_process_it_left_holds_its_output() -> None:
    async with ProbeRunner() as runner:
        result = await runner.run(ExecProbe(("sh", "-c", "sleep 60 & echo $!")), 5)
    left = int(result.output)
    try:
        assert (result.success, result.message) == (True, "exit 0")
        assert result.elapsed_seconds < 2  # not held until the timeout by the pipe the sleep keeps open
        assert not process_gone(left)  # what a probe leaves after a normal exit is its own, as in a container
    finally:
        os.kill(left, signal.SIGKILL)


async def test_exec_that_cannot_start(tmp_path: pathlib.Path) -> None:
    async with ProbeRunner() as runner:
        missing = await runner.run(ExecProbe(("/nonexistent/check",)), 5)
        unknown = await runner.run(ExecProbe(("supd-no-such-check",)), 5)
        not_program = await runner.run(ExecProbe((str(tmp_path),)), 5)
    async with ProbeRunner(cwd=str(tmp_path / "gone")) as runner:
        no_cwd = await runner.run(ExecProbe(("true",)), 5)
    assert (missing.success, missing.message) == (False, "could not run /nonexistent/check: No such file or directory")
    assert unknown.message == "could not run supd-no-such-check: No such file or directory"
    assert not_program.message == f"could not run {tmp_path}: Permission denied"
    assert no_cwd.message == f"could not run true: working directory {tmp_path / 'gone'}: No such file or directory"
    assert missing.exit_code is None


async def test_a_cancelled_exec_leaves_no_process(tmp_path: pathlib.Path) -> None:
    pids = tmp_path / "pids"
    script = f'echo $$ > {pids}.tmp; sleep 60 & echo $! >> {pids}.tmp; mv {pids}.tmp {pids}; wait'
    async with ProbeRunner() as runner:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(runner.run, ExecProbe(("sh", "-c", script)), 60)
                await until(pids.exists, 5, what="the probe to write its pids")
                scope.cancel()
        leader, grandchild = map(int, pids.read_text().split())
        assert process_gone(leader)
        await until(lambda: process_gone(grandchild), 5, what="the background sleep to be killed with the group")
        again = await runner.run(ExecProbe(("true",)), 5)  # the runner is still usable
    assert again.success


async def test_a_closed_runner_runs_nothing() -> None:
    runner = ProbeRunner()
    await runner.aclose()
    await runner.aclose()  # idempotent
    with pytest.raises(RuntimeError, match="after aclose"):
        await runner.run(TcpProbe(port=1), 1)


# --- tcp ----------------------------------------------------------------------------------------------------


async def test_tcp_connected_and_refused() -> None:
    port = free_port()
    with server("tcp") as tcp:
        async with ProbeRunner() as runner:
            up = await runner.run(TcpProbe(port=tcp.port), 5)
            down = await runner.run(TcpProbe(port=port), 5)
            v6 = await runner.run(TcpProbe(port=port, host="::1"), 5)
    assert (up.success, up.message) == (True, "connected")
    assert (down.success, down.message) == (False, f"connection refused (127.0.0.1:{port})")
    assert not v6.success and v6.message.endswith(f"([::1]:{port})"), v6.message  # refused, or no IPv6 here


# --- http ---------------------------------------------------------------------------------------------------


async def test_http_200_sends_its_headers_and_a_user_agent(web: Server) -> None:
    async with ProbeRunner() as runner:
        result = await runner.run(HttpProbe(url=web.url + "/healthz", headers={"X-Check": "liveness"}), 5)
        seen = (await web.get("/control/last")).json()
        agent = await runner.run(HttpProbe(url=web.url + "/healthz", headers={"User-Agent": "mine"}), 5)
        seen_then = (await web.get("/control/last")).json()
    assert (result.success, result.message, result.status, result.output) == (True, "HTTP 200", 200, "")
    assert seen["x-check"] == "liveness"
    assert seen["user-agent"].startswith("supd-probe/")
    assert agent.success and seen_then["user-agent"] == "mine"


async def test_http_500_reports_status_and_body_then_recovers(web: Server) -> None:
    async with ProbeRunner() as runner:
        probe = HttpProbe(url=web.url + "/healthz")
        await web.post("/control/fail")
        failed = await runner.run(probe, 5)
        await web.post("/control/ok")
        recovered = await runner.run(probe, 5)
    assert (failed.success, failed.status) == (False, 500)
    assert failed.message == "HTTP 500: failing: told to fail"
    assert failed.output == "failing: told to fail"
    assert recovered.success


async def test_http_that_hangs_is_cut_at_its_timeout_while_the_server_runs(web: Server) -> None:
    async with ProbeRunner() as runner:
        probe = HttpProbe(url=web.url + "/healthz")
        await web.post("/control/hang")
        result = await runner.run(probe, CUT)
        assert (await web.get("/control/last")).status_code == 200  # alive, only /healthz does not answer
        await web.post("/control/ok")
        recovered = await runner.run(probe, 5)
    timed_out(result)
    assert result.status == 0
    assert recovered.success


async def test_http_connection_refused() -> None:
    port = free_port()
    async with ProbeRunner() as runner:
        result = await runner.run(HttpProbe(url=f"http://127.0.0.1:{port}/healthz"), 5)
    assert (result.success, result.message, result.status) == (False, f"connection refused (127.0.0.1:{port})", 0)


async def test_http_success_codes_and_no_redirect_followed(web: Server) -> None:
    async with ProbeRunner() as runner:
        moved = await runner.run(HttpProbe(url=web.url + "/redirect"), 5)
        not_listed = await runner.run(HttpProbe(url=web.url + "/healthz", success_codes=(204,)), 5)
        missing = await runner.run(HttpProbe(url=web.url + "/nope"), 5)
        big = await runner.run(HttpProbe(url=web.url + "/big"), 5)
    assert (moved.success, moved.message) == (True, "HTTP 302")  # 200-399, and /nowhere (404) never asked for
    assert (not_listed.success, not_listed.message) == (False, "HTTP 200: ok")
    assert (missing.success, missing.message) == (False, "HTTP 404: no such path /nope")
    assert big.output == "x" * OUTPUT_LIMIT + "…"
    assert big.message == f"HTTP 500: {big.output}"


async def test_http_fail_first_and_ready_after() -> None:
    with server("http", "--fail-first", "2") as web, server("http", "--ready-after", "1") as slow:
        async with ProbeRunner() as runner:
            probe, later = HttpProbe(url=web.url + "/healthz"), HttpProbe(url=slow.url + "/healthz")
            first = await runner.run(later, 5)
            messages = [(await runner.run(probe, 5)).message for _ in range(3)]
            with anyio.fail_after(5):
                while not (await runner.run(later, 5)).success:  # noqa: ASYNC110 - polled, as a prober does
                    await anyio.sleep(0.02)
    assert messages == ["HTTP 503: starting: 1 left", "HTTP 503: starting: 0 left", "HTTP 200"]
    assert first.message == "HTTP 503: not ready"


async def test_proxies_in_the_environment_are_not_used(
    monkeypatch: pytest.MonkeyPatch, web: Server, rpc: Server
) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy", "grpc_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{free_port()}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    async with ProbeRunner() as runner:
        http = await runner.run(HttpProbe(url=web.url + "/healthz"), 5)
        grpc = await runner.run(GrpcProbe(port=rpc.port), 5)
    assert http.success, http.message
    assert grpc.success, grpc.message


# --- grpc ---------------------------------------------------------------------------------------------------


async def test_grpc_serving_then_not_serving_then_serving(rpc: Server) -> None:
    async with ProbeRunner() as runner:
        probe = GrpcProbe(port=rpc.port)
        serving = await runner.run(probe, 5)
        rpc.toggle()
        not_serving = await runner.run(probe, 5)
        rpc.toggle()
        again = await runner.run(probe, 5)
        assert "grpc_channels=1" in repr(runner)  # one channel, kept across runs
    assert (serving.success, serving.message) == (True, "SERVING")
    assert (not_serving.success, not_serving.message) == (False, "NOT_SERVING")
    assert again.success


async def test_grpc_named_service_and_unknown_service() -> None:
    with server("grpc", "--service", "api") as rpc:
        async with ProbeRunner() as runner:
            api = await runner.run(GrpcProbe(port=rpc.port, service="api"), 5)
            unknown = await runner.run(GrpcProbe(port=rpc.port, service="nope"), 5)
    assert (api.success, api.message) == (True, "SERVING")
    assert (unknown.success, unknown.message) == (False, "grpc NOT_FOUND: service 'nope' unknown to the server")


async def test_grpc_nothing_listening_is_unavailable_and_a_later_server_is_seen_at_once() -> None:
    port = free_port()
    async with ProbeRunner() as runner:
        probe = GrpcProbe(port=port)
        down = [await runner.run(probe, 5) for _ in range(3)]
        with server("grpc", port=port):
            up = await runner.run(probe, 5)  # not held back by the failed channel's reconnect backoff
    for result in down:
        assert not result.success
        assert result.message.startswith("grpc UNAVAILABLE: "), result.message
        assert "refused" in result.message.lower()
    assert (up.success, up.message) == (True, "SERVING")


async def test_grpc_server_frozen_is_cut_at_its_timeout(rpc: Server) -> None:
    async with ProbeRunner() as runner:
        probe = GrpcProbe(port=rpc.port)
        assert (await runner.run(probe, 5)).success
        await freeze(rpc)
        frozen = await runner.run(probe, CUT)
        rpc.proc.send_signal(signal.SIGCONT)
        thawed = await runner.run(probe, 5)
    timed_out(frozen)
    assert thawed.success, thawed.message


# --- cancellation and concurrency ---------------------------------------------------------------------------


async def test_cancelled_http_and_grpc_runs_end_at_once_and_close_cleanly(web: Server, rpc: Server) -> None:
    await web.post("/control/hang")
    await freeze(rpc)
    async with ProbeRunner() as runner:
        started = time.monotonic()
        with anyio.move_on_after(0.2):
            async with anyio.create_task_group() as tg:
                tg.start_soon(runner.run, HttpProbe(url=web.url + "/healthz"), 60)
                tg.start_soon(runner.run, GrpcProbe(port=rpc.port), 60)
        assert time.monotonic() - started < 2
        rpc.proc.send_signal(signal.SIGCONT)
        await web.post("/control/ok")
        assert (await runner.run(HttpProbe(url=web.url + "/healthz"), 5)).success
        assert (await runner.run(GrpcProbe(port=rpc.port), 5)).success
    assert "closed" in repr(runner)


async def test_fifty_probes_that_hang_take_one_timeout_not_fifty(web: Server, rpc: Server) -> None:
    await web.post("/control/hang")
    await freeze(rpc)
    probes = (
        [ExecProbe(("sh", "-c", "sleep 60 & wait"))] * 20
        + [HttpProbe(url=web.url + "/healthz")] * 15
        + [GrpcProbe(port=rpc.port)] * 15
    )
    results: list[ProbeResult] = []

    async def one(probe: ExecProbe | HttpProbe | GrpcProbe) -> None:
        async with ProbeRunner() as runner:  # one per child, as the prober makes them
            results.append(await runner.run(probe, CUT))

    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        for probe in probes:
            tg.start_soon(one, probe)
    took = time.monotonic() - started
    assert len(results) == 50
    for result in results:
        timed_out(result)
    assert took < 10 * CUT, f"50 concurrent probes took {took:.2f}s"
