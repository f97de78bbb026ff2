"""supd's limits: its soft RLIMIT_NOFILE raised at start-up, and the bounds of its API with their flags.

Guards: under the common soft limit of 1024, children 335-500 of a 500-child config failed with "Too many open
files" while the hard limit allowed far more.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import pathlib
import resource
import signal
import subprocess
import sys
import time

import grpc
import pytest

from supervisor._daemon.api.limits import ApiLimits, RequestGuard, deadline_of, server_options
from supervisor._daemon.children.registry import MAX_STOP_GRACE_SECONDS
from supervisor._daemon.settings import ConfigError, parse_args
from supervisor.testing import running_supervisor, wait_until
from supervisor.v1 import supervisor_pb2 as pb
from supervisor.v1 import supervisor_pb2_grpc as pb_grpc

from conftest import Follower

CODE = """
import io, json, resource, sys, structlog
from structlog.testing import capture_logs
from supervisor._daemon.limits import raise_nofile_limit
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
with capture_logs() as logs:
    result = raise_nofile_limit()
print(json.dumps({"result": [result.soft_before, result.soft, result.hard],
                  "now": list(resource.getrlimit(resource.RLIMIT_NOFILE)), "logs": logs}))
"""


def run_with_soft_limit(soft: int) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", CODE, str(soft)], capture_output=True, text=True, check=True, timeout=60
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_the_soft_limit_is_raised_to_the_hard_limit_and_logged() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nr_open = int(pathlib.Path("/proc/sys/fs/nr_open").read_text())
    expected = hard if hard != resource.RLIM_INFINITY else nr_open
    if expected <= 256:
        pytest.skip(f"the hard limit here is {expected}: nothing to raise")
    got = run_with_soft_limit(256)
    assert got["now"] == [expected, hard]
    assert got["result"] == [256, expected, hard]
    assert got["logs"] == [
        {
            "event": "supd.limits.nofile",
            "log_level": "info",
            "soft": expected,
            "soft_before": 256,
            "hard": hard,
            "detail": "raised the soft limit to the hard",
        }
    ]


def test_a_soft_limit_already_at_the_hard_limit_is_left_and_said() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    got = run_with_soft_limit(hard if hard != resource.RLIM_INFINITY else soft)
    logs = got["logs"]
    assert isinstance(logs, list) and [entry["event"] for entry in logs] == ["supd.limits.nofile"]
    assert got["now"][0] == got["result"][1]  # type: ignore[index]


# -- the API's limits (supervisor/_daemon/api/limits.py and its flags) ------------------------------------------


def _spawn(stub, name: str, replace: bool = False):  # type: ignore[no-untyped-def]
    spec = pb.ChildSpec(name=name, argv=["/bin/sleep", "60"], stop_grace_seconds=2)
    return stub.Spawn(pb.SpawnRequest(spec=spec, replace=replace), timeout=20)


def test_spawn_beyond_max_children_is_resource_exhausted_naming_the_flag(tmp_path: pathlib.Path) -> None:
    with running_supervisor(tmp_path, ["--max-children", "3"]) as sup, sup.channel() as channel:
        stub = pb_grpc.SupervisorStub(channel)
        _spawn(stub, "first")
        # Spawns racing for the last two slots: exactly two win, whatever the interleaving.
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            results = list(pool.map(lambda i: _try(lambda: _spawn(stub, f"racer{i}")), range(6)))
        codes = sorted(code.name for code in results)
        assert codes == ["OK", "OK", *["RESOURCE_EXHAUSTED"] * 4], codes
        with pytest.raises(grpc.RpcError) as err:
            _spawn(stub, "one-more")
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--max-children (now 3)" in err.value.details()
        assert _spawn(stub, "first", replace=True).child.pid  # replacing takes no new slot
        stub.Remove(pb.RemoveRequest(name="first"), timeout=20)
        assert _spawn(stub, "one-more").child.pid
        assert len(stub.List(pb.ListRequest(), timeout=10).children) == 3


def _try(call) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_a_config_with_more_children_than_max_children_is_refused(tmp_path: pathlib.Path) -> None:
    config = tmp_path / "supd.toml"
    config.write_text("".join(f'[children.c{i}]\nargv = ["/bin/true"]\n' for i in range(3)))
    with pytest.raises(ConfigError, match=r"declares 3 children, more than --max-children 2"):
        parse_args(["--config", str(config), "--max-children", "2"])


INT_FLAGS = ["--max-children", "--max-streams", "--max-streams-per-connection"]
FLOAT_FLAGS = ["--rpc-deadline-seconds", "--keepalive-seconds", "--keepalive-timeout-seconds"]


@pytest.mark.parametrize(
    ("flag", "value"),
    [(f, v) for f in INT_FLAGS for v in ("0", "-1", "1000001")]
    + [(f, v) for f in FLOAT_FLAGS for v in ("0", "-1", "nan", "inf", "86401")],
)
def test_limit_flags_must_be_positive_finite_and_bounded(flag: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^{flag}: must be a number > 0 and at most"):
        parse_args([flag, value])


def test_the_server_options_follow_the_flags() -> None:
    settings = parse_args(["--max-streams-per-connection", "7", "--keepalive-seconds", "30",
                           "--keepalive-timeout-seconds", "5"])
    options = dict(server_options(settings.limits))
    assert options["grpc.max_concurrent_streams"] == 7
    assert options["grpc.keepalive_time_ms"] == 30_000 and options["grpc.keepalive_timeout_ms"] == 5_000
    assert options["grpc.max_receive_message_length"] == options["grpc.max_send_message_length"] == 65 << 20


def test_streams_beyond_max_streams_are_resource_exhausted_and_a_closed_one_frees_its_slot(
    tmp_path: pathlib.Path,
) -> None:
    with running_supervisor(tmp_path, ["--max-streams", "2"]) as sup, sup.channel() as channel:
        stub = pb_grpc.SupervisorStub(channel)
        _spawn(stub, "talker")
        follow = pb.StreamRequest(name="talker", follow=True)
        first, second = Follower(stub, follow), Follower(stub, follow)
        first.wait_event(pb.Event.KIND_STARTED)
        second.wait_event(pb.Event.KIND_STARTED)
        with pytest.raises(grpc.RpcError) as err:
            list(stub.Stream(follow, timeout=10))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--max-streams (now 2)" in err.value.details()
        first.cancel()
        third = wait_until(lambda: _opened(stub, follow), what="the cancelled stream's slot to be freed")
        third.cancel()
        second.cancel()


def _opened(stub: pb_grpc.SupervisorStub, request: pb.StreamRequest) -> Follower | None:
    follower = Follower(stub, request)
    wait_until(lambda: follower.messages or follower.done.is_set(), what="the stream's first message or its end")
    return None if follower.done.is_set() else follower


def test_calls_beyond_max_streams_per_connection_wait_for_a_free_stream(tmp_path: pathlib.Path) -> None:
    with (
        running_supervisor(tmp_path, ["--max-streams-per-connection", "1"]) as sup,
        sup.channel() as channel,
        grpc.insecure_channel(sup.address, options=[("grpc.use_local_subchannel_pool", 1)]) as other,
    ):
        stub = pb_grpc.SupervisorStub(channel)
        _spawn(stub, "talker")
        follower = Follower(stub, pb.StreamRequest(name="talker", follow=True))
        follower.wait_event(pb.Event.KIND_STARTED)
        with pytest.raises(grpc.RpcError) as err:
            stub.List(pb.ListRequest(), timeout=1)  # queued behind the open stream on this connection
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert pb_grpc.SupervisorStub(other).List(pb.ListRequest(), timeout=10).children  # another connection
        follower.cancel()
        assert stub.List(pb.ListRequest(), timeout=10).children


def test_deadline_of_each_method() -> None:
    limits = ApiLimits(rpc_deadline_seconds=30)
    assert deadline_of("/supervisor.v1.Supervisor/List", limits) == 30
    assert deadline_of("/grpc.health.v1.Health/Check", limits) == 30
    for method in ("Spawn", "Stop", "Restart", "Remove", "Apply"):
        assert deadline_of(f"/supervisor.v1.Supervisor/{method}", limits) == 30 + MAX_STOP_GRACE_SECONDS
    assert deadline_of("/supervisor.v1.Supervisor/Reload", limits) == 30 + 86400 + 3600


def test_a_unary_call_past_its_server_side_deadline_is_deadline_exceeded(tmp_path: pathlib.Path) -> None:
    """A real aio server with the guard and a handler that never answers: the client set no deadline."""

    async def scenario() -> tuple[grpc.StatusCode, str, float]:
        never = asyncio.Event()

        async def hang(request: bytes, context: grpc.aio.ServicerContext) -> bytes:  # type: ignore[type-arg]
            await never.wait()
            return request

        handler = grpc.method_handlers_generic_handler("t.Slow", {"Hang": grpc.unary_unary_rpc_method_handler(hang)})
        server = grpc.aio.server(interceptors=[RequestGuard(ApiLimits(rpc_deadline_seconds=0.2))])
        server.add_generic_rpc_handlers((handler,))
        address = f"unix:{tmp_path / 'slow.sock'}"
        server.add_insecure_port(address)
        await server.start()
        try:
            async with grpc.aio.insecure_channel(address) as channel:
                began = time.monotonic()
                try:
                    await channel.unary_unary("/t.Slow/Hang")(b"x")
                except grpc.aio.AioRpcError as exc:
                    return exc.code(), exc.details() or "", time.monotonic() - began
                raise AssertionError("the call returned")
        finally:
            await server.stop(0)

    code, details, took = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert details.startswith("/t.Slow/Hang: supd ends a call of this method after 0.2 s (--rpc-deadline-seconds")
    assert took < 10


FOLLOWER = """
import sys, grpc
from supervisor.v1 import supervisor_pb2 as pb, supervisor_pb2_grpc as g
with grpc.insecure_channel(sys.argv[1]) as channel:
    for message in g.SupervisorStub(channel).Stream(pb.StreamRequest(name="quiet", follow=True)):
        print("message", flush=True)
