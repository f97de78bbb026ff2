"""State delivery against real servers, programs, files and signals.

Seed 02 is the rule: retry connection errors and 5xx, never a 4xx.

Each HTTP test runs ``admin_server.py``, a small server shaped like Caddy's admin API,
as a real process; retry delays are kept small so the whole file stays fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import selectors
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator

import anyio
import httpx
import pytest
from structlog.testing import capture_logs

from supervisor._daemon.state.deliver import (
    BODY_LIMIT,
    Delivered,
    DeliveryFailed,
    DeliveryRejected,
    Target,
    deliver,
    wait_accepting,
    write_state_file,
)
from supervisor.backoff import Backoff
from supervisor.delivery import DeliveryRetry, ExecDelivery, FileDelivery, HttpDelivery, StateDelivery
from supervisor.testing import free_port

from conftest import process_gone, wait_for
from inproc import until

pytestmark = pytest.mark.anyio

ADMIN = str(pathlib.Path(__file__).with_name("admin_server.py"))
FAST = DeliveryRetry(retries=3, backoff=Backoff(initial_seconds=0.01, max_seconds=0.05), budget_seconds=10.0)
WEB = Target(child="web", pid=0, revision=3, content_type="application/json")
MiB = 1024 * 1024


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def read_line(stream: object, seconds: float = 10.0) -> str:
    """One line of a child's stdout, waited for under a deadline."""
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)  # type: ignore[arg-type]
        assert sel.select(seconds), f"no line within {seconds}s"
    return stream.readline()  # type: ignore[attr-defined,no-any-return]


class Admin:
    """A running admin_server.py: its base URL (or socket) and its counters."""

    def __init__(self, proc: subprocess.Popen[str], url: str, unix: str = "") -> None:
        self.proc, self.url, self.unix = proc, url, unix

    def delivery(self, retry: DeliveryRetry = FAST, **http: object) -> StateDelivery:
        return StateDelivery(
            method=HttpDelivery(url=self.url + "/load", unix_socket=self.unix, **http),  # type: ignore[arg-type]
            retry=retry,
        )

    async def get(self, path: str) -> httpx.Response:
        transport = httpx.AsyncHTTPTransport(uds=self.unix or None, verify=False)
        async with httpx.AsyncClient(transport=transport, timeout=10) as client:
            return await client.get(self.url + path)

    async def stats(self) -> dict[str, object]:
        return (await self.get("/stats")).json()  # type: ignore[no-any-return]


@contextlib.contextmanager
def admin_server(*args: str, announce: bool = True) -> Iterator[Admin]:
    """Run admin_server.py with ``args``; on leaving, SIGTERM it and check it exited 0."""
    proc = subprocess.Popen([sys.executable, ADMIN, *args], stdout=subprocess.PIPE, text=True)
    try:
        unix = args[args.index("--unix") + 1] if "--unix" in args else ""
        if unix:
            url = "http://localhost"
            if announce:
                assert read_line(proc.stdout).split() == ["listening", unix]
        elif announce:
            url = f"http://127.0.0.1:{int(read_line(proc.stdout).split()[1])}"
        else:
            url = f"http://127.0.0.1:{args[args.index('--port') + 1]}"
        yield Admin(proc, url, unix)
    finally:
        proc.terminate()
        code = proc.wait(10)
        proc.stdout.close()  # type: ignore[union-attr]
    assert code == 0, f"admin_server exited {code} on SIGTERM"



# --- http ---------------------------------------------------------------------------------------------------


