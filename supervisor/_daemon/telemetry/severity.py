"""The severity of one line of child output: a few cheap rules, first match wins.

Child programs rarely say how severe a line is in a way a machine can read, so
supd guesses, and guesses cheaply: the guess runs for every exported line and
must stay a small part of the ~10 µs budget per line (100,000 lines/s). Only the
head of a line is looked at (``HEAD`` bytes; ``JSON_HEAD`` for JSON, whose
level key often follows a long timestamp).

Rules, in order:

1. **JSON object** — only when the line starts with ``{``: the first
   ``"level"``, ``"severity"`` or ``"lvl"`` key with a string value (a level
   name below) or a number (pino/bunyan: 10 trace, 20 debug, 30 info, 40 warn,
   50 error, 60 fatal). A key match, not a parse: parsing every JSON line costs
   more than the rest of the export path, and an escaped key inside a string
   value (``\\"level\\"``) does not match.
2. **Syslog priority** ``<N>`` at the very start (sd-daemon's convention, which
   journald also reads): 0-2 fatal, 3 error, 4 warn, 5-6 info, 7 debug.
3. **glog/klog** ``E1124 12:00:00.000000 ...``: ``I``/``W``/``E``/``F`` plus
   four digits (month and day), then a space.
4. **logfmt** ``level=error`` (also ``lvl=``, ``severity=``, quoted or not),
   anywhere in the head: logrus and slog put a timestamp before it.
5. **Level word** at the start, after at most two timestamp-like tokens (a
   digit followed by digits and ``-:./,+TZ``) and an optional opening bracket:
   ``ERROR ...``, ``[WARN] ...``, ``2024-05-01 12:00:00,123 INFO ...``,
   ``[2024-05-01T12:00:00Z ERROR app] ...``, ``error: ...``, ``[error] ...``.
   An upper-case word may be followed by a space; any other case needs a
   ``:``, ``]``, ``)``, ``>`` or ``|`` after it, so prose such as
   "Info about the request" is not taken for a level.

Level names (any case): trace, debug/dbg, info/inf/notice, warn/warning/wrn,
error/err/eror, fatal/critical/crit/panic/alert/emerg/emergency/ftl.

Otherwise the stream decides. stdout is INFO: it is the program's normal
output. stderr is UNSPECIFIED (number 0, text ""): it is the diagnostic
channel, not the error channel — Python's logging, Go's ``log``, env_logger,
glog and every progress bar write their ordinary chatter there, so calling it
WARN or ERROR (as some collectors do) makes alerts fire on noise, while calling
it INFO would claim a knowledge supd does not have. The stream itself is kept
in the ``log.iostream`` attribute, so "everything from stderr" stays one query.

Severity text is the canonical short name of the number (``"WARN"`` for
``warning:``), so a backend can group on it; the original word stays in the body.
"""

from __future__ import annotations

import enum
import re

from supervisor._daemon.output.sinks import STDOUT

__all__ = ["HEAD", "JSON_HEAD", "Severity", "level_of", "severity_of", "stream_default"]

HEAD = 64
JSON_HEAD = 256


class Severity(enum.IntEnum):
    """The OTel SeverityNumber of each level supd assigns (the first of each range)."""

    UNSPECIFIED = 0
    TRACE = 1
    DEBUG = 5
    INFO = 9
    WARN = 13
    ERROR = 17
    FATAL = 21

    @property
    def text(self) -> str:
        """The OTel severity text: the level's short name, or "" when unknown."""
        return "" if self is Severity.UNSPECIFIED else self.name


_NAMES: dict[bytes, Severity] = {}
for _sev, _words in (
    (Severity.TRACE, "trace trc"),
    (Severity.DEBUG, "debug dbg"),
    (Severity.INFO, "info inf notice"),
    (Severity.WARN, "warn warning wrn"),
    (Severity.ERROR, "error err eror"),
    (Severity.FATAL, "fatal critical crit panic alert emerg emergency ftl"),
):
    for _word in _words.split():
        _NAMES[_word.encode()] = _sev
        _NAMES[_word.upper().encode()] = _sev
        _NAMES[_word.capitalize().encode()] = _sev

_JSON_LEVEL = re.compile(rb'"(?:level|severity|lvl)"\s*:\s*(?:"([A-Za-z]{1,12})"|(\d{1,3})\b)')
_LOGFMT_LEVEL = re.compile(rb'(?:^|\s)(?:level|lvl|severity)=["\']?([A-Za-z]{1,12})\b')
# Up to two timestamp-like tokens (optionally bracketed), an opening bracket, the word, what follows it.
# The inner quantifiers are possessive: each is followed by a disjoint class, so the matches are the same, but a
# head that does not match fails without backtracking (737 ns -> 282 ns a line, measured by bench/drain.py).
_PREFIX_LEVEL = re.compile(rb"[\[(<]?(?:\d[\d\-:./,+TZ]*+[\])>]?[\s|]++){0,2}[\[(<]?([A-Za-z]{3,9}+)([\s:\])>|]|$)")
_KLOG = re.compile(rb"([IWEF])\d{4} ")
_KLOG_LEVEL = {b"I": Severity.INFO, b"W": Severity.WARN, b"E": Severity.ERROR, b"F": Severity.FATAL}
_SYSLOG = (
    Severity.FATAL,
    Severity.FATAL,
    Severity.FATAL,
    Severity.ERROR,
    Severity.WARN,
    Severity.INFO,
    Severity.INFO,
    Severity.DEBUG,
)


def _from_number(n: int) -> Severity:
    """pino/bunyan numeric levels."""
    if n <= 10:
        return Severity.TRACE
    if n <= 20:
        return Severity.DEBUG
    if n <= 30:
        return Severity.INFO
    if n <= 40:
        return Severity.WARN
    if n <= 50:
        return Severity.ERROR
    return Severity.FATAL


def level_of(line: bytes) -> Severity | None:
    """The level a line declares by the rules in the module docstring, or None."""
    if not line:
        return None
    first = line[0]
    if first == 0x7B:  # "{"
        m = _JSON_LEVEL.search(line, 0, JSON_HEAD)
        if m is None:
            return None
        word, number = m.group(1, 2)
        return _NAMES.get(word.lower()) if word is not None else _from_number(int(number))
    if first == 0x3C and len(line) > 2 and line[2] == 0x3E and 0x30 <= line[1] <= 0x37:  # "<N>"
        return _SYSLOG[line[1] - 0x30]
    head = line[:HEAD]
    m = _KLOG.match(head)
    if m is not None:
        return _KLOG_LEVEL[m.group(1)]
    m = _PREFIX_LEVEL.match(head)
    if m is not None:
        word, after = m.group(1, 2)
        sev = _NAMES.get(word)
        if sev is not None and (word.isupper() or (after and after not in b" \t")):
            return sev
    if b"=" in head:
        m = _LOGFMT_LEVEL.search(head)
        if m is not None:
            return _NAMES.get(m.group(1).lower())
    return None


def stream_default(stream: int) -> Severity:
    """INFO for stdout, UNSPECIFIED for stderr (why: see the module docstring)."""
    return Severity.INFO if stream == STDOUT else Severity.UNSPECIFIED


def severity_of(line: bytes, stream: int) -> Severity:
    """The severity of one line (without its newline) read from ``stream``."""
    sev = level_of(line)
    return stream_default(stream) if sev is None else sev
