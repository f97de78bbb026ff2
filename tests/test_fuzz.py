"""Random and malformed requests to every RPC of a real supd, one client and eight at once on three names.

supd must stay up, answer every request with a status a client can act on (never INTERNAL, UNKNOWN or
UNAVAILABLE), and leave no process behind that it does not track: once every child is removed, nothing runs
under supd any more (it is a child subreaper, so whatever a child left behind is under it too).

Requests are random bytes, or messages of the method's type with wild values in every field (NaN and infinite
durations, extreme integers, unknown enum numbers, names with newlines, 10 KB strings, nested messages), and
for Spawn often a runnable child on one of three names, so Stop, Restart, Signal, Reload and Remove act on
live children concurrently. The default run sends a few hundred requests (seconds); ``SUPD_FUZZ_ROUNDS=20``
sends twenty times as many.

Nothing a request names may touch the machine: the alphabet of wild strings has no letters that spell a
program or a URL scheme, file deliveries write below the test's directory, and ports are left out (a port's
holder may be stopped).
"""

from __future__ import annotations

import concurrent.futures
import math
import os
import pathlib
import random
from collections.abc import Iterator

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2

from supervisor.testing import SupervisorProcess, running_supervisor, wait_until
from supervisor.v1 import supervisor_pb2 as pb
from supervisor.v1 import supervisor_pb2_grpc as pb_grpc

ROUNDS = int(os.environ.get("SUPD_FUZZ_ROUNDS", "1"))
NAMES = ("f0", "f1", "f2")
REFUSED = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS}
# Every method of supervisor.v1.Supervisor and grpc.health.v1.Health/Check. Shutdown ends supd: only undecodable
# bytes go to it (tests/test_validation.py); Watch never ends by itself.
METHODS = [m for m in pb.DESCRIPTOR.services_by_name["Supervisor"].methods if m.name != "Shutdown"] + [
    health_pb2.DESCRIPTOR.services_by_name["Health"].methods_by_name["Check"]
]
CALL_TIMEOUT = 3.0
_ALPHABET = ["a", "b", "c", "0", "_", ".", "-", "/", " ", "\n", "\r", "\x00", "é", "😀", "=", ":"]
_DOUBLES = [math.nan, math.inf, -math.inf, 0.0, -0.0, -1.0, 1e-300, 0.05, 1.0, 3600.0, 3600.5, 86401.0, 1e308]
_INTS = {
    FieldDescriptor.CPPTYPE_INT32: [0, 1, -1, 15, 2**31 - 1, -(2**31)],
    FieldDescriptor.CPPTYPE_INT64: [0, 1, -1, 2**63 - 1, -(2**63)],
    FieldDescriptor.CPPTYPE_UINT32: [0, 1, 9, 15, 19, 64, 65536, 2**32 - 1],
    FieldDescriptor.CPPTYPE_UINT64: [0, 1, 2**20, 2**63, 2**64 - 1],
}
RUNNABLE = (["/bin/sleep", "30"], ["/bin/sh", "-c", "sleep 30 & sleep 30 & wait"], ["/bin/true"], ["/bin/false"])