async def test_503s_are_retried_then_the_routes_are_served() -> None:
    routes = {"routes": {"app": "hello from app"}}
    failures: list[tuple[int, str]] = []
    with admin_server("--fail-first", "2") as admin:
        with anyio.fail_after(10), capture_logs() as logs:
            done = await deliver(
                admin.delivery(), json.dumps(routes).encode(), WEB, on_attempt=lambda n, e: failures.append((n, e))
            )
        assert done == Delivered(attempts=3, detail="HTTP 200")
        retries = [e for e in logs if e["event"] == "state.delivery.retry"]
        assert [(e["attempt"], e["child"], e["rev"]) for e in retries] == [(1, "web", 3), (2, "web", 3)]
        assert all(0 < e["wait_seconds"] <= 0.05 * 1.2 and "HTTP 503" in e["error"] for e in retries)
        assert [n for n, _ in failures] == [1, 2]
        assert all(e.startswith("HTTP 503: ") and "starting up" in e for _, e in failures)
        assert (await admin.get("/config/")).json() == routes
        route = await admin.get("/route/app")
        assert (route.status_code, route.text) == (200, "hello from app")
        assert (await admin.get("/route/other")).status_code == 404
        stats = await admin.stats()
        assert (stats["load"], stats["load_503"], stats["load_200"]) == (3, 2, 1)


async def test_a_400_is_not_retried_and_its_body_reaches_the_caller() -> None:
    failures: list[tuple[int, str]] = []
    with admin_server() as admin:
        with pytest.raises(DeliveryRejected) as caught, anyio.fail_after(10):
            await deliver(admin.delivery(), b"{bad", WEB, on_attempt=lambda n, e: failures.append((n, e)))
        rejected = caught.value
        assert (rejected.attempts, rejected.status) == (1, "HTTP 400")
        assert rejected.message.startswith("child 'web' rejected state revision 3: HTTP 400: ")
        assert "loading config: decoding request body" in rejected.message
        assert [n for n, _ in failures] == [1]
        assert (await admin.stats())["load"] == 1
        assert (await admin.get("/config/")).json() is None


async def test_a_long_error_body_is_cut_to_the_limit() -> None:
    # Valid JSON is held; a string of invalid JSON as long as BODY_LIMIT makes a long error message.
    with admin_server() as admin, pytest.raises(DeliveryRejected) as caught, anyio.fail_after(10):
        await deliver(admin.delivery(), b"[" + b"1," * 8192 + b"}", WEB)
    assert len(caught.value.reason.encode()) <= BODY_LIMIT + len("…".encode())


async def test_connection_refused_is_retried_until_the_retries_are_spent() -> None:
    port = free_port()  # nothing listens there
    failures: list[tuple[int, str]] = []
    delivery = StateDelivery(HttpDelivery(url=f"http://127.0.0.1:{port}/load"), retry=FAST)
    with pytest.raises(DeliveryFailed) as caught, anyio.fail_after(10):
        await deliver(delivery, b"{}", WEB, on_attempt=lambda n, e: failures.append((n, e)))
    failed = caught.value
    assert failed.attempts == FAST.retries + 1 == len(failures)
    assert failed.stopped_by == "retries"
    assert "Connection refused" in failed.last_error
    assert failed.message.startswith("child 'web' did not take state revision 3 after 4 attempts in ")
    assert failed.message.endswith(f"(POST http://127.0.0.1:{port}/load)")


async def test_the_budget_ends_retries_early() -> None:
    retry = DeliveryRetry(retries=100, backoff=Backoff(initial_seconds=0.05, max_seconds=0.05), budget_seconds=0.5)
    delivery = StateDelivery(HttpDelivery(url=f"http://127.0.0.1:{free_port()}/load"), retry=retry)
    started = time.monotonic()
    with pytest.raises(DeliveryFailed) as caught, anyio.fail_after(10):
        await deliver(delivery, b"{}", WEB)
    elapsed = time.monotonic() - started
    assert caught.value.stopped_by == "budget"
    assert 1 < caught.value.attempts < 101
    assert elapsed < 0.5 + 1.0, f"the 0.5 s budget took {elapsed:.2f}s"


async def test_the_callers_deadline_cuts_a_hung_attempt() -> None:
    # A socket that listens but never accepts: the kernel completes the handshake, nobody ever answers.
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        port = hung.getsockname()[1]
        retry = DeliveryRetry(retries=3, backoff=Backoff(initial_seconds=0.01), budget_seconds=60.0)
        delivery = StateDelivery(HttpDelivery(url=f"http://127.0.0.1:{port}/load", timeout_seconds=30.0), retry)
        started = time.monotonic()
        with pytest.raises(DeliveryFailed) as caught, anyio.fail_after(10):
            await deliver(delivery, b"{}", WEB, deadline=started + 1.0)
        elapsed = time.monotonic() - started
    assert caught.value.stopped_by == "deadline"
    assert "no answer within" in caught.value.last_error
    assert 0.9 < elapsed < 2.0, f"a 1 s deadline answered after {elapsed:.2f}s"


