"""Field errors of a child's spec, and reading a typed value out of a TOML table, one way for every part of it.

``spec.py``, ``delivery.py`` and ``probes.py`` all name a bad field the same
way (``spec.backoff.max_seconds: must be ..., got ...``) and read TOML values
with the same rules (an integer where a float is wanted is taken, a bool is
never an integer).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

from supervisor.errors import InvalidArgument

__all__ = ["FieldError", "bad", "take"]


class FieldError(InvalidArgument):
    """InvalidArgument about one field; ``field`` is its dotted name below ``spec`` (``backoff.max_seconds``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def bad(field: str, rule: str, got: object) -> NoReturn:
    """Raise FieldError: ``spec.<field>: <rule>, got <got!r>``."""
    raise FieldError(field, f"spec.{field}: {rule}, got {got!r}")


def take(table: Mapping[str, Any], key: str, kind: type | tuple[type, ...], field: str, default: Any) -> Any:
    """``table[key]`` of type ``kind`` (an int is taken for a float), ``default`` when absent.

    Raises FieldError naming ``field`` (the key's dotted name below ``spec``) when the value has another type.
    """
    if key not in table:
        return default
    value = table[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        bad(field, f"must be of type {getattr(kind, '__name__', kind)}", value)
    return value
