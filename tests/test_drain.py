"""The drain's line assembly and pipe reading, on real pipes, small ones included."""

from __future__ import annotations

import asyncio
import fcntl
import os
import random
import subprocess

from structlog.testing import capture_logs

from supervisor._daemon.output.child_output import ChildOutput, Pipes
from supervisor._daemon.output.drain import LineAssembler, PipeDrain, Poller
from supervisor._daemon.output.records import ChildEvent, EventKind, Origin
from supervisor._daemon.output.ring import Ring

from inproc import until


def assemble(chunks: list[bytes], max_line: int) -> list[bytes]:
    asm = LineAssembler(max_line)
    out = [seg for chunk in chunks for seg in asm.feed(chunk)]
    return out + asm.finish()


def lines_of(segments: list[bytes]) -> list[bytes]:
    out = []
    for seg in segments:
        parts = seg.split(b"\n")
        out.extend(p + b"\n" for p in parts[:-1])
        if parts[-1]:
            out.append(parts[-1])
    return out


def test_segments_end_at_line_ends_whatever_the_chunking():
    rng = random.Random(7)
    text = b"".join(b"x" * rng.randrange(0, 300) + b"\n" for _ in range(2000)) + b"tail"
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(text)), 50))
        chunks = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        segments = assemble(chunks, max_line=1000)
        assert b"".join(segments) == text
        assert all(s.endswith(b"\n") for s in segments[:-1])
        assert segments[-1] == b"tail"


def test_long_lines_become_pieces_and_nothing_is_lost():
    text = b"short\n" + b"L" * 2500 + b"\nafter\n" + b"T" * 1200
    segments = assemble([text[:1000], text[1000:]], max_line=1000)
    assert b"".join(segments) == text
    assert lines_of(segments) == [
        b"short\n", b"L" * 1000, b"L" * 1000, b"L" * 500 + b"\n", b"after\n", b"T" * 1000, b"T" * 200,
    ]


def test_exactly_max_line_is_not_split():
    assert lines_of(assemble([b"a" * 100 + b"\n"], max_line=100)) == [b"a" * 100 + b"\n"]
    assert lines_of(assemble([b"a" * 101 + b"\n"], max_line=100)) == [b"a" * 100, b"a\n"]


def test_drain_is_complete_and_prompt_with_the_smallest_pipes():
    """An unprivileged supd past its pipe quota gets tiny pipes: still every byte, in order."""

    async def main() -> bytes:
        r, w = os.pipe2(os.O_CLOEXEC)
        fcntl.fcntl(r, fcntl.F_SETPIPE_SZ, 4096)
        assert fcntl.fcntl(r, fcntl.F_GETPIPE_SZ) == 4096
        os.set_blocking(r, False)
        got: list[bytes] = []
        drain = PipeDrain(r, 16384, lambda parts, _counts: got.extend(parts), "test")
        writer = subprocess.Popen(  # noqa: ASYNC220 - starting it is instant; the drain is what is tested
            ["python3", "-c", "import sys; sys.stdout.buffer.write(b''.join(b'%07d\\n' % i for i in range(300000)))"],
            stdout=w,
        )
        os.close(w)
        await asyncio.wait_for(drain.wait_done(), 60)
        assert writer.wait(10) == 0
        return b"".join(got)

    data = asyncio.run(main())
    assert data == b"".join(b"%07d\n" % i for i in range(300000))


def _origin(gen: int = 1) -> Origin:
    return Origin("c", gen, os.getpid(), "test")


def _records(ring: Ring) -> list[bytes]:
    out = []
    seq = ring.oldest_seq
    while (seg := ring.find(seq)) is not None:
        if seg.event is None:
            idx = seg.index()
            out += [seg.data[idx.offset(k) : idx.ends[k]] for k in range(seg.count)]
        seq = seg.end_seq
    return out


