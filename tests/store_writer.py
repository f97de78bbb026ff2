"""A program that changes a state store forever, for the kill-in-a-loop test to SIGKILL at random instants.

Usage: ``store_writer.py DIRECTORY SEED``. It opens the store in DIRECTORY
and loops over a few children: begin a revision, then accept it, fail it or
leave it pending; now and then store a spec or remove a child. Around every
call it writes one line to stdout, flushed: ``call ...`` just before the
call, ``ack ...`` just after it returned, so the reader knows everything
acknowledged and the one call that may have been under way:

    call open                              ack open INTERRUPTED
    call begin CHILD REVISION CREATED_NS   ack begin CHILD REVISION
    call accept CHILD REVISION ACCEPTED_NS ack accept CHILD REVISION
    call fail CHILD REVISION               ack fail CHILD REVISION
    call spec CHILD N                      ack spec CHILD N
    call remove CHILD                      ack remove CHILD

A revision's bytes, content type and failure text are functions of the
child's name and the revision's number (``payload`` and friends, used by the
test to check them); a begin's number is predicted before the call, and the
writer stops with an error if the store hands out another.
"""

from __future__ import annotations

import hashlib
import importlib.util
import pathlib
import random
import sys
import time
from types import ModuleType

CHILDREN = ("alpha", "beta", "gamma")
KEEP_REVISIONS = 4
MAX_PAYLOAD = 1 << 20


def payload_size(child: str, revision: int) -> int:
    """Half under 1 KiB, most of the rest under 64 KiB, one in eight up to 1 MiB."""
    digest = hashlib.sha256(f"{child}/{revision}/size".encode()).digest()
    bound = 1024 if digest[0] < 128 else 65536 if digest[0] < 224 else MAX_PAYLOAD + 1
    return int.from_bytes(digest[1:5], "big") % bound


def payload(child: str, revision: int) -> bytes:
    return random.Random(f"{child}/{revision}").randbytes(payload_size(child, revision))


def content_type(revision: int) -> str:
    return "application/json" if revision % 2 else "application/octet-stream"


def fail_error(child: str, revision: int) -> str:
    return f"rejected {child} {revision}"


def spec_bytes(child: str, n: int) -> bytes:
    return f"spec of {child} #{n}".encode()


def load_store() -> ModuleType:
    """The store module, loaded from its file: importing it through the package would import grpc too,
    which takes most of a start and so most of each kill's time."""
    path = pathlib.Path(__file__).resolve().parent.parent / "supervisor" / "_daemon" / "state" / "store.py"
    spec = importlib.util.spec_from_file_location("supd_state_store", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main() -> None:
    directory, seed = sys.argv[1], int(sys.argv[2])
    import structlog

    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # stdout carries the lines only
    store_module = load_store()
    rng = random.Random(seed)
    say("call open")
    store = store_module.StateStore.open(directory, keep_revisions=KEEP_REVISIONS)
    say(f"ack open {store.interrupted}")
    last = {}
    for child in CHILDREN:
        newest = store.history(child, 1)
        last[child] = newest[0].revision if newest else 0
    while True:
        child = rng.choice(CHILDREN)
        roll = rng.random()
        if roll < 0.06:
            n = rng.randrange(1_000_000)
            say(f"call spec {child} {n}")
            store.put_spec(child, spec_bytes(child, n))
            say(f"ack spec {child} {n}")
            continue
        if roll < 0.09:
            say(f"call remove {child}")
            store.remove_child(child)
            say(f"ack remove {child}")
            last[child] = 0
            continue
        revision = last[child] + 1
        created_ns = time.time_ns()
        say(f"call begin {child} {revision} {created_ns}")
        got = store.begin_revision(child, payload(child, revision), content_type(revision), created_ns)
        if got != revision:
            sys.exit(f"begin_revision of {child} returned {got}, expected {revision}")
        say(f"ack begin {child} {revision}")
        last[child] = revision
        roll = rng.random()
        if roll < 0.6:
            accepted_ns = time.time_ns()
            say(f"call accept {child} {revision} {accepted_ns}")
            store.accept_revision(child, revision, accepted_ns)
            say(f"ack accept {child} {revision}")
        elif roll < 0.9:
            say(f"call fail {child} {revision}")
            store.fail_revision(child, revision, fail_error(child, revision))
            say(f"ack fail {child} {revision}")
        # else: left pending, as by a delivery still under way


if __name__ == "__main__":
    main()