async def test_a_verdict_stands_when_the_body_is_cut_short() -> None:
    # A 400 whose body never ends: the status decides (not retried), with the words that came.
    async def half_answer(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            await stream.receive()
            await stream.send(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 100\r\n\r\nunknown key")
            await anyio.sleep_forever()

    async with await anyio.create_tcp_listener(local_host="127.0.0.1") as listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, half_answer)
        port = listener.extra(anyio.abc.SocketAttribute.local_port)
        http = HttpDelivery(url=f"http://127.0.0.1:{port}/load", timeout_seconds=0.3)
        with pytest.raises(DeliveryRejected) as caught, anyio.fail_after(10):
            await deliver(StateDelivery(http, FAST), b"{}", WEB)
        tg.cancel_scope.cancel()
    assert (caught.value.attempts, caught.value.status) == (1, "HTTP 400")
    assert caught.value.reason.startswith("unknown key [the rest of the body was lost: ")


async def test_no_attempt_when_the_deadline_has_passed() -> None:
    delivery = StateDelivery(HttpDelivery(url=f"http://127.0.0.1:{free_port()}/load"), retry=FAST)
    with pytest.raises(DeliveryFailed) as caught, anyio.fail_after(10):
        await deliver(delivery, b"{}", WEB, deadline=time.monotonic() - 1)
    assert (caught.value.stopped_by, caught.value.last_error) == ("deadline", "no time left before the deadline")


async def test_the_content_type_is_the_revisions_unless_the_headers_set_it() -> None:
    with admin_server() as admin, anyio.fail_after(10):
        await deliver(admin.delivery(), b"{}", WEB)
        assert (await admin.stats())["last_content_type"] == "application/json"
        await deliver(admin.delivery(headers={"content-type": "application/x-caddy"}), b"{}", WEB)
        assert (await admin.stats())["last_content_type"] == "application/x-caddy"


async def test_success_codes_decide_what_is_accepted() -> None:
    with admin_server() as admin, pytest.raises(DeliveryRejected) as caught, anyio.fail_after(10):
        await deliver(admin.delivery(success_codes=(204,)), b"{}", WEB)
    assert caught.value.status == "HTTP 200"


async def test_over_a_unix_socket(tmp_path: pathlib.Path) -> None:
    sock = str(tmp_path / "admin.sock")
    with admin_server("--unix", sock, "--fail-first", "1") as admin, anyio.fail_after(10):
        done = await deliver(admin.delivery(), b'{"routes": {"a": "b"}}', WEB)
        assert done.attempts == 2
        assert (await admin.get("/route/a")).text == "b"


async def test_eight_mib_over_http() -> None:
    state = json.dumps({"routes": {f"r{i}": "x" * 1000 for i in range(8 * 1024 + 100)}}).encode()
    assert len(state) > 8 * MiB
    with admin_server() as admin, anyio.fail_after(15):
        assert (await deliver(admin.delivery(), state, WEB)).detail == "HTTP 200"
        assert (await admin.stats())["last_load_bytes"] == len(state)


async def test_wait_accepting_is_true_once_the_server_binds(tmp_path: pathlib.Path) -> None:
    sock = str(tmp_path / "late.sock")
    with admin_server("--unix", sock, "--delay-start", "0.3", announce=False) as admin:
        with anyio.fail_after(10):
            assert await wait_accepting(admin.delivery(), time.monotonic() + 10)
            assert (await deliver(admin.delivery(), b"{}", WEB)).attempts == 1
    port = free_port()
    with admin_server("--port", str(port), "--delay-start", "0.3", announce=False) as admin, anyio.fail_after(10):
        assert await wait_accepting(admin.delivery(), time.monotonic() + 10)
        assert (await deliver(admin.delivery(), b"{}", WEB)).attempts == 1


async def test_wait_accepting_is_false_at_the_deadline(tmp_path: pathlib.Path) -> None:
    nobody = StateDelivery(HttpDelivery(url="http://localhost/load", unix_socket=str(tmp_path / "none.sock")))
    started = time.monotonic()
    with anyio.fail_after(10):
        assert not await wait_accepting(nobody, started + 0.3)
    assert time.monotonic() - started >= 0.3
    refused = StateDelivery(HttpDelivery(url=f"http://127.0.0.1:{free_port()}/load"))
    with anyio.fail_after(10):
        assert not await wait_accepting(refused, time.monotonic() + 0.2)
    with anyio.fail_after(1):
        assert await wait_accepting(StateDelivery(ExecDelivery(argv=("true",))), time.monotonic())


# --- file ---------------------------------------------------------------------------------------------------

HUP_CHILD = """
import signal, sys
def on_hup(*_):
    with open(sys.argv[1]) as f:
        print("hup " + f.read(), flush=True)
signal.signal(signal.SIGHUP, on_hup)
print("ready", flush=True)
while True:
    signal.pause()
"""


@contextlib.contextmanager
def hup_child(path: pathlib.Path) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen([sys.executable, "-c", HUP_CHILD, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert read_line(proc.stdout) == "ready\n"
        yield proc
    finally:
        proc.kill()
        proc.wait(10)
        proc.stdout.close()  # type: ignore[union-attr]


def signaller(proc: subprocess.Popen[str]):  # type: ignore[no-untyped-def]
    def send(sig: int) -> bool:
        if proc.poll() is not None:
            return False
        proc.send_signal(sig)
        return True

    return send


async def test_a_file_is_replaced_atomically_with_its_mode_and_the_child_is_signalled(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("old")
    delivery = StateDelivery(FileDelivery(path=str(path), mode=0o640, signal=signal.SIGHUP))
    # Held open across the delivery: a file replaced by a rename still reads the old bytes through it.
    with hup_child(path) as child, open(path) as before:  # noqa: ASYNC230 - a small local file
        target = Target("web", child.pid, 4, "application/json", send_signal=signaller(child))
        with anyio.fail_after(10):
            done = await deliver(delivery, b'{"v": 4}', target)
        assert done == Delivered(attempts=1, detail=f"wrote {path}, sent SIGHUP")
        assert read_line(child.stdout) == 'hup {"v": 4}\n'
        assert before.read() == "old", "the old file was rewritten in place instead of replaced"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert os.listdir(tmp_path) == ["state.json"], "a temporary file was left behind"


async def test_a_file_before_a_start_is_written_without_a_signal(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "state.json"
    delivery = StateDelivery(FileDelivery(path=str(path), mode=0o600, signal=signal.SIGHUP))
    with anyio.fail_after(10):
        done = await deliver(delivery, b"{}", WEB)
    assert (done.detail, path.read_bytes()) == (f"wrote {path}", b"{}")


async def test_a_file_that_cannot_be_written_fails_at_once(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "missing" / "state.json"
    with pytest.raises(DeliveryFailed) as caught, anyio.fail_after(10):
        await deliver(StateDelivery(FileDelivery(path=str(path)), retry=FAST), b"{}", WEB)
    assert (caught.value.attempts, caught.value.stopped_by) == (1, "error")
    assert caught.value.last_error == f"could not write {path}: No such file or directory"
    with pytest.raises(OSError):
        write_state_file(FileDelivery(path=str(path)), b"{}")


async def test_a_child_gone_before_the_signal_fails(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "state.json"
    with hup_child(path) as child:
        child.kill()
        child.wait(10)
        target = Target("web", child.pid, 4, "application/json", send_signal=signaller(child))
        with pytest.raises(DeliveryFailed) as caught, anyio.fail_after(10):
            await deliver(StateDelivery(FileDelivery(path=str(path), signal=signal.SIGHUP)), b"{}", target)
    assert "exited before SIGHUP could be sent" in caught.value.last_error
    assert path.read_bytes() == b"{}"


# --- exec ---------------------------------------------------------------------------------------------------


def sh(script: str, *args: str, timeout: float = 10.0, retry: DeliveryRetry = FAST) -> StateDelivery:
    return StateDelivery(ExecDelivery(argv=("/bin/sh", "-c", script, "sh", *args), timeout_seconds=timeout), retry)


async def test_exec_accepted_with_the_state_on_stdin_and_the_child_in_its_environment(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    script = 'cat > "$1"; echo "$SUPD_CHILD $SUPD_CHILD_PID $SUPD_STATE_REVISION $SUPD_STATE_CONTENT_TYPE" > "$1.env"'
    target = Target("web", 4242, 7, "application/toml")
    with anyio.fail_after(10):
        assert await deliver(sh(script, str(out)), b"a = 1\n", target) == Delivered(1, "exit 0")
    assert out.read_bytes() == b"a = 1\n"
    assert (tmp_path / "out.env").read_text() == "web 4242 7 application/toml\n"


async def test_exec_rejected_with_its_stderr() -> None:
    failures: list[tuple[int, str]] = []
    with pytest.raises(DeliveryRejected) as caught, anyio.fail_after(10):
        await deliver(sh("cat >/dev/null; echo 'line 1: bad key' >&2; exit 3"), b"{}", WEB,
                      on_attempt=lambda n, e: failures.append((n, e)))
    assert (caught.value.attempts, caught.value.status) == (1, "exit 3")
    assert caught.value.message == "child 'web' rejected state revision 3: exit 3: line 1: bad key"
    assert failures == [(1, "exit 3: line 1: bad key")]


async def test_exec_timeout_kills_its_process_group_and_retries(tmp_path: pathlib.Path) -> None:
    # The first run leaves a grandchild in its group and hangs; the second accepts.
    pids, marker = tmp_path / "pids", tmp_path / "marker"
    script = 'if [ -e "$2" ]; then exit 0; fi; touch "$2"; sleep 60 & echo $! >> "$1"; wait'
    with anyio.fail_after(10):
        done = await deliver(sh(script, str(pids), str(marker), timeout=0.5), b"{}", WEB)
    assert done == Delivered(2, "exit 0")
    grandchild = int(pids.read_text())
    wait_for(lambda: process_gone(grandchild), 5, what="the hung program's grandchild to be killed")


async def test_exec_timeout_until_the_retries_are_spent() -> None:
    retry = DeliveryRetry(retries=1, backoff=Backoff(initial_seconds=0.01))
    with pytest.raises(DeliveryFailed) as caught, anyio.fail_after(10):
        await deliver(sh("echo waiting >&2; exec sleep 60", timeout=0.3, retry=retry), b"{}", WEB)
    assert (caught.value.attempts, caught.value.stopped_by) == (2, "retries")
    assert caught.value.last_error == "no exit within 0.30s, its process group killed: waiting"


async def test_a_cancelled_delivery_ends_at_once_and_leaves_nothing_running(tmp_path: pathlib.Path) -> None:
    # Cancelled in a wait between retries...
    slow = DeliveryRetry(retries=3, backoff=Backoff(initial_seconds=30, max_seconds=30), budget_seconds=120)
    refused = StateDelivery(HttpDelivery(url=f"http://127.0.0.1:{free_port()}/load"), retry=slow)
    started = time.monotonic()
    with anyio.move_on_after(0.3) as scope:
        await deliver(refused, b"{}", WEB)
    assert scope.cancelled_caught and time.monotonic() - started < 5
    # ...and in a hung program, whose whole group is killed.
    pids = tmp_path / "pids"
    async with anyio.create_task_group() as tg:
        tg.start_soon(deliver, sh('sleep 60 & echo $! > "$1.tmp"; mv "$1.tmp" "$1"; wait', str(pids), timeout=30),
                      b"{}", WEB)
        await until(pids.exists, what="the hung program's pid file")
        tg.cancel_scope.cancel()
    grandchild = int(pids.read_text())
    wait_for(lambda: process_gone(grandchild), 5, what="the cancelled program's grandchild to be killed")


async def test_exec_program_not_found_fails_at_once() -> None:
    delivery = StateDelivery(ExecDelivery(argv=("/nonexistent/reload-hook",)), retry=FAST)
    with pytest.raises(DeliveryFailed) as caught, anyio.fail_after(10):
        await deliver(delivery, b"{}", WEB)
    assert (caught.value.attempts, caught.value.stopped_by) == (1, "error")
    assert caught.value.last_error == "could not run /nonexistent/reload-hook: No such file or directory"


async def test_eight_mib_through_exec_while_it_floods_stderr(tmp_path: pathlib.Path) -> None:
    # The program writes 1 MB to stderr before reading stdin: without both pipes served at once, both stall.
    out = tmp_path / "count"
    state = os.urandom(8 * MiB)
    with anyio.fail_after(15):
        done = await deliver(sh('head -c 1000000 /dev/zero >&2; wc -c > "$1"', str(out)), state, WEB)
    assert done.detail == "exit 0"
    assert int(out.read_text()) == len(state)


async def test_a_program_that_exits_without_reading_its_stdin_is_judged_by_its_exit() -> None:
    with anyio.fail_after(10):
        assert (await deliver(sh("exit 0"), os.urandom(8 * MiB), WEB)).detail == "exit 0"
    with pytest.raises(DeliveryRejected, match="exit 5: nope"), anyio.fail_after(10):
        await deliver(sh("echo nope >&2; exit 5"), os.urandom(8 * MiB), WEB)


# --- footprint ----------------------------------------------------------------------------------------------


def test_httpx_is_loaded_only_by_an_http_delivery() -> None:
    code = (
        "import sys, supervisor._daemon.state.deliver as d; "
        "print(all(hasattr(d, n) for n in d.__all__), 'httpx' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "False"]


# --- the real Caddy (seed 02) ---------------------------------------------------------------------------------

CADDY = shutil.which("caddy")


@pytest.mark.skipif(CADDY is None and not os.environ.get("CI"), reason="caddy is not installed")
async def test_caddy_takes_a_config_and_refuses_bad_json_in_its_own_words(tmp_path: pathlib.Path) -> None:
    assert CADDY, "caddy is missing: .ci/run installs it with apt-get"
    admin_port, http_port = free_port(), free_port()
    admin = {"listen": f"127.0.0.1:{admin_port}"}
    (tmp_path / "caddy.json").write_text(json.dumps({"admin": admin}))
    config = {
        "admin": admin,
        "apps": {"http": {"servers": {"app": {
            "listen": [f"127.0.0.1:{http_port}"],
            "automatic_https": {"disable": True},
            "routes": [{"handle": [{"handler": "static_response", "body": "hello from caddy"}]}],
        }}}},
    }
    delivery = StateDelivery(HttpDelivery(url=f"http://127.0.0.1:{admin_port}/load"), retry=FAST)
    with running_caddy(tmp_path), anyio.fail_after(20):
        assert await wait_accepting(delivery, time.monotonic() + 15)
        assert (await deliver(delivery, json.dumps(config).encode(), WEB)).detail == "HTTP 200"
        async with httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(verify=False)) as client:
            assert (await client.get(f"http://127.0.0.1:{http_port}/")).text == "hello from caddy"
        with pytest.raises(DeliveryRejected) as caught:
            await deliver(delivery, b"{bad", WEB)
    assert caught.value.status == "HTTP 400" and caught.value.attempts == 1
    assert "invalid character" in caught.value.reason, caught.value.reason  # Go's JSON decoder speaking


@contextlib.contextmanager
def running_caddy(home: pathlib.Path) -> Iterator[None]:
    env = {"XDG_DATA_HOME": str(home), "XDG_CONFIG_HOME": str(home), "PATH": "/usr/bin:/bin"}
    caddy = subprocess.Popen([CADDY or "caddy", "run", "--config", str(home / "caddy.json")], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        caddy.terminate()
        caddy.wait(20)
