"""What no input can do: names matched in full, bounded echoes, exec limits, finite durations, undecodable requests.

Each case was found by sending malformed requests to a real supd: a name ending in a newline passed and broke
`supctl ls`; a 10 KB name came back whole in the error, which clients then reported as RESOURCE_EXHAUSTED; argv
over the kernel's exec limits passed and then flapped to FATAL; a NaN grace passed; undecodable bytes got UNKNOWN.
"""

from __future__ import annotations

import errno
import math
import pathlib
import subprocess
from collections.abc import Iterator

import grpc
import pytest

from supervisor._daemon.api.limits import MAX_STATUS_BYTES
from supervisor._daemon.config_file import ConfigError, load_config
from supervisor._fields import MAX_SHOWN_CHARS, shown
from supervisor.exec_limits import RESERVE_BYTES, arg_max, exec_bytes, max_arg_strlen
from supervisor.names import check_name
from supervisor.spec import ChildSpec, FieldError, spec_from_proto
from supervisor.testing import SupervisorProcess, running_supervisor
from supervisor.v1 import supervisor_pb2 as pb
from supervisor.v1 import supervisor_pb2_grpc as pb_grpc

BAD_NAMES = ["abc\n", "abc\r\n", "\nabc", "a b", "-abc", ".abc", "a" * 65, "", "abc\x00", "é"]
LONG = "x" * 10_240


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_name_must_match_the_pattern_in_full(name: str) -> None:
    with pytest.raises(FieldError) as err:
        check_name(name)
    assert err.value.message.startswith("name: must be 1-64 characters of [A-Za-z0-9._-]")
    with pytest.raises(FieldError, match=r"^spec\.name: "):
        ChildSpec(name=name, argv=("/bin/true",)).validate()


@pytest.mark.parametrize("name", ["a", "_x", "web-1.blue_2", "a" * 64, "0"])
def test_good_names_pass(name: str) -> None:
    assert check_name(name) == name
    assert ChildSpec(name=name, argv=("/bin/true",)).validate().name == name


def test_shown_bounds_what_is_quoted_back() -> None:
    assert shown("abc\n") == "'abc\\n'"
    long = shown(LONG)
    assert len(long) < MAX_SHOWN_CHARS + 40 and long.endswith("(10240 characters)")
    assert len(shown(["y" * 5000] * 5000)) <= MAX_SHOWN_CHARS
    assert len(shown({"k" * 5000: "v" * 5000})) <= MAX_SHOWN_CHARS
    assert shown(b"\0" * 300).endswith("(300 bytes)")


