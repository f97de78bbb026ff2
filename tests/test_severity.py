"""Severity of child output lines: each rule of supervisor/_daemon/telemetry/severity.py, and what must not match."""

from __future__ import annotations

import time

import pytest

from supervisor._daemon.output.sinks import STDERR, STDOUT
from supervisor._daemon.telemetry.severity import HEAD, Severity, level_of, severity_of, stream_default

S = Severity


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # JSON objects: level / severity / lvl keys, names and pino numbers
        (b'{"level":"error","msg":"boom"}', S.ERROR),
        (b'{"time":"2024-05-01T12:00:00.123456789Z","pid":4242,"hostname":"web-1","level":"warning"}', S.WARN),
        (b'{"severity": "CRITICAL", "message": "disk full"}', S.FATAL),
        (b'{"lvl":"dbug"}', None),
        (b'{"lvl":"debug"}', S.DEBUG),
        (b'{"level":30,"msg":"listening"}', S.INFO),
        (b'{"level":50,"msg":"failed"}', S.ERROR),
        (b'{"level":60}', S.FATAL),
        (b'{"level":10}', S.TRACE),
        (b'{"msg":"no level here"}', None),
        (b'{"msg":"{\\"level\\":\\"error\\"}"}', None),  # an escaped key inside a string is not a key
        (b'{"level":"panic"}', S.FATAL),
        # syslog priority prefix (sd-daemon)
        (b"<3>cannot bind", S.ERROR),
        (b"<4>slow", S.WARN),
        (b"<7>details", S.DEBUG),
        (b"<0>emergency", S.FATAL),
        (b"<9>not a priority", None),
        # glog / klog
        (b"E1124 12:00:00.123456    4242 main.go:42] connection refused", S.ERROR),
        (b"W0101 00:00:00.000000 1 x.go:1] careful", S.WARN),
        (b"I0101 00:00:00.000000 1 x.go:1] fine", S.INFO),
        (b"F0101 00:00:00.000000 1 x.go:1] dead", S.FATAL),
        # logfmt
        (b'time="2024-05-01T12:00:00Z" level=error msg="boom"', S.ERROR),
        (b"ts=2024-05-01T12:00:00Z lvl=warn msg=slow", S.WARN),
        (b"t=1 severity='info' m=x", S.INFO),
        (b"xlevel=error", None),
        # a level word at the start
        (b"ERROR something failed", S.ERROR),
        (b"[WARN] disk almost full", S.WARN),
        (b"WARNING:root:deprecated", S.WARN),
        (b"2024-05-01 12:00:00,123 INFO started", S.INFO),
        (b"2024-05-01T12:00:00.000Z\tDEBUG\tmain\tdetail", S.DEBUG),
        (b"[2024-05-01T12:00:00Z ERROR my_app] bad", S.ERROR),
        (b"2023/05/01 12:00:00 [error] 12#0: open() failed", S.ERROR),
        (b"error: could not open file", S.ERROR),
        (b"fatal: not a git repository", S.FATAL),
        (b"Error: Cannot find module 'x'", S.ERROR),
        (b"(crit) on fire", S.FATAL),
        (b"TRACE entering", S.TRACE),
        (b"NOTICE: config reloaded", S.INFO),
        # prose that must not be taken for a level
        (b"Info about the request follows", None),
        (b"error handling improved in this release", None),
        (b"Information: none", None),
        (b"ERRORS: 3", None),
        (b"hello world", None),
        (b"", None),
        (b"12 apples: fresh", None),
        (b"   ERROR indented lines are not levels", None),
        (b"\xff\xfe binary", None),
    ],
)
def test_level_of(line: bytes, expected: Severity | None) -> None:
    assert level_of(line) == expected


def test_only_the_head_is_looked_at() -> None:
    assert level_of(b"x" * HEAD + b" level=error") is None
    assert level_of(b"ts=1 " + b"k=v " * 10 + b"level=error") == S.ERROR


def test_stream_defaults() -> None:
    """stdout is INFO; stderr is UNSPECIFIED (the diagnostic channel, not the error channel)."""
    assert stream_default(STDOUT) == S.INFO
    assert stream_default(STDERR) == S.UNSPECIFIED
    assert severity_of(b"plain", STDOUT) == S.INFO
    assert severity_of(b"plain", STDERR) == S.UNSPECIFIED
    assert severity_of(b"ERROR x", STDOUT) == S.ERROR
    assert severity_of(b"DEBUG x", STDERR) == S.DEBUG


def test_severity_text_is_the_canonical_name() -> None:
    assert S.WARN.text == "WARN"
    assert S.UNSPECIFIED.text == ""
    assert [int(s) for s in S] == [0, 1, 5, 9, 13, 17, 21]  # OTel SeverityNumber values


def test_cheap_enough_for_100k_lines_per_second() -> None:
    """A generous bound: the rules must cost a small part of the 10 µs budget per exported line."""
    lines = [
        b"2024-05-01T12:00:00.123Z INFO request handled path=/api/v1/items status=200",
        b'{"time":"2024-05-01T12:00:00.123Z","level":"info","msg":"request handled"}',
        b"plain output without any level in it at all, about a hundred bytes long....",
        b"x" * 100,
    ] * 5000
    start = time.perf_counter()
    for line in lines:
        level_of(line)
    per_line = (time.perf_counter() - start) / len(lines)
    assert per_line < 5e-6, f"{per_line * 1e6:.2f} µs per line"
