"""``supctl logs``: a child's output byte for byte, its events on stderr, or JSON records.

stdout carries the child's bytes untouched (``supctl logs web > file``
reproduces its output exactly), everything else goes to stderr. On a terminal
the child's stderr lines are shown red and supctl's event lines dim; never
when the stream is not a terminal, when ``NO_COLOR`` is set
(https://no-color.org) or when ``TERM=dumb``. The Stream request has no time
filter, so ``--since`` is applied here, on the records' own times.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, BinaryIO, TextIO

from google.protobuf.timestamp_pb2 import Timestamp

from supervisor import _cli_format as fmt
from supervisor._cli_args import count_arg
from supervisor._cli_errors import EXIT_OK, CliError, rpc_failure
from supervisor.errors import SupervisorError
from supervisor.v1 import supervisor_pb2 as pb

if TYPE_CHECKING:
    from supervisor.client import Client

__all__ = ["add_logs_command", "cmd_logs", "parse_since", "use_colour"]

RED, DIM, YELLOW, RESET = b"\x1b[31m", "\x1b[2m", "\x1b[33m", "\x1b[0m"
_AGE_PART = re.compile(r"(\d+(?:\.\d+)?)([dhms])")
_AGE = re.compile(rf"(?:{_AGE_PART.pattern})+")
_UNIT_SECONDS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}


def parse_since(text: str, now: datetime.datetime | None = None) -> datetime.datetime:
    """An aware datetime from RFC 3339 (``2026-11-30T09:00:00Z``; no offset: local time) or an age (``90s``,
    ``5m``, ``1h30m``, ``2d``). Raises argparse.ArgumentTypeError saying which forms work."""
    text = text.strip()
    if _AGE.fullmatch(text):
        seconds = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in _AGE_PART.findall(text))
        return (now or datetime.datetime.now(datetime.UTC)) - datetime.timedelta(seconds=seconds)
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a time like 2026-11-30T09:00:00Z or an age like 90s, 5m, 1h30m, 2d; got {text!r}"
        ) from None
    return when if when.tzinfo is not None else when.astimezone()


def use_colour(stream: TextIO | BinaryIO) -> bool:
    """Colour only on a terminal, and never with NO_COLOR set (to anything) or TERM=dumb."""
    if "NO_COLOR" in os.environ or os.environ.get("TERM") == "dumb":
        return False
    try:
        return os.isatty(stream.fileno())
    except (AttributeError, OSError, ValueError):  # not a real file (a test's buffer, a closed stream)
        return False


def _stamp(ts: Timestamp) -> str:
    """RFC 3339 in UTC with milliseconds: ``2026-11-30T09:00:00.123Z``."""
    when = ts.ToDatetime(tzinfo=datetime.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def cmd_logs(supd: Client, args: argparse.Namespace) -> int:
    """Stream a child's output: raw bytes to stdout (events to stderr), or JSON records."""
    from supervisor.client._errors import rpc_error_of
    from supervisor.client._records import Resume
    from supervisor.client._requests import stream_request

    streams = ["stdout"] if args.stdout_only else ["stderr"] if args.stderr_only else []
    request = stream_request(args.name, args.from_seq, args.tail, args.follow, streams)
    resume = Resume(request, args.since)
    messages = supd.stream(args.name, reconnect=0, resume=resume)
    out = sys.stdout.buffer
    try:
        if args.json:
            _stream_json(messages, out)
        else:
            _stream_raw(messages, out, args.name, args.timestamps)
    except SupervisorError as exc:
        cause = rpc_error_of(exc)
        if cause is None or resume.next_seq is None or not args.follow:
            raise
        # Lost on the way: say where to pick up again (a supd that restarted numbers its records anew).
        failure = rpc_failure(cause, args, supd.connection.address, None)
        again = f"supctl logs -f --from-seq {resume.next_seq} {args.name}"
        raise CliError(f"{failure.message}; `{again}` goes on from there", failure.code) from None
    return EXIT_OK


def _stream_raw(messages: Iterable[pb.StreamMessage], out: BinaryIO, name: str, timestamps: bool) -> None:
    """The hot path without --timestamps: one write and one flush per batch (up to 256 KiB), no per-line work."""
    from supervisor.client._records import lines_of

    write, flush, err = out.write, out.flush, sys.stderr
    red = use_colour(out)
    dim = use_colour(err)
    for msg in messages:
        if msg.HasField("lines"):
            batch = msg.lines
            coloured = red and batch.stream == pb.OUTPUT_STREAM_STDERR
            if coloured:
                write(RED)
            if timestamps:
                stamp = _stamp(batch.time).encode() + b" "
                for line in lines_of(batch):
                    write(stamp + line.data)
            else:
                write(batch.data)
            if coloured:
                write(RESET.encode())
            flush()
            continue
        flush()
        if msg.HasField("event"):
            text = fmt.describe_event(name, msg.event)
            if timestamps:
                text = text.replace("supctl: ", f"supctl: {_stamp(msg.event.time)} ", 1)
            print(f"{DIM}{text}{RESET}" if dim else text, file=err, flush=True)
        elif msg.HasField("gap"):
            text = fmt.describe_gap(name, msg.gap)
            print(f"{YELLOW}{text}{RESET}" if dim else text, file=err, flush=True)


def _stream_json(messages: Iterable[pb.StreamMessage], out: BinaryIO) -> None:
    """One JSON object per line, event and gap, flushed per message so followers see it live."""
    for msg in messages:
        if msg.HasField("lines"):
            text = "\n".join(fmt.batch_json_lines(msg.lines))
        elif msg.HasField("event"):
            text = fmt.event_json(msg.event)
        elif msg.HasField("gap"):
            text = fmt.gap_json(msg.gap)
        else:
            continue
        out.write(text.encode("utf-8") + b"\n")
        out.flush()


def add_logs_command(sub: Any, add_name: Callable[..., Any]) -> None:
    """Register ``logs`` on supctl's subcommand parser; ``add_name`` adds the NAME argument."""
    p = sub.add_parser(
        "logs",
        help="a child's output, byte for byte (events go to stderr)",
        description="Copy a child's output to stdout exactly as it wrote it; events and gaps go to stderr. "
        "On a terminal the child's stderr lines are red and events dim (not with NO_COLOR set).",
    )
    add_name(p)
    p.add_argument("-f", "--follow", action="store_true", help="keep streaming new output until Ctrl-C")
    start = p.add_mutually_exclusive_group()
    start.add_argument("--tail", type=count_arg, metavar="N", help="start with the last N lines held")
    start.add_argument("--from-seq", type=count_arg, metavar="N", help="start at this sequence number")
    p.add_argument(
        "--since",
        type=parse_since,
        metavar="TIME",
        help="only records from TIME on: RFC 3339 (2026-11-30T09:00:00Z) or an age (90s, 5m, 1h30m, 2d); "
        "filtered by supctl on the records' times",
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument("--stdout-only", action="store_true", help="only the child's stdout")
    which.add_argument("--stderr-only", action="store_true", help="only the child's stderr")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="one JSON object per line, event and gap")
    out.add_argument(
        "-t", "--timestamps", action="store_true", help="prefix each line and event with when supd read it (UTC)"
    )
    p.set_defaults(func=cmd_logs)
