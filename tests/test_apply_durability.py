"""Kill-in-a-loop: a supd SIGKILLed in the middle of an Apply restarts with the old set of children or the new one.

Two declared sets, A and B, differ in every way a plan can (a changed child,
an unchanged one, one added and one removed with prune). Each round starts
supd on the same store, applies the set it does not hold (the first round
applies A whole), SIGKILLs supd at a random instant after sending the request
(most within the first milliseconds, where the store's transaction is), then
starts a new supd on the store and reads the children it declared: their
specs must be exactly A or exactly B, never a mix. A round that ended before
the kill must show the new set.

``SUPD_APPLY_KILLS`` sets the rounds of the short form (default 6, a few
seconds); ``pytest -m durability tests/test_apply_durability.py`` runs the
long form (``SUPD_APPLY_LONG_KILLS``, default 60). ``SUPD_APPLY_SEED`` replays
a run (the seed is printed).
"""

from __future__ import annotations

import os
import pathlib
import random
import signal
import subprocess
import time

import grpc
import pytest

from supervisor.spec import spec_from_mapping, spec_to_proto
from supervisor.testing import supd_command, wait_until
from supervisor.v1 import supervisor_pb2 as pb
from supervisor.v1 import supervisor_pb2_grpc as pb_grpc

from conftest import kill_marked

KILLS = int(os.environ.get("SUPD_APPLY_KILLS", "6"))
TOKEN = f"{os.getpid()}{random.randrange(10**6):06d}"  # in every child's argv, to end those of killed supds


def _specs(seconds: dict[str, int]) -> dict[str, bytes]:
    """Canonical specs by name: ``sleep 1000.TOKEN N`` (sleep adds its arguments up)."""
    return {
        name: spec_to_proto(
            spec_from_mapping(name, {"argv": ["sleep", f"1000.{TOKEN}", str(n)], "stop_grace_seconds": 1})
        ).SerializeToString(deterministic=True)
        for name, n in seconds.items()
    }


SET_A = _specs({"same": 0, "edited": 1, "only_a": 1})
SET_B = _specs({"same": 0, "edited": 2, "only_b": 2})


def _request(target: dict[str, bytes]) -> pb.ApplyRequest:
    return pb.ApplyRequest(children=[pb.ChildSpec.FromString(raw) for raw in target.values()], prune=True)


def _start(tmp_path: pathlib.Path) -> tuple[subprocess.Popen[bytes], grpc.Channel, pb_grpc.SupervisorStub]:
    socket = tmp_path / "run" / "supd.sock"
    with (tmp_path / "supd.stderr").open("ab") as err:
        proc = subprocess.Popen(
            [*supd_command(), "--socket", str(socket), "--state-dir", str(tmp_path / "state")],
            stdin=subprocess.DEVNULL, stdout=err, stderr=err,
        )
    channel = grpc.insecure_channel(f"unix://{socket}")
    stub = pb_grpc.SupervisorStub(channel)
    try:
        grpc.channel_ready_future(channel).result(timeout=15)
    except grpc.FutureTimeoutError:
        proc.kill()
        raise AssertionError(f"supd did not answer: {(tmp_path / 'supd.stderr').read_text()}") from None
    return proc, channel, stub


def _declared(stub: pb_grpc.SupervisorStub) -> dict[str, bytes]:
    children = stub.List(pb.ListRequest(), timeout=10).children
    return {
        c.spec.name: stub.GetSpec(pb.GetSpecRequest(name=c.spec.name), timeout=10).spec.SerializeToString(
            deterministic=True
        )
        for c in children
    }


def _rounds(tmp_path: pathlib.Path, kills: int) -> None:
    seed = int(os.environ.get("SUPD_APPLY_SEED", random.randrange(1 << 32)))
    print(f"SUPD_APPLY_SEED={seed}")
    rng = random.Random(seed)
    outcomes = {"old": 0, "new": 0}
    try:
        proc, channel, stub = _start(tmp_path)
        stub.Apply(_request(SET_A), timeout=30)
        held = SET_A
        for _ in range(kills):
            target = SET_B if held == SET_A else SET_A
            answer = stub.Apply.future(_request(target), timeout=30)
            time.sleep(rng.uniform(0, 0.005) if rng.random() < 0.7 else rng.uniform(0, 0.2))  # the kill instant
            proc.kill()
            proc.wait()
            channel.close()
            acknowledged = answer.done() and answer.exception() is None
            proc, channel, stub = _start(tmp_path)
            declared = wait_until(lambda s=stub: _declared(s), 10, what="the restored children")  # type: ignore[misc]
            whole = declared in (held, target)
            assert whole, f"a mix of the old and the new set: {sorted(declared)} (seed {seed})"
            if acknowledged:
                assert declared == target, "an Apply that answered was not stored"
            outcomes["new" if declared == target else "old"] += 1
            held = declared
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        channel.close()
    finally:
        kill_marked(TOKEN)
    print(f"outcomes: {outcomes}")


def test_sigkill_mid_apply_leaves_the_old_set_or_the_new(tmp_path: pathlib.Path) -> None:
    _rounds(tmp_path, KILLS)


@pytest.mark.durability
def test_sigkill_mid_apply_many_rounds(tmp_path: pathlib.Path) -> None:
    _rounds(tmp_path, int(os.environ.get("SUPD_APPLY_LONG_KILLS", "60")))
