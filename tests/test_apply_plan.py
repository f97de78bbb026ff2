"""The plan of an Apply, as a pure function of the running specs and the declared ones: no processes."""

from __future__ import annotations

import pytest

from supervisor._cli_apply import format_plan
from supervisor._daemon.children.apply import declared_of
from supervisor._daemon.children.plan import Action, changed_fields, plan
from supervisor.errors import InvalidArgument
from supervisor.spec import ChildSpec, spec_from_mapping, spec_to_proto
from supervisor.v1 import supervisor_pb2 as pb


def spec(name: str, **table: object) -> ChildSpec:
    return spec_from_mapping(name, {"argv": ["/bin/true"], **table})


def test_added_removed_changed_unchanged_in_name_order() -> None:
    current = {"keep": spec("keep"), "gone": spec("gone"), "edit": spec("edit")}
    declared = [spec("new"), spec("keep"), spec("edit", argv=["/bin/false"], env={"A": "1"})]
    result = plan(current, declared, prune=True)
    assert [(s.name, s.action, s.changed_fields) for s in result.steps] == [
        ("edit", Action.CHANGE, ("argv", "env")),
        ("gone", Action.REMOVE, ()),
        ("keep", Action.UNCHANGED, ()),
        ("new", Action.ADD, ()),
    ]
    assert result.changes
    assert result.summary() == {"change": ["edit"], "remove": ["gone"], "unchanged": ["keep"], "add": ["new"]}


def test_undeclared_children_are_kept_without_prune() -> None:
    result = plan({"a": spec("a"), "b": spec("b")}, [spec("a")])
    assert [(s.name, s.action) for s in result.steps] == [("a", Action.UNCHANGED), ("b", Action.KEEP)]
    assert not result.changes


def test_prune_by_names_removes_only_those() -> None:
    current = {"from_file": spec("from_file"), "spawned": spec("spawned")}
    result = plan(current, [], prune=frozenset({"from_file"}))
    assert [(s.name, s.action) for s in result.steps] == [("from_file", Action.REMOVE), ("spawned", Action.KEEP)]


def test_a_default_spelled_out_is_the_same_spec() -> None:
    running = spec("web")
    explicit = spec("web", restart="on-failure", stop_grace_seconds=10, backoff={"initial_seconds": 0.5})
    assert spec_to_proto(explicit) == spec_to_proto(running)  # the premise: these are the defaults
    assert plan({"web": running}, [explicit]).steps[0].action is Action.UNCHANGED
    # A minimal proto spec (a Spawn's, zeros meaning defaults) is the same spec as the file's.
    (spawned,) = declared_of(pb.ApplyRequest(children=[pb.ChildSpec(name="web", argv=["/bin/true"])]))
    assert plan({"web": spawned}, [running]).steps[0].action is Action.UNCHANGED


def test_changed_fields_names_each_field_that_differs_in_field_order() -> None:
    old = spec("w", backoff={"max_seconds": 30}, ports=[8080])
    new = spec("w", backoff={"max_seconds": 60}, ports=[8080], stop_grace_seconds=3, start_order=2)
    assert changed_fields(old, new) == ("backoff", "stop_grace_seconds", "start_order")
    assert changed_fields(old, old) == ()
    nested = spec("w", readiness_probe={"tcp": {"port": 1}, "period_seconds": 2})
    assert changed_fields(nested, spec("w", readiness_probe={"tcp": {"port": 1}, "period_seconds": 3})) == (
        "readiness_probe",
    )


def test_a_name_declared_twice_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="'a' is declared twice"):
        plan({}, [spec("a"), spec("a", argv=["/bin/false"])])


def test_the_request_text_gets_the_config_files_line_numbered_message() -> None:
    text = '[children.web]\nargv = ["/bin/true"]\n\n[children.web.backoff]\ninitail_seconds = 5\n'
    with pytest.raises(InvalidArgument) as caught:
        declared_of(pb.ApplyRequest(config_toml=text, config_name="children.toml"))
    assert caught.value.message.startswith("children.toml:5: children.web: ")
    assert "initail_seconds" in caught.value.message
    both = pb.ApplyRequest(config_toml=text, children=[pb.ChildSpec(name="x", argv=["/bin/true"])])
    with pytest.raises(InvalidArgument, match="not both"):
        declared_of(both)
    with pytest.raises(InvalidArgument, match="children: "):
        declared_of(pb.ApplyRequest(config_toml="children = 3\n"))


def test_specs_in_the_request_are_checked_like_the_file() -> None:
    with pytest.raises(InvalidArgument, match="argv"):
        declared_of(pb.ApplyRequest(children=[pb.ChildSpec(name="x")]))
    missing = pb.ChildSpec(name="x", argv=["/no/such/program"])
    assert [s.name for s in declared_of(pb.ApplyRequest(children=[missing]))] == ["x"]  # a failed start later


def test_the_plan_prints_as_a_diff() -> None:
    response = pb.ApplyResponse(
        dry_run=True,
        steps=[
            pb.ApplyStep(name="api", action=pb.APPLY_ACTION_ADD),
            pb.ApplyStep(name="db", action=pb.APPLY_ACTION_UNCHANGED),
            pb.ApplyStep(name="old", action=pb.APPLY_ACTION_REMOVE),
            pb.ApplyStep(name="web", action=pb.APPLY_ACTION_CHANGE, changed_fields=["argv", "env"]),
            pb.ApplyStep(name="x", action=pb.APPLY_ACTION_KEEP),
        ],
    )
    assert format_plan(response) == [
        "+ api  added",
        "  db   unchanged",
        "- old  removed",
        "~ web  argv, env",
        "  x    kept: not in the file (--prune removes it)",
        "5 children: 1 added, 1 changed, 1 removed, 1 unchanged, 1 kept (dry run: nothing changed)",
    ]