"""


def test_a_client_that_stops_answering_is_dropped_by_keepalive_and_frees_its_stream(tmp_path: pathlib.Path) -> None:
    """A SIGSTOPped client never closes its connection: only the unanswered keepalive ping ends its stream.

    Without ``grpc.http2.ping_timeout_ms`` grpcio sends the ping but never closes the connection (checked:
    the slot stayed taken for 30 s).
    """
    args = ["--keepalive-seconds", "1", "--keepalive-timeout-seconds", "1", "--max-streams", "1"]
    with running_supervisor(tmp_path, args) as sup, sup.channel() as channel:
        stub = pb_grpc.SupervisorStub(channel)
        stub.Spawn(pb.SpawnRequest(spec=pb.ChildSpec(name="quiet", argv=["/bin/sleep", "60"])), timeout=20)
        client = subprocess.Popen([sys.executable, "-c", FOLLOWER, sup.address], stdout=subprocess.PIPE)
        try:
            assert client.stdout is not None and client.stdout.readline() == b"message\n"
            os.kill(client.pid, signal.SIGSTOP)
            with pytest.raises(grpc.RpcError) as err:
                next(stub.Stream(pb.StreamRequest(name="quiet", follow=True), timeout=10))
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # the stopped client holds the slot

            def slot_free() -> bool:
                call = stub.Stream(pb.StreamRequest(name="quiet", follow=True), timeout=10)
                try:
                    next(call)
                except grpc.RpcError as exc:
                    assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                    return False
                call.cancel()
                return True

            began = time.monotonic()
            wait_until(slot_free, timeout=20, interval=0.2, what="keepalive to drop the stopped client")
            assert time.monotonic() - began < 15
        finally:
            client.kill()
            client.communicate()
