"""What a key does in ``supctl top``: pure, so every binding is tested without a terminal.

``press(view, key, names)`` returns the next view and at most one request for
the loop to carry out (decide first, then do the I/O the decision returned).
Keys are the names ``terminal.decode`` gives: ``up``, ``down``, ``enter``,
``esc`` or the character itself.

In the table: up/down or k/j select a child, ``l`` or Enter follow its logs,
``r`` restart it, ``s`` ask to stop it (``y`` confirms, any other key keeps it
running), ``q`` quit. In the logs: Esc or ``q`` back to the table.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Sequence

from supervisor._top.model import Cursor

__all__ = ["Follow", "Mode", "Quit", "Request", "Restart", "Stop", "Unfollow", "View", "press"]


class Mode(enum.Enum):
    TABLE = "table"
    CONFIRM_STOP = "confirm-stop"  # the table, with "stop NAME? y/n" below it
    LOGS = "logs"  # the last lines of one child, full screen


@dataclasses.dataclass(frozen=True, slots=True)
class View:
    """What the screen shows: the mode, the selected child, and the child the mode is about (stop, logs)."""

    mode: Mode = Mode.TABLE
    cursor: Cursor = dataclasses.field(default_factory=Cursor)
    target: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Quit:
    pass


@dataclasses.dataclass(frozen=True, slots=True)
class Restart:
    name: str


@dataclasses.dataclass(frozen=True, slots=True)
class Stop:
    name: str


@dataclasses.dataclass(frozen=True, slots=True)
class Follow:
    name: str


@dataclasses.dataclass(frozen=True, slots=True)
class Unfollow:
    pass


Request = Quit | Restart | Stop | Follow | Unfollow

_MOVES = {"up": -1, "k": -1, "down": 1, "j": 1}


def press(view: View, key: str, names: Sequence[str]) -> tuple[View, Request | None]:
    """The view after ``key`` with the children ``names`` (in row order) shown, and the request it makes."""
    cursor = view.cursor.settle(names)
    if view.mode is Mode.LOGS:
        if key in ("esc", "q"):
            return View(Mode.TABLE, cursor), Unfollow()
        return view, None
    if view.mode is Mode.CONFIRM_STOP:
        if key == "y" and view.target is not None:
            return View(Mode.TABLE, cursor), Stop(view.target)
        return View(Mode.TABLE, cursor), None
    if key == "q":
        return View(Mode.TABLE, cursor), Quit()
    if key in _MOVES:
        return View(Mode.TABLE, cursor.move(names, _MOVES[key])), None
    if cursor.name is None:
        return View(Mode.TABLE, cursor), None
    if key in ("l", "enter"):
        return View(Mode.LOGS, cursor, cursor.name), Follow(cursor.name)
    if key == "r":
        return View(Mode.TABLE, cursor), Restart(cursor.name)
    if key == "s":
        return View(Mode.CONFIRM_STOP, cursor, cursor.name), None
    return View(Mode.TABLE, cursor), None
