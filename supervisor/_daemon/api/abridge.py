"""What a ChildInfo shows of a child to every client: no secret values, and a bounded size.

List, Health and the replies that carry a ChildInfo go to anyone who may read;
GetSpec is the one way to a spec whole. So in a ChildInfo:

- the values of ``env`` and of every ``headers`` map (probes, deliveries) are
  emptied, their names kept;
- every string is cut to ``STRING_BYTES`` (at a UTF-8 character boundary),
  ending in ``CUT_MARK``; the status texts (reasons, errors, probe messages)
  to less when many children share one answer (``status_bytes``);
- the spec's strings, list elements and map entries are kept in field order
  while they fit the child's budget; the rest of each list or map is left out,
  and ``spec_abridged`` says so.

``budget_for(n)`` shares ``ANSWER_BYTES`` among the n children of one answer, so
a List stays under a client's default 4 MiB limit (grpc's
``max_receive_message_length``) however large the children's specs are: each
ChildInfo is at most its budget plus its fixed fields and eight status texts of
``status_bytes(budget)`` each: about 3.3 KiB a child at the default
``--max-children`` of 1024, 3.4 MiB in all in the worst case (tests/test_answers.py
builds it). A supd allowed more children than that may answer List with more
than 4 MiB; supctl accepts any size, other clients should raise their limit.
"""

from __future__ import annotations

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from supervisor.spec import ChildSpec, spec_to_proto
from supervisor.v1 import supervisor_pb2 as pb

__all__ = [
    "ANSWER_BYTES",
    "CUT_MARK",
    "STRING_BYTES",
    "abridge_spec",
    "abridge_status",
    "budget_for",
    "shown_spec",
    "status_bytes",
]

STRING_BYTES = 1024
CUT_MARK = "...[cut]"
# What the specs of one answer may take together, well under 4 MiB: the rest is the children's other fields.
ANSWER_BYTES = 2 * 1024 * 1024
MIN_CHILD_BYTES = 1024
MAX_CHILD_BYTES = 64 * 1024
# Maps whose values may be secrets: only their keys are shown.
_SECRET_MAPS = frozenset({"env", "headers"})
# Bytes a list element or map entry costs beyond its own text (tag and length).
_OVERHEAD = 4
# Shown specs kept (see shown_spec); past this many the cache starts afresh.
_SHOWN_MAX = 4096
_shown: dict[tuple[int, int], tuple[ChildSpec, pb.ChildSpec, bool]] = {}


def budget_for(children: int) -> int:
    """The bytes of spec each of ``children`` ChildInfos of one answer may show."""
    return max(MIN_CHILD_BYTES, min(MAX_CHILD_BYTES, ANSWER_BYTES // max(1, children)))


def status_bytes(budget: int) -> int:
    """How long each status text of a ChildInfo with ``budget`` bytes of spec may be: a sixteenth of the budget,
    at least 96 bytes and at most STRING_BYTES."""
    return max(96, min(STRING_BYTES, budget // 16))


def cut(text: str, limit: int = STRING_BYTES) -> str:
    """``text`` when it has at most ``limit`` UTF-8 bytes; else its first bytes (whole characters) and CUT_MARK."""
    if len(text) * 4 <= limit:  # at most 4 bytes a character: short enough without encoding it
        return text
    raw = text.encode()
    if len(raw) <= limit:
        return text
    return raw[:limit].decode(errors="ignore") + CUT_MARK


def shown_spec(spec: ChildSpec, budget: int) -> tuple[pb.ChildSpec, bool]:
    """``spec`` as a ChildInfo shows it: secret values emptied, fitted to ``budget`` bytes; and whether abridged.

    Computed once per spec object and budget and kept (specs are immutable; a changed child has a new one):
    List and Health show every child's spec on every call, and building and fitting them was 60 % of a List
    of 500 children (64 ms). The message returned is shared: copy it, never change it.
    """
    key = (id(spec), budget)
    hit = _shown.get(key)
    if hit is not None and hit[0] is spec:
        return hit[1], hit[2]
    msg = spec_to_proto(spec)
    abridged = abridge_spec(msg, budget)
    if len(_shown) >= _SHOWN_MAX:
        _shown.clear()
    _shown[key] = (spec, msg, abridged)
    return msg, abridged


def abridge_spec(spec: pb.ChildSpec, budget: int) -> bool:
    """Empty the secret values of ``spec`` and fit it to ``budget`` bytes, in place; whether anything was cut."""
    return _fit(spec, [budget])


def abridge_status(info: pb.ChildInfo, budget: int) -> pb.ChildInfo:
    """Cut the status texts of ``info`` (reasons, errors, probe messages) to ``status_bytes(budget)``; ``info``."""
    limit = status_bytes(budget)
    for field in ("fatal_reason", "health_reason", "state_error", "last_start_error"):
        _cut_field(info, field, limit)
    if info.HasField("last_exit"):  # assigning to an unset message field would set it
        _cut_field(info.last_exit, "description", limit)
    for probe in info.probes:
        _cut_field(probe, "message", limit)
    return info


def _cut_field(msg: Message, field: str, limit: int) -> None:
    """Cut the string ``field`` of ``msg`` to ``limit`` bytes, assigning it only when it was cut."""
    text = getattr(msg, field)
    shown = cut(text, limit)
    if shown is not text:
        setattr(msg, field, shown)


def _fit(msg: Message, left: list[int]) -> bool:
    """Fit ``msg`` (recursively) to ``left[0]`` bytes, spending them; whether anything was left out or cut."""
    abridged = False
    for field, value in msg.ListFields():
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            abridged |= _fit_map(field.name, value, left)
        elif field.is_repeated:
            abridged |= _fit_list(field, value, left)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            abridged |= _fit(value, left)
        elif field.type == FieldDescriptor.TYPE_STRING:
            shown = cut(value, max(0, min(STRING_BYTES, left[0])))
            left[0] -= len(shown.encode()) + _OVERHEAD
            if shown != value:
                setattr(msg, field.name, shown)
                abridged = True
    return abridged


def _fit_map(name: str, entries: dict[str, str], left: list[int]) -> bool:
    secret = name in _SECRET_MAPS
    abridged = False
    for key in sorted(entries):
        value = "" if secret else entries[key]
        cost = len(key.encode()) + len(value.encode()) + _OVERHEAD
        if cost > left[0] or cost > STRING_BYTES + _OVERHEAD:
            del entries[key]
            abridged = True
            continue
        left[0] -= cost
        entries[key] = value
    return abridged


def _fit_list(field: FieldDescriptor, items: list[object], left: list[int]) -> bool:
    """Keep the elements that fit, each string cut to STRING_BYTES; whether any was cut or left out."""
    abridged, kept = False, 0
    for i, item in enumerate(items):
        if isinstance(item, Message):
            cost = item.ByteSize() + _OVERHEAD
        elif isinstance(item, str):
            shown = cut(item)
            cost = len(shown.encode()) + _OVERHEAD
            if shown != item:
                items[i], abridged = shown, True
        else:
            cost = 8 + _OVERHEAD
        if cost > left[0]:
            break
        left[0] -= cost
        kept += 1
    dropped = kept < len(items)
    del items[kept:]
    return abridged or dropped
