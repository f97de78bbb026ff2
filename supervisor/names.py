"""A child's name: one pattern, matched in full, for Spawn, every RPC that names a child and ``[children.NAME]``.

A name is a file name, a log field, a metric label and a column of ``supctl ls``, so it is 1-64 characters of
``[A-Za-z0-9._-]`` not starting with ``.`` or ``-``. It is matched with ``re.fullmatch``: with ``re.match`` and
``$``, a name ending in a newline (``"web\\n"``) passed, since ``$`` matches before a final newline.
"""

from __future__ import annotations

import re

from supervisor._fields import FieldError, shown

__all__ = ["NAME_PATTERN", "NAME_RULE", "check_name", "is_name"]

NAME_PATTERN = r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}"
NAME_RULE = "must be 1-64 characters of [A-Za-z0-9._-] not starting with '.' or '-'"
_NAME = re.compile(NAME_PATTERN)


def is_name(name: str) -> bool:
    """Whether ``name`` matches ``NAME_PATTERN`` in full."""
    return _NAME.fullmatch(name) is not None


def check_name(name: str, field: str = "name") -> str:
    """``name`` when it matches ``NAME_PATTERN`` in full; otherwise InvalidArgument (a FieldError) naming ``field``.

    The message quotes at most the start of what was sent: ``name: must be 1-64 characters ..., got 'abc\\n'``.
    """
    if not is_name(name):
        raise FieldError(field, f"{field}: {NAME_RULE}, got {shown(name)}")
    return name