def wild_string(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.35:
        return rng.choice(NAMES)
    if kind < 0.45:
        return rng.choice(["", "abc\n", "x" * 10_240, "\x00", "é" * 300])
    return "".join(rng.choices(_ALPHABET, k=rng.randint(0, 24)))


def wild_value(field: FieldDescriptor, rng: random.Random, depth: int) -> object:
    cpp = field.cpp_type
    if cpp == FieldDescriptor.CPPTYPE_STRING:
        if field.type == FieldDescriptor.TYPE_BYTES:
            return rng.randbytes(rng.choice([0, 1, 16, 5000]))
        return wild_string(rng)
    if cpp in (FieldDescriptor.CPPTYPE_DOUBLE, FieldDescriptor.CPPTYPE_FLOAT):
        return rng.choice(_DOUBLES) if rng.random() < 0.7 else rng.uniform(-10, 100)
    if cpp == FieldDescriptor.CPPTYPE_BOOL:
        return rng.random() < 0.5
    if cpp == FieldDescriptor.CPPTYPE_ENUM:
        return rng.choice([v.number for v in field.enum_type.values] + [7, 99])
    if cpp == FieldDescriptor.CPPTYPE_MESSAGE:
        return wild_message(field.message_type, rng, depth + 1)
    return rng.choice(_INTS[cpp])


def wild_message(descriptor: Descriptor, rng: random.Random, depth: int = 0) -> Message:
    """A message of ``descriptor`` with random fields set to wild values (nested up to 4 levels)."""
    msg = message_factory.GetMessageClass(descriptor)()
    if depth > 4:
        return msg
    for field in descriptor.fields:
        if rng.random() < 0.45:
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            entry = field.message_type.fields_by_name
            key_field, value_field = entry["key"], entry["value"]
            target = getattr(msg, field.name)
            for _ in range(rng.randint(0, 3)):
                key, value = wild_value(key_field, rng, depth), wild_value(value_field, rng, depth)
                if value_field.message_type is not None:
                    target[key].CopyFrom(value)  # type: ignore[arg-type]
                else:
                    target[key] = value
        elif field.is_repeated:
            target = getattr(msg, field.name)
            for _ in range(rng.randint(0, 4)):
                value = wild_value(field, rng, depth)
                if field.message_type is not None:
                    target.add().CopyFrom(value)
                else:
                    target.append(value)
        elif field.message_type is not None:
            getattr(msg, field.name).CopyFrom(wild_value(field, rng, depth))
        else:
            setattr(msg, field.name, wild_value(field, rng, depth))
    return msg


def harmless(spec: pb.ChildSpec, rng: random.Random, files: pathlib.Path) -> None:
    """Keep a wild spec from touching the machine; often make it a runnable child on one of NAMES."""
    del spec.ports[:]
    spec.port_holders = pb.PORT_HOLDERS_OURS
    spec.port_holder_stop_url = ""
    if spec.state_delivery.WhichOneof("method") == "file":
        spec.state_delivery.file.path = str(files / f"state-{rng.randrange(10)}")
    if spec.state_delivery.WhichOneof("method") == "http":
        spec.state_delivery.http.unix_socket = ""
    if rng.random() < 0.6:
        if rng.random() < 0.6:  # a clean spec with a few wild values, so that children do run
            spec.Clear()
            spec.stop_grace_seconds = rng.choice([0.0, 0.2, 1.0, 2.0])
            spec.restart = rng.choice([v.number for v in pb.RestartPolicy.DESCRIPTOR.values])
        spec.name = rng.choice(NAMES)
        spec.argv[:] = rng.choice(RUNNABLE)
        if rng.random() < 0.7:
            spec.env.clear()


def wild_request(method: object, rng: random.Random, files: pathlib.Path) -> bytes:
    """Random bytes, or a serialised wild message of the method's request type."""
    if rng.random() < 0.2:
        return rng.randbytes(rng.randint(0, 64))
    request = wild_message(method.input_type, rng)  # type: ignore[attr-defined]
    if isinstance(request, pb.SpawnRequest):
        harmless(request.spec, rng, files)
    elif "name" in request.DESCRIPTOR.fields_by_name and rng.random() < 0.7:
        request.name = rng.choice(NAMES)  # type: ignore[attr-defined]
    return request.SerializeToString()


def call(channel: grpc.Channel, method: object, payload: bytes) -> grpc.StatusCode:
    """Send ``payload`` raw to ``method``; the status code it ends with."""
    path = f"/{method.containing_service.full_name}/{method.name}"  # type: ignore[attr-defined]
    try:
        if method.server_streaming:  # type: ignore[attr-defined]
            for _ in channel.unary_stream(path)(payload, timeout=CALL_TIMEOUT):
                pass
        else:
            channel.unary_unary(path)(payload, timeout=CALL_TIMEOUT)
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def fuzz(sup: SupervisorProcess, seed: int, calls: int, files: pathlib.Path) -> list[tuple[str, str, bytes]]:
    """``calls`` random requests from one client; the refused answers (method, code, request)."""
    rng = random.Random(seed)
    refused = []
    with sup.channel() as channel:
        for _ in range(calls):
            method = rng.choice(METHODS)
            payload = wild_request(method, rng, files)
            code = call(channel, method, payload)
            if code in REFUSED:
                refused.append((method.name, code.name, payload[:200]))
    return refused


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (zombies not counted: their parent still has to reap them)."""
    children: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                state, ppid = f.read().rsplit(")", 1)[1].split()[:2]
        except (FileNotFoundError, ProcessLookupError):  # it ended meanwhile
            continue
        if state != "Z":
            children.setdefault(int(ppid), []).append(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


@pytest.fixture
def supd(tmp_path: pathlib.Path) -> Iterator[SupervisorProcess]:
    with running_supervisor(tmp_path, ["--shutdown-timeout", "10"]) as sup:
        yield sup


def _check_and_clean_up(sup: SupervisorProcess) -> None:
    assert sup.proc.poll() is None, f"supd exited: {sup.stderr_text()[-3000:]}"
    stub = pb_grpc.SupervisorStub(sup.channel())
    for info in stub.List(pb.ListRequest(), timeout=10).children:
        stub.Remove(pb.RemoveRequest(name=info.spec.name, grace_seconds=1), timeout=30)
    assert not stub.List(pb.ListRequest(), timeout=10).children
    wait_until(lambda: not descendants(sup.proc.pid), timeout=15, what="no process under supd once all are removed")
    assert "Traceback" not in sup.stderr_text()


def test_one_client_sending_random_and_malformed_requests(supd: SupervisorProcess, tmp_path: pathlib.Path) -> None:
    refused = fuzz(supd, seed=1, calls=150 * ROUNDS, files=tmp_path)
    assert not refused, refused[:5]
    _check_and_clean_up(supd)


def test_eight_clients_at_once_on_three_names(supd: SupervisorProcess, tmp_path: pathlib.Path) -> None:
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda seed: fuzz(supd, seed, 40 * ROUNDS, tmp_path), range(100, 108)))
    refused = [r for result in results for r in result]
    assert not refused, refused[:5]
    _check_and_clean_up(supd)