def test_text_without_newline_is_emitted_after_a_quiet_period_and_counted_when_read():
    """Issue 15 item 11: a prompt written without a newline was invisible, and "0 bytes drained", until EOF."""

    async def main() -> None:
        poller = Poller()
        out = ChildOutput("c", 1 << 20, 1024, poller=poller)
        pipes = Pipes()
        w = os.dup(pipes.stdout_write)
        try:
            out.start(pipes, _origin())
            out.append_event(ChildEvent(EventKind.STARTED, time_ns=0, generation=1))
            os.write(w, b"Setting up things... ")
            await until(lambda: out.statistics().bytes_drained == 21, what="bytes counted when read")
            await until(lambda: _records(out.ring) == [b"Setting up things... "], what="the partial record")
            assert out.statistics().stdout_lines == 1
            os.write(w, b"done\nEnter password: ")
            await until(lambda: len(_records(out.ring)) == 3, what="the next line and the next partial")
            assert _records(out.ring) == [b"Setting up things... ", b"done\n", b"Enter password: "]
            assert out.statistics().bytes_drained == 42
        finally:
            os.close(w)
            out.close(ChildEvent(EventKind.REMOVED, time_ns=0, generation=1))
            poller.stop()

    asyncio.run(main())


def test_the_exit_follows_the_last_line_although_draining_runs_on_another_thread():
    async def main() -> None:
        poller = Poller()
        out = ChildOutput("c", 64 << 20, 1024, poller=poller)
        try:
            for gen in range(1, 21):
                pipes = Pipes()
                writer = subprocess.Popen(  # noqa: ASYNC220 - starting it is instant; the order is what is tested
                    ["python3", "-c", "import os; os.write(1, b'x\\n' * 50000); os.write(1, b'last')"],
                    stdout=pipes.stdout_write, stderr=pipes.stderr_write,
                )
                gen_out = out.start(pipes, _origin(gen))
                out.append_event(ChildEvent(EventKind.STARTED, time_ns=0, generation=gen))
                assert await gen_out.wait_eof(30) == []
                out.append_event(ChildEvent(EventKind.EXITED, time_ns=0, generation=gen))
                writer.wait()
            seq, order = 1, []
            while (seg := out.ring.find(seq)) is not None:
                order.append(seg.event.kind.name[0] if seg.event is not None else "L" + seg.data[-4:].decode())
                seq = seg.end_seq
            assert [o for o in order if not o.startswith("L")] == ["S", "E"] * 20
            for i, o in enumerate(order):
                if o == "Llast":
                    assert order[i + 1] == "E", "EXITED right after the generation's last line"
                if o == "E":
                    assert order[i - 1] == "Llast", "nothing of a generation after its EXITED"
            assert out.statistics().stdout_lines == 20 * 50001
        finally:
            out.close(ChildEvent(EventKind.REMOVED, time_ns=0, generation=1))
            poller.stop()

    asyncio.run(main())


def test_a_failing_consumer_is_logged_counted_and_the_other_pipes_go_on():
    async def main() -> None:
        poller = Poller()
        good: list[bytes] = []

        def bad(parts: list[bytes], counts: list[int]) -> None:
            raise ValueError("consumer broke")

        r1, w1 = os.pipe2(os.O_CLOEXEC)
        r2, w2 = os.pipe2(os.O_CLOEXEC)
        os.set_blocking(r1, False)
        os.set_blocking(r2, False)
        try:
            with capture_logs() as logs:
                broken = PipeDrain(r1, 100, bad, "broken", poller=poller)
                fine = PipeDrain(r2, 100, lambda parts, _counts: good.extend(parts), "fine", poller=poller)
                os.write(w1, b"boom\n")
                await asyncio.wait_for(broken.wait_done(), 10)
                os.write(w2, b"still here\n")
                os.close(w2)
                await asyncio.wait_for(fine.wait_done(), 10)
            assert good == [b"still here\n"]
            assert poller.errors == 1
            assert [e["pipe"] for e in logs if e["event"] == "drain.failed"] == ["broken"]
        finally:
            os.close(w1)
            poller.stop()

    asyncio.run(main())
