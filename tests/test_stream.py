"""Stream over the real server: order, completeness, partial lines, resume, removal."""

from __future__ import annotations

import sys

import grpc
import pytest

from supervisor.v1 import supervisor_pb2 as pb

from conftest import Follower, process_gone, spawn, split_lines, wait_for, wait_state, zoo


def test_burst_of_10000_lines_then_exit_arrives_in_order_with_tail_and_exit_last(stub):
    spawn(stub, "burst", zoo("lines", "10000", "no newline at the end", "0"))
    follower = Follower(stub, pb.StreamRequest(name="burst", from_seq=1, follow=True))
    follower.wait_event(pb.Event.KIND_EXITED)
    follower.cancel()
    lines = follower.lines()
    assert [text for _, text in lines] == [b"line %06d\n" % i for i in range(10000)] + [b"no newline at the end"]
    seqs = [seq for seq, _ in lines]
    assert seqs == list(range(2, 10003)), "line numbers follow the STARTED event without holes"
    kinds = [m.WhichOneof("item") for m in follower.messages]
    exit_index = next(i for i, m in enumerate(follower.messages) if m.HasField("event") and m.event.kind == 2)
    assert "lines" not in kinds[exit_index:], "the exit event comes strictly after the last line"
    assert follower.messages[exit_index].event.seq == 10003


def test_batches_are_columnar_and_bounded(stub):
    spawn(stub, "many", zoo("lines", "50000"))
    wait_state(stub, "many", pb.CHILD_STATE_EXITED)
    batches = [m.lines for m in stub.Stream(pb.StreamRequest(name="many"), timeout=20) if m.HasField("lines")]
    assert sum(len(b.lengths) for b in batches) == 50000
    assert len(batches) < 50000 / 100, "lines travel many to a message"
    assert max(len(b.data) for b in batches) <= 256 * 1024


def test_bytes_that_are_not_utf8_are_carried_unchanged(stub):
    spawn(stub, "bin", zoo("binary"))
    wait_state(stub, "bin", pb.CHILD_STATE_EXITED)
    lines = [line for m in stub.Stream(pb.StreamRequest(name="bin"), timeout=10) if m.HasField("lines")
             for line in split_lines(m.lines)]
    assert lines == [b"\xff\xfe bad \x80\n", b"\x00nul\n"]


def test_a_line_longer_than_the_maximum_is_split_into_pieces_never_dropped(stub):
    spawn(stub, "long", zoo("longline", "2000"), max_line_bytes=512)
    wait_state(stub, "long", pb.CHILD_STATE_EXITED)
    lines = [line for m in stub.Stream(pb.StreamRequest(name="long"), timeout=10) if m.HasField("lines")
             for line in split_lines(m.lines)]
    assert lines == [b"a" * 512, b"a" * 512, b"a" * 512, b"a" * 464 + b"\n", b"end\n"]


def test_resume_from_seq_has_no_duplicates_and_no_holes(stub):
    spawn(stub, "resume", zoo("lines", "3000"))
    wait_state(stub, "resume", pb.CHILD_STATE_EXITED)
    first = [seq for m in stub.Stream(pb.StreamRequest(name="resume", from_seq=1), timeout=10)
             if m.HasField("lines") for seq in range(m.lines.first_seq, m.lines.first_seq + len(m.lines.lengths))]
    # Resume in the middle of a batch, where the reader stopped.
    cut = first[1234]
    again = []
    for m in stub.Stream(pb.StreamRequest(name="resume", from_seq=cut), timeout=10):
        if m.HasField("lines"):
            again.extend(zip(range(m.lines.first_seq, m.lines.first_seq + len(m.lines.lengths)),
                             split_lines(m.lines), strict=True))
    assert [s for s, _ in again] == first[1234:]
    assert again[0][1] == b"line %06d\n" % 1234


def test_resume_older_than_the_ring_starts_with_a_gap(stub):
    spawn(stub, "small", zoo("lines", "20000"), ring_bytes=64 * 1024)
    wait_state(stub, "small", pb.CHILD_STATE_EXITED)
    info = stub.Health(pb.HealthRequest(name="small")).children[0]
    assert info.oldest_seq > 1 and info.ring_evicted_records == info.oldest_seq - 1
    messages = list(stub.Stream(pb.StreamRequest(name="small", from_seq=1), timeout=10))
    assert messages[0].HasField("gap")
    assert messages[0].gap.first_seq == 1 and messages[0].gap.count == info.oldest_seq - 1
    assert "evicted" in messages[0].gap.reason
    after = messages[1]
    assert (after.lines.first_seq if after.HasField("lines") else after.event.seq) == info.oldest_seq
    assert any(m.HasField("lines") for m in messages), "the ring still holds lines after the gap"


