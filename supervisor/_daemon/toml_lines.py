"""Which line of a TOML text holds a key: for error messages, since tomllib reports no line for valid TOML.

``key_line(text, ("children", "x", "backoff", "initail_seconds"))`` finds the
line of ``initail_seconds = 5`` below ``[children.x.backoff]``, of
``backoff.initail_seconds = 5`` below ``[children.x]``, or of
``backoff = { initail_seconds = 5 }``. It answers only when exactly one line
matches; anything it cannot read with certainty (a key spelled in a way this
scan does not follow, text inside a multi-line string) gives None rather than a
wrong line.
"""

from __future__ import annotations

import re

__all__ = ["key_line"]

_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(?:#.*)?$")
_ARRAY_HEADER = re.compile(r"^\s*\[\[")
_ASSIGNMENT = re.compile(r"^\s*([A-Za-z0-9_\-\"'. ]+?)\s*=(.*)$")
_MULTILINE_QUOTES = ('"""', "'''")


def _parts(dotted: str) -> tuple[str, ...] | None:
    """``children."my app".backoff`` -> ("children", "my app", "backoff"); None where a quoted part holds a dot."""
    out = []
    for raw in re.findall(r'"[^"]*"|\'[^\']*\'|[^.]+', dotted):
        part = raw.strip()
        if part[:1] in "\"'":
            part = part[1:-1]
            if "." in part or "\\" in part:
                return None
        out.append(part)
    return tuple(out)


def key_line(text: str, path: tuple[str, ...]) -> int | None:
    """The 1-based line that defines ``path`` (table names then the key), or None if not exactly one does.

    A table's own path matches its ``[header]`` line.
    """
    table: tuple[str, ...] | None = ()
    in_string: str | None = None
    found: list[int] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if in_string is not None:
            if line.count(in_string) % 2 == 1:
                in_string = None
            continue
        if _ARRAY_HEADER.match(line):
            table = None  # arrays of tables are not part of supd's schema: do not guess inside them
            continue
        header = _HEADER.match(line)
        if header:
            table = _parts(header.group(1))
            if table == path:
                found.append(number)
            continue
        assignment = _ASSIGNMENT.match(line)
        if assignment is None:
            continue
        rhs = assignment.group(2)
        for quotes in _MULTILINE_QUOTES:
            if rhs.count(quotes) % 2 == 1:
                in_string = quotes
        if table is None:
            continue
        lhs = _parts(assignment.group(1))
        if lhs is None:
            continue
        full = table + lhs
        if full == path:
            found.append(number)
        elif len(full) < len(path) and path[: len(full)] == full and rhs.lstrip().startswith("{"):
            # An inline table: look for the rest of the path as a (dotted) key inside the braces.
            rest = r"\s*\.\s*".join(re.escape(p) for p in path[len(full) :])
            if re.search(r"[{,]\s*" + rest + r"\s*=", rhs):
                found.append(number)
    return found[0] if len(found) == 1 else None
