"""supervisor.client against a real supd: the sync and async clients, follow across real reconnects, wait_ready.

One supd serves the module (each test names its own children). Reconnects go
through a TCP proxy (tests/tcp_proxy.py) that the test cuts: the client's
connection really breaks, and it really connects again.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import pathlib
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from tcp_proxy import TcpProxy

from supervisor import errors
from supervisor.client import AsyncClient, Client, Connection, Line
from supervisor.testing import SupervisorProcess, running_supervisor, wait_until
from supervisor.v1 import supervisor_pb2 as pb

from conftest import zoo


@pytest.fixture(scope="module")
def sup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SupervisorProcess]:
    with running_supervisor(tmp_path_factory.mktemp("client")) as handle:
        yield handle


@pytest.fixture
def client(sup: SupervisorProcess) -> Iterator[Client]:
    with Client(sup.address) as c:
        yield c


def test_importing_the_client_loads_neither_the_daemon_nor_opentelemetry() -> None:
    code = (
        "import sys, supervisor.client; "
        "print(sorted(m for m in sys.modules if m.startswith(('supervisor._daemon', 'opentelemetry'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_sync_client_drives_a_child_through_its_life(client: Client) -> None:
    child = client.spawn(name="life", argv=zoo("ticker", "0.05"), restart="never", stop_grace_seconds=5)
    assert child.state == pb.CHILD_STATE_RUNNING and child.pid > 0
    assert [c.spec.name for c in client.list()] == ["life"]
    assert client.health("life").children[0].spec.stop_grace_seconds == 5
    client.signal("life", "CONT")
    again = client.restart("life")
    assert again.generation == child.generation + 1 and again.pid != child.pid
    stopped = client.stop("life")
    assert stopped.child.state == pb.CHILD_STATE_STOPPED and stopped.exit.requested
    client.remove("life")
    assert client.list() == []


def test_errors_are_the_taxonomy_with_supds_words(client: Client) -> None:
    with pytest.raises(errors.NotFound, match="nobody"):
        client.stop("nobody")
    with pytest.raises(errors.InvalidArgument, match="stop_grace_seconds"):
        client.spawn(name="bad", argv=["true"], stop_grace_seconds=-1)
    client.spawn(name="twice", argv=zoo("ticker", "1"))
    with pytest.raises(errors.AlreadyExists) as caught:
        client.spawn(name="twice", argv=["true"])
    assert caught.value.code.name == "ALREADY_EXISTS" and caught.value.__cause__ is not None
    assert client.spawn(name="twice", argv=zoo("ticker", "1"), replace=True).generation == 1
    with pytest.raises(ValueError, match="signal"):
        client.signal("twice", "NOPE")
    client.remove("twice")


def test_reload_and_get_state_with_a_file_delivery(client: Client, tmp_path: pathlib.Path) -> None:
    target = tmp_path / "state.json"
    delivery = pb.StateDelivery(file=pb.FileDelivery(path=str(target)))
    client.spawn(name="stateful", argv=zoo("ticker", "1"), state_delivery=delivery)
    reply = client.reload("stateful", '{"v": 1}', content_type="application/json")
    assert reply.revision == 1 and target.read_bytes() == b'{"v": 1}'
    with pytest.raises(errors.Aborted):
        client.reload("stateful", "x", expected_revision=0)
    state = client.get_state("stateful")
    assert state.revision.state == b'{"v": 1}' and state.revision.content_type == "application/json"
    client.remove("stateful")


def test_async_client_spawns_follows_to_the_exit_and_reads_health(sup: SupervisorProcess) -> None:
    async def run() -> tuple[list[str], pb.Event, pb.HealthResponse]:
        async with AsyncClient(sup.address) as supd:
            spec = pb.ChildSpec(name="once", argv=zoo("lines", "3", "tail", "3"), restart=pb.RESTART_POLICY_NEVER)
            await supd.spawn(spec)
            texts: list[str] = []
            async for item in supd.follow("once"):
                if isinstance(item, Line):
                    texts.append(item.text)
                elif isinstance(item, pb.Event) and item.kind == pb.Event.KIND_EXITED:
                    health = await supd.health("once")
                    await supd.remove("once")
                    return texts, item, health
            raise AssertionError("the stream ended before the exit")

    texts, exited, health = asyncio.run(asyncio.wait_for(run(), 20))
    assert texts == ["line 000000", "line 000001", "line 000002", "tail"]
    assert exited.exit.code == 3
    assert health.children[0].state == pb.CHILD_STATE_EXITED and health.version


def _check_contiguous(items: list[Line | pb.Event | pb.Gap]) -> int:
    """Every sequence number once, in order, gaps counted; returns the next one expected."""
    expected = None
    for item in items:
        first = item.first_seq if isinstance(item, pb.Gap) else item.seq
        assert expected is None or first == expected, f"expected seq {expected}, got {item}"
        expected = first + (item.count if isinstance(item, pb.Gap) else 1)
    assert expected is not None
    return expected


def _ticks(items: list[Line | pb.Event | pb.Gap]) -> list[int]:
    return [int(i.text.split()[1]) for i in items if isinstance(i, Line)]


def test_follow_resumes_after_the_connection_is_cut_with_no_duplicates_and_no_holes(
    client: Client, sup: SupervisorProcess
) -> None:
    client.spawn(name="ticker", argv=zoo("ticker", "0.01"))
    with TcpProxy(str(sup.socket)) as proxy, Client(Connection(proxy.address, insecure=True)) as remote:
        items: list[Line | pb.Event | pb.Gap] = []
        for item in remote.follow("ticker"):
            items.append(item)
            ticks = _ticks(items)
            if len(ticks) == 20:
                proxy.cut()
                # While the connection is down the child writes on; the ring keeps it.
                cut_at = _check_contiguous(items)
                wait_until(lambda n=cut_at: client.child("ticker").next_seq > n + 30, what="ticks while cut")
                proxy.resume()
            if len(ticks) >= 80:
                break
        assert proxy.accepted >= 2  # the stream really came back over a new connection
    client.remove("ticker")
    assert _check_contiguous(items) > cut_at + 30  # what was written while cut came after the reconnect
    assert not any(isinstance(i, pb.Gap) for i in items)
    ticks = _ticks(items)
    assert ticks == list(range(ticks[0], ticks[0] + len(ticks)))


def test_follow_reports_the_records_the_ring_lost_while_cut_as_one_exact_gap(
    client: Client, sup: SupervisorProcess, tmp_path: pathlib.Path
) -> None:
    go = tmp_path / "go"
    client.spawn(name="flood", argv=zoo("wait-then-flood", str(go), "3000"), ring_bytes=65536, restart="never")

    async def run(proxy: TcpProxy) -> list[Line | pb.Event | pb.Gap]:
        items: list[Line | pb.Event | pb.Gap] = []
        async with AsyncClient(Connection(proxy.address, insecure=True)) as remote:
            async for item in remote.follow("flood"):
                items.append(item)
                if isinstance(item, pb.Event) and item.kind == pb.Event.KIND_STARTED:
                    proxy.cut()
                    go.touch()
                    await asyncio.to_thread(
                        wait_until, lambda: client.child("flood").state == pb.CHILD_STATE_EXITED, what="flood done"
                    )
                    proxy.resume()
                if isinstance(item, pb.Event) and item.kind == pb.Event.KIND_EXITED:
                    return items
        raise AssertionError("the stream ended before the exit")

    with TcpProxy(str(sup.socket)) as proxy:
        items = asyncio.run(asyncio.wait_for(run(proxy), 30))
    client.remove("flood")
    assert _check_contiguous(items) == items[-1].seq + 1  # type: ignore[union-attr]
    gaps = [i for i in items if isinstance(i, pb.Gap)]
    assert len(gaps) == 1 and gaps[0].first_seq == items[0].seq + 1 and "evicted" in gaps[0].reason
    first_after = next(i for i in items if isinstance(i, Line))
    # Line k of the flood has seq (STARTED's seq + 1 + k): the numbers match the sequence exactly.
    assert int(first_after.data[:10]) == first_after.seq - items[0].seq - 1
    assert int(items[-2].data[:10]) == 2999  # type: ignore[union-attr]


def test_follow_without_reconnect_raises_unavailable_when_cut(client: Client, sup: SupervisorProcess) -> None:
    client.spawn(name="cut", argv=zoo("ticker", "0.01"))
    with (
        TcpProxy(str(sup.socket)) as proxy,
        Client(Connection(proxy.address, insecure=True)) as remote,
        pytest.raises(errors.Unavailable),
    ):
        for item in remote.follow("cut", reconnect=0):
            if isinstance(item, Line):
                proxy.cut()
    client.remove("cut")


def test_follow_of_a_supd_never_reached_fails_at_once(tmp_path: pathlib.Path) -> None:
    started = time.monotonic()
    with Client(f"unix://{tmp_path / 'nobody.sock'}") as nowhere, pytest.raises(errors.Unavailable):
        next(nowhere.follow("web", reconnect=60))
    assert time.monotonic() - started < 30  # not the reconnect budget: there was nothing to reconnect to


def test_wait_ready_waits_for_readiness_and_says_why_it_gave_up(client: Client, tmp_path: pathlib.Path) -> None:
    flag = tmp_path / "ready"
    probe = pb.Probe(exec=pb.ExecAction(argv=["test", "-e", str(flag)]), period_seconds=0.05)
    client.spawn(name="slow", argv=zoo("ticker", "1"), readiness_probe=probe)
    with pytest.raises(errors.DeadlineExceeded, match=r"slow did not become ready within 0.3s \(RUNNING, NOT_READY"):
        client.wait_ready("slow", timeout=0.3)
    flag.touch()
    assert client.wait_ready("slow", timeout=20).health == pb.CHILD_HEALTH_READY

    async def wait_async() -> pb.ChildInfo:
        async with AsyncClient(client.connection) as supd:
            return await supd.wait_ready("slow", timeout=20)

    assert asyncio.run(wait_async()).health == pb.CHILD_HEALTH_READY
    client.stop("slow")
    with pytest.raises(errors.FailedPrecondition, match="slow will not become ready: it is stopped"):
        client.wait_ready("slow", timeout=20)
    with pytest.raises(errors.NotFound):
        client.wait_ready("nobody", timeout=20)
    client.remove("slow")


def test_follow_since_drops_older_records(client: Client) -> None:
    client.spawn(name="since", argv=zoo("lines", "5"), restart="never")
    wait_until(lambda: client.child("since").state == pb.CHILD_STATE_EXITED, what="lines written")
    everything = list(client.follow("since", live=False))
    last = everything[-1]
    assert isinstance(last, pb.Event)
    later = list(client.follow("since", live=False, since=last.time.ToDatetime(tzinfo=datetime.UTC)))
    assert [i.seq for i in later] == [last.seq]
    client.remove("since")


EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "clients" / "python" / "examples"
EXPECTED = {
    "spawn_and_follow.py": "stdout: hello\nstderr: oops\nexited: exited with code 3\n",
    "ready_and_reload.py": (
        "not ready yet: configured did not become ready within 0.5s\n"
        "state revision 1 accepted\n"
        "configured is CHILD_HEALTH_READY\n"
    ),
}


def test_every_example_is_checked() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("example", sorted(EXPECTED))
def test_example_runs_against_a_real_supd(example: str, sup: SupervisorProcess) -> None:
    env = {**os.environ, "SUPD_ADDR": sup.address}
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / example)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == EXPECTED[example]


def test_every_public_name_of_the_client_exists() -> None:
    import supervisor.client

    for name in supervisor.client.__all__:
        assert getattr(supervisor.client, name) is not None, name
    with pytest.raises(AttributeError):
        supervisor.client.Nothing  # noqa: B018 - the attribute access is the test
