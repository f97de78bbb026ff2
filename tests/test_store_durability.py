"""Kill-in-a-loop: a store writer SIGKILLed at random instants never loses or half-writes what it acknowledged.

Each round starts ``store_writer.py`` on one store, waits for its first line,
SIGKILLs it after a random delay (a fifth of them within a few milliseconds,
so that they land in the middle of opening the store), then reopens the store
here and checks it against a model built from the writer's lines. Every
acknowledged call took effect and the one call under way took effect wholly
or not at all: the store equals the model after the acknowledged calls, or
after those and the call under way. Every tenth round starts on a fresh
directory, so that kills land in a first open too.

``SUPD_STORE_KILLS`` sets the number of kills (default 30, a few seconds: the
form every test run has); ``SUPD_STORE_KILLS=300 pytest tests/test_store_durability.py`` is the long form.
``SUPD_STORE_SEED`` replays a run (the seed is printed).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import pathlib
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from supervisor._daemon.state.store import INTERRUPTED_ERROR, StateStore
from supervisor.testing import wait_until

from store_writer import CHILDREN, KEEP_REVISIONS, content_type, fail_error, payload, spec_bytes

WRITER = str(pathlib.Path(__file__).with_name("store_writer.py"))
KILLS = int(os.environ.get("SUPD_STORE_KILLS", "30"))
FRESH_EVERY = 10


@dataclasses.dataclass
class Rev:
    created_ns: int
    accepted_ns: int = 0
    error: str = ""


@dataclasses.dataclass
class Child:
    spec: bytes | None = None
    last: int = 0  # the last revision number handed out
    accepted: int = 0
    revs: dict[int, Rev] = dataclasses.field(default_factory=dict)


Model = dict[str, Child]


def apply(model: Model, call: list[str]) -> None:
    """Apply one call (the words after ``call``) to the model, as the store should have."""
    op, name, *args = call
    child = model.setdefault(name, Child())
    if op == "spec":
        child.spec = spec_bytes(name, int(args[0]))
    elif op == "remove":
        del model[name]
        return
    elif op == "begin":
        revision, created_ns = int(args[0]), int(args[1])
        assert revision == child.last + 1, f"{name}: revision {revision} begun after {child.last}"
        child.last = revision
        child.revs[revision] = Rev(created_ns)
    else:
        rev = child.revs[int(args[0])]
        assert (rev.accepted_ns, rev.error) == (0, ""), f"{name}: {op} of a revision that is not pending"
        if op == "accept":
            rev.accepted_ns = int(args[1])
            child.accepted = int(args[0])
        else:
            rev.error = fail_error(name, int(args[0]))
    if child.spec is None and not child.revs:
        del model[name]


@dataclasses.dataclass
class Round:
    """What one writer's lines say: the model after its acknowledged calls, and the call under way (if any)."""

    acked: Model
    under_way: list[str] | None
    opened: bool


def replay(model: Model, text: str) -> Round:
    lines = text.split("\n")[:-1]  # a last line without its newline was not written wholly: not acknowledged
    acked = copy.deepcopy(model)
    call: list[str] | None = None
    opened = False
    for line in lines:
        kind, *words = line.split()
        if kind == "call":
            assert call is None, f"two calls without an ack between: {call} then {words}"
            call = words
            continue
        assert kind == "ack" and call is not None, f"an ack with no call: {line!r}"
        same = {"open": 1, "remove": 2}.get(call[0], 3)  # the words an ack repeats from its call
        assert words[:same] == call[:same], f"ack {words} for call {call}"
        if words[0] == "open":
            assert words[1] == "0", "the checker's open failed every pending revision: none for the writer"
            opened = True
        else:
            apply(acked, call)
        call = None
    return Round(acked, None if call is None or call[0] == "open" else call, opened)


@dataclasses.dataclass
class Snapshot:
    specs: dict[str, bytes]
    accepted: dict[str, int]
    revs: dict[str, dict[int, Rev]]
    interrupted: int


def read(store: StateStore) -> Snapshot:
    """The store as its API shows it; every revision's bytes are checked on the way."""
    revs: dict[str, dict[int, Rev]] = {}
    for name in CHILDREN:
        revs[name] = {}
        for r in store.history(name, limit=1000):
            full = store.revision(name, r.revision)
            assert full is not None
            assert full.state == payload(name, r.revision), f"{name} revision {r.revision}: bytes differ"
            assert (full.size_bytes, full.content_type) == (len(full.state), content_type(r.revision))
            assert not full.pending, f"{name} revision {r.revision} still pending after open"
            revs[name][r.revision] = Rev(r.created_ns, r.accepted_ns, r.error)
        accepted = store.accepted(name)
        if accepted is not None:
            assert accepted.state == payload(name, accepted.revision)
    return Snapshot(dict(store.specs()), store.accepted_revisions(), revs, store.interrupted)


def mismatch(snap: Snapshot, model: Model) -> str | None:
    """Why the store is not ``model`` (pending revisions failed by the open, old ones pruned); None when it is."""
    specs = {name: child.spec for name, child in model.items() if child.spec is not None}
    if snap.specs != specs:
        return f"specs {snap.specs} != {specs}"
    accepted = {name: child.accepted for name, child in model.items() if child.accepted}
    if snap.accepted != accepted:
        return f"accepted revisions {snap.accepted} != {accepted}"
    pending = 0
    for name in CHILDREN:
        child = model.get(name, Child())
        expected = {
            n: Rev(r.created_ns, r.accepted_ns, r.error or ("" if r.accepted_ns else INTERRUPTED_ERROR))
            for n, r in child.revs.items()
        }
        got = snap.revs[name]
        if any(expected.get(n) != r for n, r in got.items()):
            return f"{name}: stored revisions {got} are not among {expected}"
        was_pending = {n for n, r in child.revs.items() if not r.accepted_ns and not r.error}
        # Pruning keeps the newest, the accepted one and pending ones.
        must = set(sorted(expected)[-KEEP_REVISIONS:]) | was_pending | ({child.accepted} - {0})
        if missing := must - set(got):
            return f"{name}: revisions {sorted(missing)} missing (stored {sorted(got)})"
        pending += len(was_pending)
    if snap.interrupted != pending:
        return f"{snap.interrupted} revisions failed at open, {pending} were pending"
    return None


