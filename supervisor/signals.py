"""Signal names and numbers, parsed and printed one way everywhere (spec, supctl, supd).

``parse_signal("term")``, ``parse_signal("SIGTERM")``, ``parse_signal("15")`` and
``parse_signal(15)`` all give 15; ``signal_name(15)`` gives ``"SIGTERM"`` and a
number Python has no name for gives ``"signal 99"``.
"""

from __future__ import annotations

import functools
import signal

__all__ = ["parse_signal", "signal_name"]


@functools.cache
def _valid_numbers() -> frozenset[int]:
    """The signal numbers this system knows, computed once: ``signal.valid_signals()`` costs 0.6 ms a call, and
    every spec checked (500 in a config file, each Apply) asks twice."""
    return frozenset(int(s) for s in signal.valid_signals())


def parse_signal(value: object) -> int:
    """A valid signal number from a name (with or without ``SIG``, any case), a number or its text.

    Raises ValueError naming the value when it is no signal this system knows.
    """
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            number = int(text)
        else:
            name = text.upper()
            name = name if name.startswith("SIG") else "SIG" + name
            if name in signal.Signals.__members__:
                number = int(signal.Signals[name])
    if number is None or number <= 0 or number not in _valid_numbers():
        raise ValueError(f"not a signal name like SIGTERM or a valid signal number: {value!r}")
    return number


def signal_name(number: int) -> str:
    """``SIGTERM`` for 15; ``signal N`` for a number without a name."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
