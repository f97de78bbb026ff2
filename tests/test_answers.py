"""What List, Health and the other answers show of a child: names of environment variables and headers, never their
values, and a bounded size; GetSpec gives the whole spec.

Guards: List, Health and ``supctl ls --json`` echoed every child's environment values (an API token in a child's
env went to every client), and three children with 1.8 MB environments made List 5.4 MB, which clients with
default limits refused.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from supervisor._daemon.api.abridge import (
    CUT_MARK,
    STRING_BYTES,
    abridge_spec,
    abridge_status,
    budget_for,
    shown_spec,
)
from supervisor.spec import ChildSpec, spec_to_proto
from supervisor.testing import SupervisorProcess, running_supervisor
from supervisor.v1 import supervisor_pb2 as pb
from supervisor.v1 import supervisor_pb2_grpc as pb_grpc

DEFAULT_LIMIT = 4 * 1024 * 1024  # grpc's default max_receive_message_length
SLEEP = ["/bin/sh", "-c", "exec sleep 100"]


@pytest.fixture(scope="module")
def sup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SupervisorProcess]:
    with running_supervisor(tmp_path_factory.mktemp("answers")) as handle:
        yield handle


@pytest.fixture
def stub(sup: SupervisorProcess) -> Iterator[pb_grpc.SupervisorStub]:
    with sup.channel() as channel:  # a client with grpc's default limits
        yield pb_grpc.SupervisorStub(channel)


def spawn(stub: pb_grpc.SupervisorStub, spec: pb.ChildSpec) -> pb.ChildInfo:
    spec.restart = pb.RESTART_POLICY_NEVER
    return stub.Spawn(pb.SpawnRequest(spec=spec, replace=True), timeout=30).child


def test_answers_show_names_of_variables_and_headers_never_their_values(
    sup: SupervisorProcess, stub: pb_grpc.SupervisorStub
) -> None:
    spec = pb.ChildSpec(
        name="secretive", argv=SLEEP, env={"API_TOKEN": "s3cret-env", "MODE": "s3cret-plain"},
        readiness_probe=pb.Probe(http=pb.HttpAction(url="http://127.0.0.1:9/", headers={"Authorization": "s3cret-h"})),
        state_delivery=pb.StateDelivery(http=pb.HttpDelivery(url="http://127.0.0.1:9/", headers={"X-Key": "s3cret-d"})),
    )
    spawned = spawn(stub, spec)
    answers = [
        spawned,
        stub.List(pb.ListRequest(), timeout=10),
        stub.Health(pb.HealthRequest(), timeout=10),
        stub.Health(pb.HealthRequest(name="secretive"), timeout=10),
    ]
    for answer in answers:
        assert b"s3cret" not in answer.SerializeToString(), answer
    shown = stub.Health(pb.HealthRequest(name="secretive"), timeout=10).children[0].spec
    assert dict(shown.env) == {"API_TOKEN": "", "MODE": ""}
    assert dict(shown.readiness_probe.http.headers) == {"Authorization": ""}
    assert dict(shown.state_delivery.http.headers) == {"X-Key": ""}
    whole = stub.GetSpec(pb.GetSpecRequest(name="secretive"), timeout=10).spec
    assert dict(whole.env) == {"API_TOKEN": "s3cret-env", "MODE": "s3cret-plain"}
    assert dict(whole.readiness_probe.http.headers) == {"Authorization": "s3cret-h"}
    ls = subprocess.run(
        [sys.executable, "-m", "supervisor.cli", "ls", "--json"], capture_output=True, text=True, timeout=30,
        env={**os.environ, "SUPD_ADDR": sup.address}, check=True,
    )
    assert "secretive" in ls.stdout and "s3cret" not in ls.stdout


def test_get_spec_of_an_unknown_child_is_not_found(stub: pb_grpc.SupervisorStub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetSpec(pb.GetSpecRequest(name="nobody"), timeout=10)
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND


def test_list_of_children_with_huge_argv_and_env_fits_a_client_with_default_limits(
    stub: pb_grpc.SupervisorStub,
) -> None:
    """Three children with 1.8 MB environments and one with 1.5 MB of argv: 7 MB of specs, a List under 4 MiB."""
    env = {f"VAR_{i:03}": "v" * 100_000 for i in range(18)}
    argv = [*SLEEP, *(f"{i:04}" + "a" * 996 for i in range(1500))]
    for i in range(3):
        spawn(stub, pb.ChildSpec(name=f"big-env-{i}", argv=SLEEP, env=env))
    spawn(stub, pb.ChildSpec(name="big-argv", argv=argv))
    for answer in (stub.List(pb.ListRequest(), timeout=30), stub.Health(pb.HealthRequest(), timeout=30)):
        assert answer.ByteSize() < DEFAULT_LIMIT
        shown = {c.spec.name: c for c in answer.children}
        for i in range(3):
            child = shown[f"big-env-{i}"]
            assert child.spec_abridged or set(child.spec.env) == set(env)
            assert set(child.spec.env) <= set(env) and set(child.spec.env.values()) == {""}
        big = shown["big-argv"]
        assert big.spec_abridged and list(big.spec.argv) == argv[: len(big.spec.argv)]
        assert 3 < len(big.spec.argv) < len(argv)
    assert list(stub.GetSpec(pb.GetSpecRequest(name="big-argv"), timeout=30).spec.argv) == argv


def test_get_spec_refuses_a_spec_larger_than_a_default_client_takes(stub: pb_grpc.SupervisorStub) -> None:
    # Each argv is held to the kernel's exec limits (2 MiB) and headers to 64 KiB at Spawn, but three exec probes
    # of 1.5 MB each, every one within the limits, make a spec no default client takes.
    probes = {
        kind: pb.Probe(exec=pb.ExecAction(argv=["/bin/true", *["a" * 100_000] * 15]), period_seconds=3600)
        for kind in ("liveness_probe", "readiness_probe", "startup_probe")
    }
    spawn(stub, pb.ChildSpec(name="huge", argv=SLEEP, **probes))
    with pytest.raises(grpc.RpcError) as caught:
        stub.GetSpec(pb.GetSpecRequest(name="huge"), timeout=30)
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert re.fullmatch(
        r"the spec of child 'huge' is 45\d{5} bytes, more than the 4128768 a client takes by default;"
        r" Health shows it abridged",
        caught.value.details(),
    ), caught.value.details()


def test_headers_over_8_kib_each_or_64_kib_in_all_are_refused_at_spawn(stub: pb_grpc.SupervisorStub) -> None:
    def probe(headers: dict[str, str]) -> pb.Probe:
        return pb.Probe(http=pb.HttpAction(url="http://127.0.0.1:9/", headers=headers), period_seconds=3600)

    for headers, message in (
        ({"X-Big": "v" * 9000}, "spec.readiness_probe.http.headers['X-Big']: must be at most 8192 bytes"),
        ({f"X-{i}": "v" * 8000 for i in range(9)}, "spec.readiness_probe.http.headers: must be at most 65536 bytes"),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            spawn(stub, pb.ChildSpec(name="headers", argv=SLEEP, readiness_probe=probe(headers)))
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert message in (caught.value.details() or ""), caught.value.details()
    spawn(stub, pb.ChildSpec(name="headers", argv=SLEEP, readiness_probe=probe({"X-Fits": "v" * 8000})))


def abridge_info(info: pb.ChildInfo, budget: int) -> pb.ChildInfo:
    """What child_to_proto does to a ChildInfo, on one whose spec no ChildSpec could hold: the same two pieces."""
    abridge_status(info, budget)
    info.spec_abridged = abridge_spec(info.spec, budget)
    return info


def test_long_strings_are_cut_with_a_mark_and_flagged() -> None:
    info = pb.ChildInfo(
        spec=pb.ChildSpec(name="x", argv=["/bin/true", "é" * 2000], cwd="/" + "d" * 5000),
        last_start_error="e" * 5000,
    )
    abridge_info(info, budget_for(1))
    assert info.spec_abridged
    assert info.spec.argv[1] == "é" * (STRING_BYTES // 2) + CUT_MARK
    assert info.spec.cwd == "/" + "d" * (STRING_BYTES - 1) + CUT_MARK
    assert info.last_start_error == "e" * STRING_BYTES + CUT_MARK
    small = pb.ChildInfo(spec=pb.ChildSpec(name="y", argv=["/bin/true"], env={"A": "1"}))
    abridge_info(small, budget_for(1))
    assert not small.spec_abridged and dict(small.spec.env) == {"A": ""}
    assert not small.HasField("last_exit")


def test_the_budget_shrinks_with_the_number_of_children() -> None:
    assert budget_for(1) == budget_for(4) == 64 * 1024
    assert budget_for(1000) == 2 * 1024 * 1024 // 1000
    assert budget_for(100_000) == 1024


def _worst_spec(msg: Message, depth: int = 0) -> Message:
    """Every field a client controls as large as a Spawn could make it: long strings, long lists, big maps."""
    for field in msg.DESCRIPTOR.fields:
        value = getattr(msg, field.name)
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            for i in range(50):
                value[f"K{i:02}" + "k" * 500] = "v" * 5000
        elif field.is_repeated and field.type == FieldDescriptor.TYPE_MESSAGE:
            for _ in range(5):
                _worst_spec(value.add(), depth + 1)
        elif field.is_repeated and field.type == FieldDescriptor.TYPE_STRING:
            value.extend(["a" * 5000] * 50)
        elif field.type == FieldDescriptor.TYPE_MESSAGE and depth < 4:
            _worst_spec(value, depth + 1)
        elif field.type == FieldDescriptor.TYPE_STRING:
            setattr(msg, field.name, "s" * 5000)
    return msg


@pytest.mark.parametrize("children", [1, 64, 300, 1024])
def test_a_list_of_worst_case_children_fits_a_default_client_up_to_the_default_max_children(children: int) -> None:
    spec = _worst_spec(pb.ChildSpec())
    texts = {f: "t" * 5000 for f in ("fatal_reason", "health_reason", "state_error", "last_start_error")}
    worst = pb.ChildInfo(spec=spec, last_exit=pb.ExitStatus(description="d" * 5000), **texts)
    for kind in ("liveness", "readiness", "startup"):
        worst.probes.add(probe=kind, message="m" * 5000)
    assert worst.ByteSize() > 1_000_000
    shown = abridge_info(worst, budget_for(children))
    assert (shown.ByteSize() + 8) * children < 4 * 1024 * 1024 - 64 * 1024


def test_a_shown_spec_is_built_once_per_spec_and_budget_and_matches_abridging_it_afresh() -> None:
    spec = ChildSpec(name="s", argv=("/bin/sleep", "1" * 3000), env={"TOKEN": "secret"}).validate()
    first, abridged = shown_spec(spec, budget_for(1))
    again, _ = shown_spec(spec, budget_for(1))
    assert again is first
    fresh = pb.ChildInfo(spec=spec_to_proto(spec))
    abridge_info(fresh, budget_for(1))
    assert first == fresh.spec and abridged == fresh.spec_abridged
    assert dict(first.env) == {"TOKEN": ""}
    tight, tight_abridged = shown_spec(spec, 1024)
    assert tight is not first and tight_abridged and tight.ByteSize() < first.ByteSize()
    same_fields = ChildSpec(name="s", argv=("/bin/sleep", "1" * 3000), env={"TOKEN": "secret"}).validate()
    assert shown_spec(same_fields, budget_for(1))[0] is not first  # keyed by the spec object, never by a guess