def model_of(snap: Snapshot) -> Model:
    model: Model = {}
    for name in CHILDREN:
        if name in snap.specs or snap.revs[name]:
            revs = snap.revs[name]
            model[name] = Child(snap.specs.get(name), max(revs, default=0), snap.accepted.get(name, 0), dict(revs))
    return model


def check(directory: pathlib.Path, before: Model, text: str) -> tuple[Model, str]:
    """Check the store after a kill; the model of it, and which outcome it matched."""
    done = replay(before, text)
    store = StateStore.open(str(directory), keep_revisions=KEEP_REVISIONS)
    try:
        assert store._db is not None
        assert store._db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        snap = read(store)
    finally:
        store.close()
    if not done.opened:
        outcome = "killed while opening"
        assert (why := mismatch(snap, done.acked)) is None, why
    elif done.under_way is None:
        outcome = "killed between calls"
        assert (why := mismatch(snap, done.acked)) is None, why
    else:
        with_it = copy.deepcopy(done.acked)
        apply(with_it, done.under_way)
        op = done.under_way[0]
        if mismatch(snap, with_it) is None:
            outcome = f"{op} under way: done"
        else:
            why = mismatch(snap, done.acked)
            assert why is None, f"neither before nor after {done.under_way}: {why}"
            outcome = f"{op} under way: not done"
    return model_of(snap), outcome


class Writers:
    """Starts store writers through ``store_writer.py --fork-server``: real processes, started in milliseconds."""

    def __init__(self) -> None:
        self.server = subprocess.Popen(
            [sys.executable, WRITER, "--fork-server"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def _ask(self, request: str, answer: str) -> int:
        assert self.server.stdin is not None and self.server.stdout is not None
        self.server.stdin.write(request + "\n")
        self.server.stdin.flush()
        kind, value = self.server.stdout.readline().split()
        assert kind == answer, f"the fork server answered {kind} {value} to {request}"
        return int(value)

    def run(self, directory: pathlib.Path, seed: int, out: pathlib.Path, err: pathlib.Path) -> int:
        """A writer's pid."""
        out.write_bytes(b"")
        err.write_bytes(b"")
        return self._ask(f"run {directory} {seed} {out} {err}", "pid")

    def reap(self, pid: int) -> int:
        """Wait for writer ``pid`` to end; its wait status."""
        return self._ask(f"reap {pid}", "status")

    def close(self) -> None:
        self.server.communicate("", timeout=10)
        assert self.server.returncode == 0


@pytest.fixture
def writers() -> Iterator[Writers]:
    w = Writers()
    try:
        yield w
    finally:
        w.close()


@pytest.mark.timeout(60 + 3 * KILLS)
def test_kill_in_a_loop(tmp_path: pathlib.Path, writers: Writers, record_property: pytest.RecordProperty):
    seed = int(os.environ.get("SUPD_STORE_SEED", random.randrange(1 << 32)))
    rng = random.Random(seed)
    print(f"seed {seed} (SUPD_STORE_SEED={seed} replays it), {KILLS} kills")
    outcomes: Counter[str] = Counter()
    started = time.monotonic()
    model: Model = {}
    directory = tmp_path / "store-0"
    out, err = tmp_path / "writer.out", tmp_path / "writer.err"
    for kill in range(KILLS):
        if kill % FRESH_EVERY == 0:
            directory = tmp_path / f"store-{kill}"
            model = {}
        pid = writers.run(directory, seed + kill, out, err)
        try:
            wait_until(
                lambda: out.stat().st_size > 0 or err.stat().st_size > 0, 30, interval=0.001, what="writer start"
            )
            # The random instant of the kill: the one sleep here is the thing under test, not a wait for anything.
            time.sleep(rng.uniform(0, 0.005) if rng.random() < 0.2 else rng.uniform(0, 0.1))
        finally:
            os.kill(pid, signal.SIGKILL)
            status = writers.reap(pid)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
            f"round {kill}: the writer ended by itself before the kill: {err.read_text()}"
        )
        text = out.read_text()
        try:
            model, outcome = check(directory, model, text)
        except AssertionError as exc:
            tail = "\n".join(text.splitlines()[-6:])
            raise AssertionError(f"round {kill} (seed {seed}): {exc}\nlast lines of the writer:\n{tail}") from exc
        outcomes[outcome] += 1
    elapsed = time.monotonic() - started
    summary = ", ".join(f"{n} {what}" for what, n in sorted(outcomes.items()))
    print(f"{KILLS} kills in {elapsed:.1f} s: {summary}")
    record_property("kills", KILLS)
    record_property("seconds", round(elapsed, 1))
    assert sum(outcomes.values()) == KILLS
    if KILLS >= 100:  # enough kills that some must have landed in an open and both sides of a commit
        assert outcomes["killed while opening"], summary
        assert any(what.endswith(": done") for what in outcomes), summary
        assert any(what.endswith(": not done") for what in outcomes), summary
