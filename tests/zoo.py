"""A small zoo of child programs for the tests, one subcommand each.

Run as ``python tests/zoo.py KIND [ARGS]``. Each behaves in one named way
(floods stderr, ignores SIGTERM, ends without a newline...) so that a test
reads as the behaviour it checks.
"""

from __future__ import annotations

import os
import signal
import sys
import time


def flood_stderr(nbytes: str) -> None:
    """Write N bytes to stderr in one go and exit 0: freezes if nobody drains the pipe (seed 01)."""
    line = b"x" * 99 + b"\n"
    n = int(nbytes)
    sys.stderr.buffer.write(line * (n // 100))
    sys.stderr.buffer.flush()


def lines(count: str, tail: str = "", code: str = "0") -> None:
    """Numbered lines 0..count-1 in a burst, an optional unterminated tail, then exit(code)."""
    out = sys.stdout.buffer
    out.write(b"".join(b"line %06d\n" % i for i in range(int(count))))
    out.write(tail.encode())
    out.flush()
    os._exit(int(code))


def ignore_term(pidfile: str) -> None:
    """Ignore SIGTERM, fork a grandchild that ignores it too, write both pids, wait forever."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pid = os.fork()
    if pid == 0:
        while True:
            signal.pause()
    with open(pidfile + ".tmp", "w") as f:
        f.write(f"{os.getpid()} {pid}\n")
    os.rename(pidfile + ".tmp", pidfile)
    print("ready", flush=True)
    while True:
        signal.pause()


def term_fast() -> None:
    """Exit 0 promptly on SIGTERM."""
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    print("ready", flush=True)
    while True:
        signal.pause()


def echo_stdin_lines_then_wait(*words: str) -> None:
    """Print each word as a line, then wait for a signal."""
    for w in words:
        print(w, flush=True)
    while True:
        signal.pause()


def binary() -> None:
    """Bytes that are not UTF-8, newline-terminated, then exit 0."""
    sys.stdout.buffer.write(b"\xff\xfe bad \x80\n\x00nul\n")
    sys.stdout.buffer.flush()


def longline(n: str) -> None:
    """One line of N 'a' bytes, terminated, then 'end'."""
    sys.stdout.buffer.write(b"a" * int(n) + b"\nend\n")
    sys.stdout.buffer.flush()


def ticker(interval: str = "0.01") -> None:
    """A numbered line every interval seconds, forever."""
    i = 0
    while True:
        print(f"tick {i}", flush=True)
        i += 1
        time.sleep(float(interval))


def wait_then_flood(path: str, count: str, width: str = "100", pause: str = "0") -> None:
    """Wait until PATH exists, then write COUNT numbered lines of WIDTH bytes in 1 MB writes.

    PAUSE seconds between writes sets a pace a reader in the test process can hold even on a loaded machine.
    """
    deadline = time.monotonic() + 60
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            os._exit(3)
        time.sleep(0.005)
    n, w, gap = int(count), int(width), float(pause)
    filler = b"f" * (w - 11)
    out = sys.stdout.buffer
    for start in range(0, n, 10000):
        out.write(b"".join(b"%010d " % i + filler[:-1] + b"\n" for i in range(start, min(n, start + 10000))))
        out.flush()
        if gap:
            time.sleep(gap)


def lines_then_wait(count: str) -> None:
    """Numbered lines and an unterminated tail, then block until killed."""
    sys.stdout.buffer.write(b"".join(b"line %06d\n" % i for i in range(int(count))) + b"tail")
    sys.stdout.buffer.flush()
    while True:
        signal.pause()


def exit_code(code: str) -> None:
    os._exit(int(code))


KINDS = {
    "flood-stderr": flood_stderr,
    "lines": lines,
    "ignore-term": ignore_term,
    "term-fast": term_fast,
    "say": echo_stdin_lines_then_wait,
    "binary": binary,
    "longline": longline,
    "ticker": ticker,
    "exit": exit_code,
    "wait-then-flood": wait_then_flood,
    "lines-then-wait": lines_then_wait,
}

if __name__ == "__main__":
    KINDS[sys.argv[1]](*sys.argv[2:])
