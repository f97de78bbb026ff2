"""A supd SIGKILLed at random instants, in the middle of Spawns and Reloads, loses nothing it acknowledged.

Each round starts supd on one store, spawns children and reloads state
through real RPCs from a client thread, and SIGKILLs supd at a random
instant (during start-up, a Spawn or a Reload). The next supd must declare
every child whose Spawn was acknowledged, and each child's accepted revision
must be at least the last acknowledged one, with exactly the bytes sent for
it; a newer accepted revision may only be the one whose answer was lost.

The short form runs in every test run; ``-m durability`` (or
``SUPD_DURABILITY_ROUNDS``) runs more rounds.
"""

from __future__ import annotations

import os
import pathlib
import random
import signal
import subprocess
import threading
import time

import grpc
import pytest

from supervisor.testing import supd_command, wait_until
from supervisor.v1 import supervisor_pb2 as pb
from supervisor.v1 import supervisor_pb2_grpc as pb_grpc

from conftest import kill_marked

ROUNDS = int(os.environ.get("SUPD_DURABILITY_ROUNDS", "6"))
TOKEN = f"{os.getpid()}{random.randrange(10**6):06d}"


class Client(threading.Thread):
    """Spawns and reloads as fast as supd answers, recording what was acknowledged, until supd dies."""

    def __init__(self, address: str, round_: int, sent: dict[bytes, str], acked: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.address, self.round, self.sent, self.acked = address, round_, sent, acked
        self.spawned: list[str] = []
        self.ready = threading.Event()  # set once this round's Spawn was acknowledged

    def run(self) -> None:
        with grpc.insecure_channel(self.address) as channel:
            stub = pb_grpc.SupervisorStub(channel)
            try:
                self._work(stub)
            except grpc.RpcError:
                return  # supd was killed: what was acknowledged is recorded

    def _work(self, stub: pb_grpc.SupervisorStub) -> None:
        name = f"c{self.round}"
        spec = pb.ChildSpec(
            name=name, argv=["sleep", f"1000.{TOKEN}"],
            state_delivery=pb.StateDelivery(exec=pb.ExecDelivery(argv=["/bin/sh", "-c", "cat > /dev/null"])),
        )
        stub.Spawn(pb.SpawnRequest(spec=spec), timeout=10, wait_for_ready=True)
        self.spawned.append(name)
        self.ready.set()
        others = sorted(self.acked) or [name]
        for n in range(10_000):
            for child in (name, others[n % len(others)]):
                payload = f"{child}:{self.round}:{n}:".encode() + os.urandom(random.choice((8, 4096, 65536)))
                self.sent[payload] = child
                resp = stub.Reload(pb.ReloadRequest(name=child, state=payload), timeout=10)
                self.acked[child] = max(self.acked.get(child, 0), resp.revision)
                self.sent[payload] = f"{child}@{resp.revision}"


def _start(tmp_path: pathlib.Path) -> tuple[subprocess.Popen[bytes], str]:
    socket = tmp_path / "run" / "supd.sock"
    err = (tmp_path / "supd.stderr").open("ab")
    proc = subprocess.Popen(
        [*supd_command(), "--socket", str(socket), "--state-dir", str(tmp_path / "state")],
        stdin=subprocess.DEVNULL, stdout=err, stderr=err,
    )
    err.close()
    return proc, f"unix://{socket}"


def _check(address: str, spawned: set[str], sent: dict[bytes, str], acked: dict[str, int]) -> None:
    with grpc.insecure_channel(address) as channel:
        stub = pb_grpc.SupervisorStub(channel)
        def declared() -> set[str]:
            return {c.spec.name for c in stub.List(pb.ListRequest(), timeout=30, wait_for_ready=True).children}

        # The children are declared while supd boots (eight starts at a time), after its socket answers.
        try:
            wait_until(lambda: spawned <= declared(), 60, what="every acknowledged spawn to be declared again")
        except AssertionError:
            raise AssertionError(f"acknowledged spawns {sorted(spawned)}, declared {sorted(declared())}") from None
        for child, revision in acked.items():
            got = stub.GetState(pb.GetStateRequest(name=child), timeout=5).revision
            assert got.accepted and got.revision >= revision, f"{child}: acknowledged {revision}, store has {got}"
            origin = sent.get(got.state)
            assert origin is not None, f"{child}: the accepted state is not one a client sent"
            assert origin in (child, f"{child}@{got.revision}"), f"{child}: revision {got.revision} holds {origin}"


def _rounds(tmp_path: pathlib.Path, rounds: int) -> None:
    sent: dict[bytes, str] = {}
    acked: dict[str, int] = {}
    spawned: set[str] = set()
    rng = random.Random(int(TOKEN))
    try:
        for round_ in range(rounds):
            proc, address = _start(tmp_path)
            if round_:
                try:
                    _check(address, spawned, sent, acked)
                except BaseException:
                    proc.kill()
                    raise
            try:
                client = Client(address, round_, sent, acked)
                client.start()
                # A random instant: one round in four during start-up or the Spawn, the others among the Reloads.
                if rng.random() < 0.25:
                    time.sleep(rng.uniform(0.0, 1.0))
                else:
                    assert client.ready.wait(30), "supd did not answer the Spawn"
                    time.sleep(rng.uniform(0.0, 0.5))
            finally:
                proc.kill()
                proc.wait(10)
            client.join(20)
            assert not client.is_alive()
            spawned.update(client.spawned)
            kill_marked(TOKEN)
        proc, address = _start(tmp_path)
        try:
            _check(address, spawned, sent, acked)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
    finally:
        kill_marked(TOKEN)
    assert sum(acked.values()) > 0, "no Reload was ever acknowledged: the test proved nothing"


def test_sigkill_at_random_instants_loses_nothing_acknowledged(tmp_path: pathlib.Path) -> None:
    _rounds(tmp_path, ROUNDS)


@pytest.mark.durability
def test_sigkill_many_rounds(tmp_path: pathlib.Path) -> None:
    _rounds(tmp_path, int(os.environ.get("SUPD_DURABILITY_LONG_ROUNDS", "60")))
