"""Readers never hold anything up (seeds 03 and 05), and order holds at the end of every stream."""

from __future__ import annotations

import os
import pathlib
import signal
import threading

import grpc
import pytest

from supervisor.v1 import supervisor_pb2 as pb

from conftest import Follower, spawn, split_lines, wait_for, wait_state, zoo

TOTAL = 500_000  # lines of 100 bytes: 50 MB


class SlowReader:
    """A Stream reader that pauses between messages until told to hurry."""

    def __init__(self, stub, request: pb.StreamRequest, pause: float) -> None:
        self.lines = 0
        self.gap_records = 0
        self.events: list[pb.Event] = []
        self.pause = pause
        self.hurry = threading.Event()
        self.done = threading.Event()
        self.error: grpc.RpcError | None = None
        self._call = stub.Stream(request, timeout=120)
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        try:
            for m in self._call:
                if m.HasField("lines"):
                    self.lines += len(m.lines.lengths)
                elif m.HasField("gap"):
                    self.gap_records += m.gap.count
                else:
                    self.events.append(m.event)
                    if m.event.kind == pb.Event.KIND_EXITED:
                        return
                if not self.hurry.is_set():
                    self.hurry.wait(self.pause)  # a deliberately slow consumer, not synchronisation
        except grpc.RpcError as exc:
            self.error = exc
        finally:
            self.done.set()


def test_a_slow_reader_neither_slows_the_child_nor_a_fast_reader(stub, tmp_path: pathlib.Path):
    go = tmp_path / "go"
    # 50 MB at about 25 MB/s into a ring of 24 MiB: room for a reader that keeps up, even on a loaded machine,
    # and far too little for one that takes a message every 0.2 s.
    spawn(stub, "flood", zoo("wait-then-flood", str(go), str(TOTAL), "100", "0.04"), ring_bytes=24 << 20)
    fast = Follower(stub, pb.StreamRequest(name="flood", from_seq=1, follow=True))
    slow = SlowReader(stub, pb.StreamRequest(name="flood", from_seq=1, follow=True), pause=0.2)
    wait_for(fast.events, what="the fast reader to be attached")
    go.touch()
    info = wait_state(stub, "flood", pb.CHILD_STATE_EXITED, timeout=60)
    assert info.last_exit.code == 0
    # The child ran to completion while the slow reader was still far behind: it was never held up.
    assert slow.lines < TOTAL // 2
    fast.wait_event(pb.Event.KIND_EXITED, timeout=60)
    numbers = [int(text[:10]) for _, text in fast.lines()]
    assert numbers == list(range(TOTAL)), "the fast reader gets every line in order"
    slow.hurry.set()
    assert slow.done.wait(60)
    assert slow.error is None
    assert slow.gap_records > 0, "the slow reader fell behind the ring and was told"
    # Every record between STARTED and EXITED was either received or counted as lost.
    exited = [e for e in slow.events if e.kind == pb.Event.KIND_EXITED]
    assert exited, "the slow reader still gets the exit event"
    received_events = len(slow.events)
    assert slow.lines + slow.gap_records + received_events == exited[0].seq
    fast.cancel()


# 300 runs (150 of each kind) in every run; SUPD_TEST_EXIT_ORDER_RUNS=1000 or more for the long form.
RUNS = int(os.environ.get("SUPD_TEST_EXIT_ORDER_RUNS", "300"))


LINES = 10_000


def line_count(follower: Follower) -> int:
    return sum(len(m.lines.lengths) for m in list(follower.messages) if m.HasField("lines"))


@pytest.mark.parametrize("how", ["exit-code", "sigkill"])
def test_exit_event_comes_after_the_last_line_every_time(stub, how: str):
    """Many runs: 10,000 lines plus an unterminated tail, then an exit by code or by SIGKILL from outside."""
    batch = 10
    for start in range(0, RUNS // 2, batch):
        names = [f"{how}-{i}" for i in range(start, min(start + batch, RUNS // 2))]
        followers = {}
        for name in names:
            argv = zoo("lines", str(LINES), "tail", "7") if how == "exit-code" else zoo("lines-then-wait", str(LINES))
            info = spawn(stub, name, argv)
            followers[name] = (info, Follower(stub, pb.StreamRequest(name=name, from_seq=1, follow=True)))
        for name, (info, follower) in followers.items():
            if how == "sigkill":
                # The tail has no newline: it comes at EOF or after a quiet period, so LINES lines mean the rest is in.
                wait_for(lambda f=follower: line_count(f) >= LINES, what=f"{name} to finish its lines")
                os.kill(info.pid, signal.SIGKILL)
            follower.wait_event(pb.Event.KIND_EXITED)
            follower.cancel()
            kinds = [m.WhichOneof("item") for m in follower.messages]
            exit_at = next(i for i, m in enumerate(follower.messages) if m.HasField("event") and m.event.kind == 2)
            assert "lines" not in kinds[exit_at:], name
            assert line_count(follower) == LINES + 1, name
            last = next(m.lines for m in reversed(follower.messages[:exit_at]) if m.HasField("lines"))
            assert split_lines(last)[-1] == b"tail", name
            exit_event = follower.messages[exit_at].event
            assert exit_event.seq == LINES + 3, name  # STARTED=1, lines 2..LINES+2
            if how == "sigkill":
                assert exit_event.exit.signal == signal.SIGKILL
            else:
                assert exit_event.exit.code == 7
            stub.Remove(pb.RemoveRequest(name=name), timeout=10)
