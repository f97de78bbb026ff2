"""The screens of ``supctl top``, drawn with rich: the table of children, and one child's last lines.

Colour says the same as the words (STATE, HEALTH), never more, so the view
reads the same with ``NO_COLOR`` set (rich honours it) and in a screen capture;
the selected row is marked with ``>`` as well as shown in reverse.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from supervisor._top.control import Mode, View
from supervisor._top.follow import LogLine
from supervisor._top.model import COLUMNS, Row, window

__all__ = ["logs_screen", "table_screen"]

TABLE_KEYS = "up/down j/k: select   l/Enter: logs   r: restart   s: stop   q: quit"
LOGS_KEYS = "Esc/q: back to the table"

_STATE_STYLES = {
    "RUNNING": "green",
    "STARTING": "yellow",
    "STOPPING": "yellow",
    "BACKOFF": "red",
    "FATAL": "bold red",
    "STOPPED": "dim",
    "EXITED": "dim",
}
_HEALTH_STYLES = {"READY": "green", "NOT_READY": "yellow", "UNHEALTHY": "bold red", "DOWN": "dim"}
_LOG_STYLES = {"stdout": "", "stderr": "red", "event": "dim", "gap": "yellow"}


def table_screen(
    header: str, rows: Sequence[Row], view: View, problem: str | None, status: str, *, console: Console
) -> RenderableType:
    """The header line, a problem line (supd unreachable) if any, the table, then the status or prompt and keys.

    When the rows do not fit in ``console``'s height, those around the selected one are shown and the status
    line says which.
    """
    width, height = console.size
    above = [Text(header, style="bold")] + ([Text(problem, style="bold red")] if problem else [])
    taken = sum(len(t.wrap(console, width)) for t in above) + 3  # column names, status, keys
    shown = window(len(rows), view.cursor.index, height - taken)
    if len(shown) < len(rows):
        status = f"rows {shown.start + 1}-{shown.stop} of {len(rows)}" + (f"; {status}" if status else "")
    table = Table(box=None, pad_edge=False, show_edge=False, header_style="bold", expand=False)
    table.add_column(" ", no_wrap=True, width=1)
    for name in COLUMNS:
        table.add_column(name, no_wrap=True, overflow="ellipsis", justify="left")
    for row in (rows[i] for i in shown):
        selected = row.name == view.cursor.name
        cells = [Text(c) for c in row.cells()]
        cells[1].stylize(_STATE_STYLES.get(row.state, ""))
        cells[2].stylize(_HEALTH_STYLES.get(row.health, ""))
        table.add_row(Text(">" if selected else " "), *cells, style="reverse" if selected else None)
    parts: list[RenderableType] = [*above]
    parts.append(table if rows else Text("no children"))
    if view.mode is Mode.CONFIRM_STOP:
        parts.append(Text(f"stop {view.target}? y: stop it, any other key: keep it running", style="bold yellow"))
    else:
        parts.append(Text(status))
    parts.append(Text(TABLE_KEYS, style="dim"))
    return Group(*parts)


def logs_screen(name: str, lines: Sequence[LogLine], error: str | None, height: int) -> RenderableType:
    """The child's last lines that fit in ``height`` rows under a title line, newest at the bottom."""
    title = Text(f"logs of {name}: last lines, following   ({LOGS_KEYS})", style="bold")
    footer = [Text(error, style="bold red")] if error else []
    room = max(1, height - 1 - len(footer))
    body = [Text(text, style=_LOG_STYLES.get(kind, ""), no_wrap=True, overflow="ellipsis") for kind, text in lines]
    return Group(title, *body[-room:], *footer)