def test_a_config_child_name_ending_in_a_newline_is_refused(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "supd.toml"
    path.write_text('[children."web\\n"]\nargv = ["/bin/true"]\n')
    with pytest.raises(ConfigError, match=r"children\.NAME: must be 1-64 characters .*, got 'web\\n'"):
        load_config(str(path))


def test_a_config_with_a_10kb_key_is_refused_with_a_short_message(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "supd.toml"
    path.write_text(f'[children.web]\nargv = ["/bin/true"]\n{LONG} = 1\n')
    with pytest.raises(ConfigError) as err:
        load_config(str(path))
    assert "unknown key" in str(err.value) and len(str(err.value)) < 600


# -- the kernel's exec limits -------------------------------------------------------------------------------


def _argv_of(total: int) -> list[str]:
    """``/bin/true`` and arguments of at most MAX_ARG_STRLEN - 1 bytes whose exec cost is exactly ``total``."""
    argv = ["/bin/true"]
    left = total - exec_bytes([b"/bin/true"])
    longest = max_arg_strlen() - 1
    while left > 0:
        size = min(longest, left - 9)  # an argument costs its bytes, its NUL and a pointer
        if size < 0:
            raise AssertionError("unreachable: the sizes below leave room")
        argv.append("a" * size)
        left -= size + 9
    return argv


def test_the_largest_argv_accepted_really_runs_and_one_byte_more_is_refused() -> None:
    env = {"PATH": "/usr/bin:/bin"}
    full_env = ChildSpec(name="big", argv=("/bin/true",), env=env).child_env()  # with supd's LANG, HOME, TZ
    budget = arg_max() - RESERVE_BYTES - exec_bytes([f"{k}={v}".encode() for k, v in full_env.items()])
    fits = _argv_of(budget)
    spec = ChildSpec(name="big", argv=tuple(fits), env=env)
    assert spec.check_runnable() is spec
    assert subprocess.run(fits, env=full_env, check=False).returncode == 0
    over = [*fits[:-1], fits[-1] + "a"]
    with pytest.raises(FieldError) as err:
        ChildSpec(name="big", argv=tuple(over), env=env).check_runnable()
    assert err.value.field == "argv" and "ARG_MAX" in err.value.message


def test_our_count_is_the_kernels_an_argv_at_arg_max_by_it_fails_with_e2big() -> None:
    too_big = _argv_of(arg_max() + 1 - exec_bytes([b"PATH=/usr/bin:/bin"]))
    with pytest.raises(OSError) as err:
        subprocess.run(too_big, env={"PATH": "/usr/bin:/bin"}, check=False)
    assert err.value.errno == errno.E2BIG


def test_one_argument_over_max_arg_strlen_is_refused_naming_it() -> None:
    argv = ("/bin/true", "ok", "a" * max_arg_strlen())
    with pytest.raises(FieldError) as err:
        ChildSpec(name="big", argv=argv, env={"PATH": "/bin"}).check_runnable()
    assert err.value.field == "argv[2]" and "MAX_ARG_STRLEN" in err.value.message
    assert len(err.value.message) < 400
    argv = ("/bin/true", "a" * (max_arg_strlen() - 1))
    assert subprocess.run(argv, check=False).returncode == 0  # the limit is the kernel's, to the byte
    with pytest.raises(OSError):
        subprocess.run((*argv[:1], argv[1] + "a"), check=False)


def test_exec_probes_and_exec_deliveries_are_held_to_the_same_limits_naming_their_field() -> None:
    from supervisor.delivery import ExecDelivery, StateDelivery
    from supervisor.probes import ExecProbe, Probe

    too_long = ("/bin/true", "a" * max_arg_strlen())
    with pytest.raises(FieldError) as err:
        ChildSpec(name="p", argv=("/bin/true",), liveness_probe=Probe(ExecProbe(too_long))).check_runnable()
    assert err.value.field == "liveness_probe.exec.argv[1]" and "MAX_ARG_STRLEN" in err.value.message
    too_many = ("/bin/true", *["a" * 100_000] * (arg_max() // 100_000 + 1))
    delivery = StateDelivery(ExecDelivery(too_many))
    with pytest.raises(FieldError) as err:
        ChildSpec(name="p", argv=("/bin/true",), state_delivery=delivery).check_runnable()
    assert err.value.field == "state_delivery.exec.argv" and "ARG_MAX" in err.value.message


def test_an_environment_over_the_limits_is_refused_naming_env() -> None:
    with pytest.raises(FieldError) as err:
        ChildSpec(name="e", argv=("/bin/true",), env={"BIG": "v" * max_arg_strlen()}).check_runnable()
    assert err.value.field == "env['BIG']" and "MAX_ARG_STRLEN" in err.value.message
    many = {f"V{i}": "v" * 60_000 for i in range(arg_max() // 60_000 + 1)}
    with pytest.raises(FieldError) as err:
        ChildSpec(name="e", argv=("/bin/true",), env=many).check_runnable()
    assert err.value.field == "env" and "ARG_MAX" in err.value.message


# -- durations ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize(
    "field",
    [
        "stop_grace_seconds", "backoff.initial_seconds", "backoff.max_seconds", "backoff.reset_after_seconds",
        "flap_limit.window_seconds", "liveness_probe.period_seconds", "liveness_probe.timeout_seconds",
        "liveness_probe.initial_delay_seconds", "state_delivery.exec.timeout_seconds",
        "state_delivery.retry.budget_seconds", "state_delivery.retry.backoff.initial_seconds",
        "state_delivery.retry.backoff.max_seconds", "state_delivery.ready_timeout_seconds",
    ],
)
def test_every_duration_must_be_finite(field: str, value: float) -> None:
    msg = pb.ChildSpec(name="d", argv=["/bin/true"])
    msg.liveness_probe.tcp.port = 80
    msg.state_delivery.exec.argv.append("/bin/true")
    *path, last = field.split(".")
    target = msg
    for part in path:
        target = getattr(target, part)
    setattr(target, last, value)
    with pytest.raises(FieldError) as err:
        spec_from_proto(msg)
    short = field.replace("retry.backoff.", "retry.")
    assert err.value.message.startswith(f"spec.{short}:"), err.value.message


@pytest.mark.parametrize(
    ("key", "value"),
    [("stop_grace_seconds", "nan"), ("stop_grace_seconds", "inf"), ("backoff.max_seconds", "inf"),
     ("liveness_probe.period_seconds", "nan")],
)
def test_toml_nan_and_inf_durations_are_refused(tmp_path: pathlib.Path, key: str, value: str) -> None:
    path = tmp_path / "supd.toml"
    probe = '[children.web.liveness_probe]\ntcp = { port = 80 }\n' if key.startswith("liveness") else ""
    table, _, leaf = key.rpartition(".")
    section = f"[children.web.{table}]\n" if table and not probe else ""
    path.write_text(f'[children.web]\nargv = ["/bin/true"]\n{probe}{section}{leaf} = {value}\n')
    with pytest.raises(ConfigError, match=rf"children\.web: spec\.{key}: must be"):
        load_config(str(path))


# -- through a real supd --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def supd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SupervisorProcess]:
    tmp = tmp_path_factory.mktemp("validation")
    with running_supervisor(tmp, ["--state-dir", str(tmp / "state")]) as sup:
        yield sup


@pytest.fixture(scope="module")
def stub(supd: SupervisorProcess) -> Iterator[pb_grpc.SupervisorStub]:
    with supd.channel() as channel:
        yield pb_grpc.SupervisorStub(channel)


def _named_calls(stub: pb_grpc.SupervisorStub, name: str) -> dict[str, object]:
    return {
        "Spawn": lambda: stub.Spawn(pb.SpawnRequest(spec=pb.ChildSpec(name=name, argv=["/bin/true"])), timeout=10),
        "Stop": lambda: stub.Stop(pb.StopRequest(name=name), timeout=10),
        "Restart": lambda: stub.Restart(pb.RestartRequest(name=name), timeout=10),
        "Remove": lambda: stub.Remove(pb.RemoveRequest(name=name), timeout=10),
        "Signal": lambda: stub.Signal(pb.SignalRequest(name=name, signal=15), timeout=10),
        "Health": lambda: stub.Health(pb.HealthRequest(name=name), timeout=10),
        "Reload": lambda: stub.Reload(pb.ReloadRequest(name=name, state=b"{}"), timeout=10),
        "GetState": lambda: stub.GetState(pb.GetStateRequest(name=name), timeout=10),
        "Stream": lambda: list(stub.Stream(pb.StreamRequest(name=name), timeout=10)),
    }


@pytest.mark.parametrize("name", ["abc\n", LONG])
def test_every_rpc_refuses_a_bad_name_with_a_short_invalid_argument(stub: pb_grpc.SupervisorStub, name: str) -> None:
    for method, call in _named_calls(stub, name).items():
        with pytest.raises(grpc.RpcError) as err:
            call()  # type: ignore[operator]
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, err.value)
        details = err.value.details()
        assert "name: must be 1-64 characters" in details, (method, details)
        assert len(details) < 300, (method, len(details))


def test_spawn_over_the_exec_limits_is_invalid_argument_naming_the_limit(stub: pb_grpc.SupervisorStub) -> None:
    argv = ["/bin/true", *["a" * 100_000] * (arg_max() // 100_000 + 1)]
    with pytest.raises(grpc.RpcError) as err:
        stub.Spawn(pb.SpawnRequest(spec=pb.ChildSpec(name="huge", argv=argv, env={"PATH": "/bin"})), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("spec.argv: ") and "ARG_MAX" in err.value.details()


@pytest.mark.parametrize("grace", [math.nan, math.inf, -math.inf])
def test_stop_restart_remove_refuse_a_grace_that_is_not_finite(stub: pb_grpc.SupervisorStub, grace: float) -> None:
    stub.Spawn(pb.SpawnRequest(spec=pb.ChildSpec(name="graced", argv=["/bin/sleep", "60"]), replace=True))
    for call in (stub.Stop, stub.Restart, stub.Remove):
        request_type = {stub.Stop: pb.StopRequest, stub.Restart: pb.RestartRequest}.get(call, pb.RemoveRequest)
        with pytest.raises(grpc.RpcError) as err:
            call(request_type(name="graced", grace_seconds=grace), timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith("grace_seconds: must be a finite number")
    assert stub.Health(pb.HealthRequest(name="graced")).children[0].state == pb.CHILD_STATE_RUNNING
    stub.Remove(pb.RemoveRequest(name="graced", grace_seconds=5), timeout=20)


METHODS = [
    ("/supervisor.v1.Supervisor/" + m.name, m.server_streaming)
    for m in pb.DESCRIPTOR.services_by_name["Supervisor"].methods
] + [("/grpc.health.v1.Health/Check", False), ("/grpc.health.v1.Health/Watch", True)]


@pytest.mark.parametrize(("method", "streaming"), METHODS, ids=[m for m, _ in METHODS])
def test_undecodable_bytes_get_invalid_argument_on_every_method(
    supd: SupervisorProcess, method: str, streaming: bool
) -> None:
    garbage = b"\xff\xff\xff\xff\x0f"  # a tag of field 0 with a varint that never ends: no message of any type
    with supd.channel() as channel:
        if streaming:
            call = channel.unary_stream(method)
            with pytest.raises(grpc.RpcError) as err:
                list(call(garbage, timeout=10))
        else:
            with pytest.raises(grpc.RpcError) as err:
                channel.unary_unary(method)(garbage, timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value
    assert "not a valid protobuf message" in err.value.details()


def test_supd_is_still_up_after_the_malformed_requests(supd: SupervisorProcess, stub: pb_grpc.SupervisorStub) -> None:
    assert supd.proc.poll() is None
    assert stub.Health(pb.HealthRequest(), timeout=10).version
    assert "Traceback" not in supd.stderr_text()



def test_a_long_rejection_keeps_its_code_its_message_is_cut(stub: pb_grpc.SupervisorStub) -> None:
    """A child rejecting a state with 4 KiB of invalid UTF-8 on stderr: 12 KiB of replacement characters, which
    clients refused as over their metadata limit and reported as RESOURCE_EXHAUSTED."""
    spec = pb.ChildSpec(name="rejecter", argv=["/bin/sleep", "60"])
    reject = "cat >/dev/null; head -c 4096 /dev/zero | tr '\\0' '\\377' >&2; exit 3"
    spec.state_delivery.exec.argv.extend(["/bin/sh", "-c", reject])
    stub.Spawn(pb.SpawnRequest(spec=spec, replace=True), timeout=20)
    with pytest.raises(grpc.RpcError) as err:
        stub.Reload(pb.ReloadRequest(name="rejecter", state=b"{}"), timeout=20)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = err.value.details()
    assert details.startswith("child 'rejecter' rejected state revision") and details.endswith("bytes, cut)")
    assert len(details.encode()) <= MAX_STATUS_BYTES
    stub.Remove(pb.RemoveRequest(name="rejecter", grace_seconds=5), timeout=20)
