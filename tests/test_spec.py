"""The child spec: structural validation apart from what the file system says, one signal parser, proto round trip."""

from __future__ import annotations

import pathlib
import signal

import pytest

from supervisor.errors import InvalidArgument
from supervisor.signals import parse_signal, signal_name
from supervisor.spec import Backoff, ChildSpec, spec_from_mapping, spec_from_proto, spec_to_proto
from supervisor.v1 import supervisor_pb2 as pb


def test_validate_is_structural_and_check_runnable_reads_the_file_system(tmp_path: pathlib.Path):
    missing = ChildSpec(name="x", argv=(str(tmp_path / "nope"),), cwd=str(tmp_path / "gone"))
    assert missing.validate() is missing  # a path that may exist later is not a structural error
    with pytest.raises(InvalidArgument, match=r"spec\.cwd: must be an existing directory"):
        missing.check_runnable()
    with pytest.raises(InvalidArgument, match=r"spec\.argv\[0\]"):
        ChildSpec(name="x", argv=(str(tmp_path / "nope"),)).check_runnable()
    assert ChildSpec(name="x", argv=("sleep", "1")).check_runnable().argv[0] == "sleep"


@pytest.mark.parametrize(
    ("field", "spec"),
    [
        ("name", ChildSpec(name="-bad", argv=("true",))),
        ("argv", ChildSpec(name="x", argv=())),
        ("stop_grace_seconds", ChildSpec(name="x", argv=("true",), stop_grace_seconds=0)),
        ("stop_grace_seconds", ChildSpec(name="x", argv=("true",), stop_grace_seconds=4000)),
        ("backoff.multiplier", ChildSpec(name="x", argv=("true",), backoff=Backoff(multiplier=0.5))),
        ("ring_bytes", ChildSpec(name="x", argv=("true",), ring_bytes=1)),
    ],
)
def test_a_bad_field_is_named(field: str, spec: ChildSpec):
    with pytest.raises(InvalidArgument, match=rf"^spec\.{field}: "):
        spec.validate()


def test_one_signal_parser_for_every_spelling():
    for spelling in ("TERM", "term", "SIGTERM", "15", 15, " sigterm "):
        assert parse_signal(spelling) == signal.SIGTERM, spelling
    for bad in ("NOSUCH", 0, -1, 99999, True, "", None):
        with pytest.raises(ValueError, match="not a signal"):
            parse_signal(bad)
    assert signal_name(9) == "SIGKILL" and signal_name(99) == "signal 99"


def test_a_table_with_a_signal_name_and_the_proto_round_trip():
    spec = spec_from_mapping("web", {"argv": ["sleep", "1"], "stop_signal": "INT", "stop_grace_seconds": 3})
    assert spec.stop_signal == signal.SIGINT and spec.stop_grace_seconds == 3.0
    back = spec_from_proto(spec_to_proto(spec))
    assert back == spec


def test_proto_zeroes_mean_defaults_but_flap_limit_zero_is_kept():
    msg = pb.ChildSpec(name="d", argv=["sleep", "1"], flap_limit=pb.FlapLimit(max_restarts=0))
    spec = spec_from_proto(msg)
    assert spec.stop_grace_seconds == 10.0 and spec.backoff == Backoff()
    assert spec.flap_limit.max_restarts == 0  # optional field: 0 means "no limit", not "default"
