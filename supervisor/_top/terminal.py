"""The keyboard of ``supctl top``: the terminal in cbreak mode, and bytes decoded into key names.

rich draws but reads no keys, so this small part is ours (textual would bring
both, at the cost measured in ``supervisor._cli_top``). Cbreak mode, not raw:
keys arrive one by one without echo while Ctrl-C still interrupts.
Sequences follow ECMA-48 / xterm: ``ESC [ A`` and ``ESC O A`` (application
cursor mode) are up, ``B`` down; a lone ESC is the Esc key.
"""

from __future__ import annotations

import contextlib
import termios
import tty
from collections.abc import Iterator

__all__ = ["cbreak", "decode"]

_SEQUENCES = {b"\x1b[A": "up", b"\x1bOA": "up", b"\x1b[B": "down", b"\x1bOB": "down"}
_NAMED = {b"\r": "enter", b"\n": "enter", b"\x1b": "esc"}


def decode(data: bytes) -> list[str]:
    """Key names in the order typed: ``up``, ``down``, ``enter``, ``esc``, or the character (``q``, ``j``).

    Escape sequences this view has no use for (other cursor keys, function
    keys) are skipped whole rather than read as Esc followed by letters.
    """
    keys: list[str] = []
    i = 0
    while i < len(data):
        if data[i : i + 1] == b"\x1b" and i + 1 < len(data) and data[i + 1 : i + 2] in (b"[", b"O"):
            end = i + 2
            while end < len(data) and not 0x40 <= data[end] <= 0x7E:  # parameter bytes up to the final byte
                end += 1
            name = _SEQUENCES.get(data[i : end + 1])
            if name:
                keys.append(name)
            i = end + 1
            continue
        byte = data[i : i + 1]
        if byte in _NAMED:
            keys.append(_NAMED[byte])
        elif byte.isascii() and byte.decode().isprintable():
            keys.append(byte.decode())
        i += 1
    return keys


@contextlib.contextmanager
def cbreak(fd: int) -> Iterator[None]:
    """Keys without Enter and without echo for the duration, the terminal's settings restored after."""
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
