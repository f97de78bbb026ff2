"""Field errors of a child's spec, and reading a typed value out of a TOML table, one way for every part of it.

``spec.py``, ``delivery.py`` and ``probes.py`` all name a bad field the same
way (``spec.backoff.max_seconds: must be ..., got ...``) and read TOML values
with the same rules (an integer where a float is wanted is taken, a bool is
never an integer).
"""

from __future__ import annotations

import reprlib
from collections.abc import Mapping
from typing import Any, NoReturn

from supervisor.errors import InvalidArgument

__all__ = [
    "MAX_HEADERS_BYTES",
    "MAX_HEADER_BYTES",
    "MAX_SHOWN_CHARS",
    "FieldError",
    "bad",
    "header_problem",
    "shown",
    "take",
]

# The most characters of a value a request sent that an error message quotes back: gRPC clients refuse a
# status whose message is larger than their metadata limit (8 KiB by default) and report RESOURCE_EXHAUSTED
# instead of the real code, and a person needs only the start of the value to find it.
MAX_SHOWN_CHARS = 120
_QUOTED = reprlib.Repr()  # Python 3.11's takes no keyword arguments
_QUOTED.maxstring = _QUOTED.maxother = 64
_QUOTED.maxlist = _QUOTED.maxtuple = _QUOTED.maxdict = _QUOTED.maxset = 8


class FieldError(InvalidArgument):
    """InvalidArgument about one field; ``field`` is its dotted name below ``spec`` (``backoff.max_seconds``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def shown(value: object) -> str:
    """``repr(value)`` for an error message, at most about ``MAX_SHOWN_CHARS`` characters whatever was sent.

    A long string or bytes value is quoted by its start and end with its length: ``'aaaa...aaaa' (10240
    characters)``; long lists and mappings by their first items. Every message that echoes user input (names,
    paths, signals, content types, field values) quotes it through here.
    """
    text = _QUOTED.repr(value)
    if len(text) > MAX_SHOWN_CHARS:
        text = text[: MAX_SHOWN_CHARS - 3] + "..."
    if isinstance(value, str) and len(value) > _QUOTED.maxstring:
        return f"{text} ({len(value)} characters)"
    if isinstance(value, bytes | bytearray) and len(value) > _QUOTED.maxstring:
        return f"{text} ({len(value)} bytes)"
    return text


def bad(field: str, rule: str, got: object) -> NoReturn:
    """Raise FieldError: ``spec.<field>: <rule>, got <shown(got)>``.

    A field named by what was sent (an unknown TOML key, an env variable) is cut to ``MAX_SHOWN_CHARS`` in the
    message; ``FieldError.field`` keeps it whole.
    """
    named = field if len(field) <= MAX_SHOWN_CHARS else f"{field[: MAX_SHOWN_CHARS - 3]}..."
    raise FieldError(field, f"spec.{named}: {rule}, got {shown(got)}")


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


# HTTP headers of probes and deliveries: 8 KiB a header, as common servers take by default (nginx's
# large_client_header_buffers, Apache's LimitRequestFieldSize), and 64 KiB in all.
MAX_HEADER_BYTES = 8 * 1024
MAX_HEADERS_BYTES = 64 * 1024


def header_problem(headers: Mapping[str, str]) -> tuple[str, str, object] | None:
    """What is wrong with a map of HTTP headers, as ``(field, rule, got)`` for ``bad``; None when nothing is.

    ``field`` is ``http.headers`` or ``http.headers['Name']``.
    """
    total = 0
    for key, value in headers.items():
        if not key or any(c in key for c in ":\r\n\0 ") or any(c in value for c in "\r\n\0"):
            return f"http.headers[{shown(key)}]", "must be a header name and a value without line breaks", value
        size = len(key.encode()) + len(value.encode()) + 4  # "Name: value\r\n"
        if size > MAX_HEADER_BYTES:
            return f"http.headers[{shown(key)}]", f"must be at most {MAX_HEADER_BYTES} bytes as a header line", value
        total += size
    if total > MAX_HEADERS_BYTES:
        return "http.headers", f"must be at most {MAX_HEADERS_BYTES} bytes in all, got {total}", sorted(headers)
    return None
