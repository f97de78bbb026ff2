"""``supctl top`` when stdout is not a terminal, or with ``--once``: plain tables for scripts and files.

Each refresh prints one block: the header line, then the table (columns as in
``model.COLUMNS``, two spaces apart, as ``supctl ls``); blocks are separated by
one empty line. ``--once`` takes two snapshots one interval apart, so that
LINES/S is measured, prints one block and exits 0. Without it the first block
comes at once (LINES/S ``-``) and one more every interval until Ctrl-C.
A failed Health call ends the command with its one line and code (3 when supd
went away), as every command does: a script learns of it from the code.
"""

from __future__ import annotations

import datetime
import time
from typing import TYPE_CHECKING, TextIO

from supervisor import _cli_format as fmt
from supervisor._top.model import COLUMNS, Sample, header_line, line_rates, rows_of
from supervisor.v1 import supervisor_pb2 as pb

if TYPE_CHECKING:
    from supervisor.client import Client

__all__ = ["block", "run_plain"]


def block(address: str, health: pb.HealthResponse, rates: dict[str, float | None], when: datetime.datetime) -> str:
    """One refresh as text: the header line, then the table or ``no children``."""
    rows = rows_of(health.children, rates)
    body = fmt.table([COLUMNS, *(row.cells() for row in rows)]) if rows else "no children"
    return header_line(address, health, when) + "\n" + body


def run_plain(supd: Client, interval: float, once: bool, out: TextIO, first: pb.HealthResponse) -> int:
    """Print blocks every ``interval`` seconds until interrupted, or one block with ``once``; returns 0.

    ``first`` is a Health answer just received: the first block's, or with ``once`` the start of the measure.
    """
    address = supd.connection.address
    health, at = first, time.monotonic()
    before: Sample | None = None
    if once:
        before = Sample.of(at, health.children)
        time.sleep(interval)  # the measuring interval itself, not a wait for something to happen
        health, at = supd.health(), time.monotonic()
    due, separator = at, ""
    while True:
        now = Sample.of(at, health.children)
        text = block(address, health, line_rates(before, now), datetime.datetime.now().astimezone())
        out.write(f"{separator}{text}\n")
        out.flush()
        if once:
            return 0
        before, separator = now, "\n"
        due += interval
        time.sleep(max(0.0, due - time.monotonic()))  # pacing the refreshes, as the user asked
        health, at = supd.health(), time.monotonic()
