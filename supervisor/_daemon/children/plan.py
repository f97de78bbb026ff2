"""The plan of an Apply: what reconciling the running children with a declared set does, as a pure function.

``plan(current, declared, prune=...)`` compares each child's spec canonically:
both specs are serialised as ``supervisor.v1.ChildSpec`` after defaults are
filled in (``spec_to_proto``), so a spec written with a default spelled out
and one leaving it out are the same spec. A child is

- ``ADD``: declared, not running;
- ``CHANGE``: declared with another spec (``changed_fields`` names the
  ChildSpec fields that differ, in field order);
- ``UNCHANGED``: declared with the spec it runs with;
- ``REMOVE``: running, not declared, and ``prune`` covers it;
- ``KEEP``: running, not declared, and ``prune`` does not cover it.

Removing what the declared set does not name is never implied: like
``kubectl apply --prune``, it takes an explicit flag, and a dry run shows it.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Mapping, Set

from supervisor.errors import InvalidArgument
from supervisor.spec import ChildSpec, spec_to_proto
from supervisor.v1 import supervisor_pb2 as pb

__all__ = ["Action", "Plan", "Step", "changed_fields", "plan"]


class Action(enum.Enum):
    """What Apply does to one child; the names of ``supervisor.v1.ApplyAction`` without the prefix."""

    ADD = pb.APPLY_ACTION_ADD
    REMOVE = pb.APPLY_ACTION_REMOVE
    CHANGE = pb.APPLY_ACTION_CHANGE
    UNCHANGED = pb.APPLY_ACTION_UNCHANGED
    KEEP = pb.APPLY_ACTION_KEEP


@dataclasses.dataclass(frozen=True)
class Step:
    """One child's part of a plan. ``spec`` is the declared spec (None for REMOVE and KEEP)."""

    name: str
    action: Action
    changed_fields: tuple[str, ...] = ()
    spec: ChildSpec | None = None


@dataclasses.dataclass(frozen=True)
class Plan:
    """Every child's step, in name order."""

    steps: tuple[Step, ...]

    def of(self, *actions: Action) -> list[Step]:
        """The steps with one of ``actions``, in name order."""
        return [s for s in self.steps if s.action in actions]

    @property
    def changes(self) -> bool:
        """Whether carrying the plan out changes anything."""
        return bool(self.of(Action.ADD, Action.REMOVE, Action.CHANGE))

    def summary(self) -> dict[str, list[str]]:
        """Names by lower-case action, for log entries: ``{"add": [...], "change": [...]}`` (no empty ones)."""
        out: dict[str, list[str]] = {}
        for step in self.steps:
            out.setdefault(step.action.name.lower(), []).append(step.name)
        return out


_FIELDS = tuple(f.name for f in pb.ChildSpec.DESCRIPTOR.fields)


def changed_fields(old: ChildSpec, new: ChildSpec) -> tuple[str, ...]:
    """The ChildSpec fields (proto names, in field order) whose canonical values differ; () for equal specs.

    Equal specs (the usual case: re-applying a file) are told apart without serialising: the proto is a
    function of the spec, so equal specs have equal protos; unequal ones are compared as protos.
    """
    if old == new:
        return ()
    a, b = spec_to_proto(old), spec_to_proto(new)
    return tuple(name for name in _FIELDS if getattr(a, name) != getattr(b, name))


def plan(
    current: Mapping[str, ChildSpec], declared: Iterable[ChildSpec], *, prune: bool | Set[str] = False
) -> Plan:
    """The plan that takes the children ``current`` (name -> running spec) to ``declared``.

    ``prune``: True removes every undeclared child; a set of names removes
    only those (the children an earlier config file declared, on SIGHUP).

    Raises InvalidArgument when ``declared`` names a child twice.
    """
    wanted: dict[str, ChildSpec] = {}
    for spec in declared:
        if spec.name in wanted:
            raise InvalidArgument(f"children: the child {spec.name!r} is declared twice")
        wanted[spec.name] = spec
    steps = []
    for name in sorted(current.keys() | wanted.keys()):
        new = wanted.get(name)
        old = current.get(name)
        if new is None:
            pruned = prune is True or (not isinstance(prune, bool) and name in prune)
            steps.append(Step(name, Action.REMOVE if pruned else Action.KEEP))
        elif old is None:
            steps.append(Step(name, Action.ADD, spec=new))
        else:
            fields = changed_fields(old, new)
            steps.append(Step(name, Action.CHANGE if fields else Action.UNCHANGED, fields, new))
    return Plan(tuple(steps))
