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

``store_writer.py --fork-server`` imports everything once and then starts
writers by forking, so that a start takes milliseconds rather than the
fifth of a second of an interpreter's start and imports (the loop kills
hundreds). It reads requests on stdin and answers each with one line:

    run DIRECTORY SEED OUT ERR   ->  pid PID     (a writer with stdout OUT, stderr ERR)
    reap PID                     ->  status WAITSTATUS

A revision's bytes, content type and failure text are functions of the
child's name and the revision's number (``payload`` and friends, used by the
test to check them); a begin's number is predicted before the call, and the
writer stops with an error if the store hands out another.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import pathlib
import random
import sys
import time
import traceback
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
    """A digest of child and revision repeated, stamped with its offset every KiB: no two revisions share a
    byte pattern, and no KiB of a revision looks like another of the same one."""
    size = payload_size(child, revision)
    data = bytearray(hashlib.sha512(f"{child}/{revision}".encode()).digest() * (size // 64 + 1))
    for offset in range(0, size, 1024):
        data[offset : offset + 8] = offset.to_bytes(8, "big")
    return bytes(data[:size])


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


def write(store_module: ModuleType, directory: str, seed: int) -> None:
    """Change the store in ``directory`` forever (until killed), saying each call and its return."""
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


def fork_server(store_module: ModuleType) -> None:
    for request in sys.stdin:
        match request.split():
            case ["run", directory, seed, out, err]:
                pid = os.fork()
                if pid == 0:
                    code = 1
                    try:
                        for fd, path, flags in (
                            (0, os.devnull, os.O_RDONLY),
                            (1, out, os.O_WRONLY),
                            (2, err, os.O_WRONLY),
                        ):
                            os.dup2(os.open(path, flags | os.O_CLOEXEC), fd)
                        write(store_module, directory, int(seed))
                    except BaseException:
                        traceback.print_exc()
                    finally:
                        sys.stderr.flush()
                        os._exit(code)
                say(f"pid {pid}")
            case ["reap", pid]:
                say(f"status {os.waitpid(int(pid), 0)[1]}")
            case _:
                sys.exit(f"store_writer fork server: cannot understand {request!r}")


def main() -> None:
    import structlog

    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))  # stdout carries the lines only
    store_module = load_store()
    if sys.argv[1:] == ["--fork-server"]:
        fork_server(store_module)
    else:
        write(store_module, sys.argv[1], int(sys.argv[2]))


if __name__ == "__main__":
    main()
