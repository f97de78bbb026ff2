"""supd's own log never blocks: a bounded queue, a writer thread, drops counted and summarised (issue 15 item 3).

Guards: with supd's stderr on a pipe nobody reads, after about 150 Spawns every RPC timed out and a chatty child
blocked in write(), because structlog wrote each JSON line to stderr synchronously on the event loop.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import select
import subprocess
import threading
import time
from collections.abc import Iterator

import grpc
import pytest

from supervisor._daemon.telemetry.log_writer import LogWriter
from supervisor.testing import supd_command, wait_until
from supervisor.v1 import supervisor_pb2 as pb
from supervisor.v1 import supervisor_pb2_grpc as pb_grpc

from conftest import zoo

LINE = '{"event": "x", "pad": "' + "p" * 100 + '"}\n'


def read_all(fd: int, until: bytes, timeout: float = 20.0) -> bytes:
    """Read ``fd`` until ``until`` and the end of its line have arrived, under a deadline."""
    seen = b""
    deadline = time.monotonic() + timeout
    while until not in seen or not seen.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {until!r} within {timeout}s; got {seen[-500:]!r}")
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise AssertionError(f"EOF before {until!r}; got {seen[-500:]!r}")
            seen += chunk
    return seen


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    for fd in (r, w):
        with contextlib.suppress(OSError):
            os.close(fd)


def test_write_never_blocks_on_a_full_pipe_and_counts_every_line(pipe: tuple[int, int]) -> None:
    r, w = pipe
    writer = LogWriter(w, max_lines=100, summary_interval=0.05)
    total = 5000
    started = time.monotonic()
    for _ in range(total):
        writer.write(LINE)
    assert time.monotonic() - started < 5.0  # 5000 blocking writes into a 64 KiB pipe would never return
    stats = writer.statistics()
    assert stats.dropped > 0 and stats.queued <= 100
    # Once the pipe is read, what was queued arrives, followed by a summary naming the drops.
    received = read_all(r, b'"supd.log.dropped"')
    assert writer.drain(10.0)
    while select.select([r], [], [], 0)[0]:  # everything is in the pipe now: take the rest
        received += os.read(r, 1 << 16)
    stats = writer.statistics()
    assert stats.written + stats.dropped == total and stats.queued == 0
    events = [json.loads(line) for line in received.decode().splitlines()]
    assert [e["event"] for e in events].count("x") == stats.written
    summaries = [e for e in events if e["event"] == "supd.log.dropped"]
    assert sum(e["dropped"] for e in summaries) == stats.dropped and summaries[-1]["level"] == "warning"


def test_a_closed_reader_is_counted_not_raised(pipe: tuple[int, int]) -> None:
    r, w = pipe
    os.close(r)
    writer = LogWriter(w)
    for _ in range(10):
        writer.write(LINE)
    wait_until(lambda: writer.statistics().dropped == 10, 10, what="the lines to be counted as dropped")
    stats = writer.statistics()
    assert stats.written == 0 and stats.write_errors >= 1 and (stats.last_error or "").startswith("EPIPE")


# -- a real supd whose stderr nobody reads ------------------------------------------------------------------------


def test_supd_answers_and_drains_while_nobody_reads_its_stderr(tmp_path: pathlib.Path) -> None:
    socket = tmp_path / "run" / "supd.sock"
    proc = subprocess.Popen(
        [*supd_command(), "--socket", str(socket)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,  # a pipe nobody reads until the end
    )
    assert proc.stderr is not None
    rest = threading.Thread(target=proc.stderr.read, daemon=True)  # started once the test has read the summary
    try:
        with grpc.insecure_channel(f"unix://{socket}") as channel:
            stub = pb_grpc.SupervisorStub(channel)

            def answers() -> bool:
                try:
                    stub.List(pb.ListRequest(), timeout=1)
                except grpc.RpcError:
                    return False
                return True

            wait_until(answers, 20, what="supd to answer")
            chatty = pb.ChildSpec(name="chatty", argv=zoo("ticker", "0.001"), restart=pb.RESTART_POLICY_NEVER)
            stub.Spawn(pb.SpawnRequest(spec=chatty), timeout=10)
            # 300 Spawns (two log events each) fill a 64 KiB pipe; the old supd stopped answering at about 150.
            for i in range(300):
                spec = pb.ChildSpec(name=f"t{i}", argv=["true"], restart=pb.RESTART_POLICY_NEVER)
                stub.Spawn(pb.SpawnRequest(spec=spec), timeout=10)
            # Refused Spawns log one event each and spawn nothing: enough of them overflow supd's log queue.
            bad = pb.ChildSpec(name="bad", argv=["true"], stop_grace_seconds=-1)
            for _ in range(3000):
                with pytest.raises(grpc.RpcError) as err:
                    stub.Spawn(pb.SpawnRequest(spec=bad), timeout=10)
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

            def drained() -> int:
                return stub.Health(pb.HealthRequest(name="chatty"), timeout=5).children[0].stdout_lines

            before = drained()
            wait_until(lambda: drained() > before + 100, 20, what="the chatty child to keep being drained")

            # Now read the pipe: supd's queued events arrive, then a summary of what it had to drop.
            text = read_all(proc.stderr.fileno(), b'"supd.log.dropped"', timeout=30).decode()
            # Keep reading until supd exits, as a log collector would.
            rest.start()
            health_dropped = stub.Health(pb.HealthRequest(), timeout=5).log_dropped_events
    finally:
        proc.terminate()
        proc.wait(30)
        if rest.is_alive():
            rest.join(10)
        proc.stderr.close()
    summary = next(json.loads(line) for line in text.splitlines() if '"supd.log.dropped"' in line)
    assert summary["dropped"] > 0 and summary["level"] == "warning"
    assert health_dropped >= summary["dropped"] > 0