def test_from_seq_beyond_the_end_is_a_clear_error(stub):
    spawn(stub, "f", zoo("exit", "0"))
    wait_state(stub, "f", pb.CHILD_STATE_EXITED)
    with pytest.raises(grpc.RpcError) as err:
        list(stub.Stream(pb.StreamRequest(name="f", from_seq=10**9), timeout=5))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "beyond the newest record" in err.value.details()


def test_tail_returns_the_last_n_lines(stub):
    spawn(stub, "t", zoo("lines", "100"))
    wait_state(stub, "t", pb.CHILD_STATE_EXITED)
    lines = [line for m in stub.Stream(pb.StreamRequest(name="t", tail=3), timeout=10) if m.HasField("lines")
             for line in split_lines(m.lines)]
    assert lines == [b"line 000097\n", b"line 000098\n", b"line 000099\n"]


def test_stream_filter_by_output_stream(stub):
    spawn(stub, "mixed", ["sh", "-c", "echo out; echo err >&2; echo out2"])
    wait_state(stub, "mixed", pb.CHILD_STATE_EXITED)
    req = pb.StreamRequest(name="mixed", streams=[pb.OUTPUT_STREAM_STDERR])
    lines = [line for m in stub.Stream(req, timeout=10) if m.HasField("lines") for line in split_lines(m.lines)]
    assert lines == [b"err\n"]


def test_follow_delivers_a_lone_line_promptly(stub):
    spawn(stub, "talk", zoo("ticker", "0.2"))
    follower = Follower(stub, pb.StreamRequest(name="talk", follow=True))
    wait_for(lambda: len(follower.lines()) >= 2, timeout=10, what="two live lines")
    follower.cancel()
    texts = [t for _, t in follower.lines()]
    numbers = [int(t.split()[1]) for t in texts]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))


def test_remove_ends_followers_after_everything_queued_with_a_removed_event(stub):
    spawn(stub, "gone", zoo("say", "alpha", "beta"))
    follower = Follower(stub, pb.StreamRequest(name="gone", from_seq=1, follow=True))
    wait_for(lambda: len(follower.lines()) == 2, what="both lines")
    stub.Remove(pb.RemoveRequest(name="gone"), timeout=20)
    assert follower.done.wait(10), "the stream ends once the child is removed"
    assert follower.error is None, "a removal ends the stream with OK"
    last = follower.messages[-1]
    assert last.HasField("event") and last.event.kind == pb.Event.KIND_REMOVED
    kinds = [e.kind for e in follower.events()]
    assert kinds == [pb.Event.KIND_STARTED, pb.Event.KIND_EXITED, pb.Event.KIND_STOPPED, pb.Event.KIND_REMOVED]
    assert stub.List(pb.ListRequest()).children == []


def test_tail_zero_starts_after_everything_held(stub):
    spawn(stub, "t0", zoo("lines", "5"))
    wait_state(stub, "t0", pb.CHILD_STATE_EXITED)
    assert list(stub.Stream(pb.StreamRequest(name="t0", tail=0), timeout=10)) == []
    assert len(list(stub.Stream(pb.StreamRequest(name="t0"), timeout=10))) >= 3  # started, lines, exited


def test_a_grandchild_that_left_the_session_is_stopped_after_the_exit_and_its_last_lines_come_first(stub, tmp_path):
    """A daemonising grandchild (setsid) is still the child's: stopped once the leader exits, its last words drained
    before the exit event."""
    left = tmp_path / "left"
    # The leader exits only once the other process has left the session (it writes the file after setsid).
    escapee = f"trap 'echo escaped; exit 0' TERM; echo $$ > {left}; while :; do sleep 0.05; done"
    script = f"echo leader; setsid sh -c \"{escapee}\" & while [ ! -s {left} ]; do :; done"
    spawn(stub, "escape", ["sh", "-c", script])
    follower = Follower(stub, pb.StreamRequest(name="escape", from_seq=1, follow=True))
    follower.wait_event(pb.Event.KIND_EXITED)
    follower.cancel()
    lines = [t for _, t in follower.lines()]
    assert lines[0] == b"leader\n" and lines[-1] == b"escaped\n", lines  # (the shell may report its killed sleep)
    kinds = [m.event.kind if m.HasField("event") else m.WhichOneof("item") for m in follower.messages]
    assert kinds[-1] == pb.Event.KIND_EXITED, "every line of the generation comes before its exit event"
    assert process_gone(int(left.read_text()))


def test_a_long_utf8_line_is_cut_at_character_boundaries(stub):
    """Issue 15 item 10: "a" + "é" * 10000 gave pieces whose texts ended and started with U+FFFD."""
    line = "a" + "é" * 10000
    spawn(stub, "utf8", [sys.executable, "-c", f"print({line!r})"], max_line_bytes=256)
    wait_state(stub, "utf8", pb.CHILD_STATE_EXITED)
    pieces = [piece for m in stub.Stream(pb.StreamRequest(name="utf8"), timeout=10) if m.HasField("lines")
              for piece in split_lines(m.lines)]
    assert len(pieces) > 1 and all(len(p.rstrip(b"\n")) <= 256 for p in pieces)
    assert "".join(p.decode("utf-8") for p in pieces) == line + "\n"  # decode raises on a split character


def test_text_without_newline_shows_after_a_quiet_period_and_is_counted_when_read(stub):
    """Issue 15 item 11: a prompt without a newline was invisible, and "0 bytes drained", while the child ran."""
    child = "import sys, time; sys.stdout.write('Setting up things... '); sys.stdout.flush(); time.sleep(60)"
    spawn(stub, "prompt", [sys.executable, "-c", child])
    follower = Follower(stub, pb.StreamRequest(name="prompt", from_seq=1, follow=True))
    wait_for(lambda: [text for _, text in follower.lines()] == [b"Setting up things... "], timeout=10,
             what="the partial record")
    info = stub.Health(pb.HealthRequest(name="prompt"), timeout=10).children[0]
    assert info.bytes_drained == 21 and info.stdout_lines == 1
    follower.cancel()
    stub.Remove(pb.RemoveRequest(name="prompt"), timeout=20)


def test_pieces_of_a_line_without_newline_travel_many_to_a_batch(stub):
    """Issue 16: 100 MB of pieces took 409,600 messages, one per piece, and cutting them was quadratic."""
    spawn(stub, "pieces", [sys.executable, "-c", "import sys; sys.stdout.write('p' * (1 << 22))"],
          max_line_bytes=256)
    wait_state(stub, "pieces", pb.CHILD_STATE_EXITED)
    batches = [m.lines for m in stub.Stream(pb.StreamRequest(name="pieces"), timeout=30) if m.HasField("lines")]
    assert b"".join(b.data for b in batches) == b"p" * (1 << 22)
    assert sum(len(b.lengths) for b in batches) == (1 << 22) // 256
    assert len(batches) <= (1 << 22) // (256 * 1024) + 2


def test_lines_read_apart_keep_their_own_read_times_when_read_back_later(stub):
    """`logs --json` gave every line of a quiet child the time of the first, read back after the fact."""
    spawn(stub, "apart", ["/bin/sh", "-c", "echo one; sleep 1; echo two; exec sleep 60"])
    wait_for(lambda: stub.Health(pb.HealthRequest(name="apart"), timeout=10).children[0].stdout_lines == 2,
             what="both lines")
    batches = [m.lines for m in stub.Stream(pb.StreamRequest(name="apart"), timeout=10) if m.HasField("lines")]
    assert [split_lines(b) for b in batches] == [[b"one\n"], [b"two\n"]]
    apart = batches[1].time.ToNanoseconds() - batches[0].time.ToNanoseconds()
    assert apart >= 500_000_000, apart  # the child slept 1 s between them
    stub.Remove(pb.RemoveRequest(name="apart"), timeout=20)


def test_an_incomplete_utf8_character_is_not_held_back_while_the_child_waits(stub):
    """The last byte of a binary write (or a child stopping mid-character) stayed invisible until more came."""
    spawn(stub, "midchar", ["/bin/sh", "-c", r"printf 'xyz\342\202'; exec sleep 60"])

    def held() -> bytes:
        return b"".join(b.data for m in stub.Stream(pb.StreamRequest(name="midchar"), timeout=10)
                        if m.HasField("lines") for b in [m.lines])

    wait_for(lambda: held() == b"xyz\xe2\x82", timeout=10, what="every byte, the incomplete character too")
    stub.Remove(pb.RemoveRequest(name="midchar"), timeout=20)
