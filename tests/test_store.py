"""The durable state store: its file, its lock, refusing damaged files, revisions and their numbers."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pathlib
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator

import anyio
import pytest
from structlog.testing import capture_logs

from supervisor._daemon.state.store import (
    INTERRUPTED_ERROR,
    SCHEMA_VERSION,
    AsyncStateStore,
    ProcessRecord,
    RevisionNotPending,
    StateStore,
    StoreError,
)

ROOT = str(pathlib.Path(__file__).resolve().parent.parent)


@pytest.fixture
def store(tmp_path: pathlib.Path) -> Iterator[StateStore]:
    s = StateStore.open(str(tmp_path / "state"), keep_revisions=3)
    yield s
    s.close()


def now() -> int:
    return time.time_ns()


def snapshot(directory: pathlib.Path) -> dict[str, str]:
    """Every file in ``directory`` → a digest of its bytes."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def numbers(store: StateStore, name: str) -> list[int]:
    return [r.revision for r in store.history(name, limit=100)]


# The file and the directory.


def test_open_creates_the_directory_and_parents_0700_and_the_file_0600(tmp_path: pathlib.Path):
    directory = tmp_path / "a" / "b" / "state"
    old_umask = os.umask(0o022)
    try:
        store = StateStore.open(str(directory))
    finally:
        os.umask(old_umask)
    try:
        assert store.path == str(directory / "supd.db")
        for d in (tmp_path / "a", tmp_path / "a" / "b", directory):
            assert d.stat().st_mode & 0o777 == 0o700, d
        assert (directory / "supd.db").stat().st_mode & 0o777 == 0o600
        assert (directory / "supd.db.lock").read_text() == f"{os.getpid()}\n"
        assert store._db is not None
        assert store._db.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    finally:
        store.close()
    with sqlite3.connect(directory / "supd.db") as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    db.close()


def test_what_was_written_is_there_after_reopening(tmp_path: pathlib.Path):
    directory = str(tmp_path / "state")
    store = StateStore.open(directory)
    store.put_spec("web", b"spec-web")
    rev = store.begin_revision("web", b"routes", "application/json", 1234)
    store.accept_revision("web", rev, 5678)
    store.close()
    store = StateStore.open(directory)
    try:
        assert store.interrupted == 0
        assert store.specs() == [("web", b"spec-web")]
        assert store.accepted("web") == store.revision("web", 1)
        accepted = store.accepted("web")
        assert accepted is not None
        assert (accepted.state, accepted.content_type, accepted.created_ns, accepted.accepted_ns) == (
            b"routes",
            "application/json",
            1234,
            5678,
        )
    finally:
        store.close()


def test_a_state_directory_that_is_a_file_is_refused(tmp_path: pathlib.Path):
    (tmp_path / "state").write_text("not a directory")
    with pytest.raises(StoreError, match=rf"state directory {tmp_path}/state: not a directory"):
        StateStore.open(str(tmp_path / "state"))


def test_keep_revisions_must_be_positive(tmp_path: pathlib.Path):
    with pytest.raises(ValueError, match="keep_revisions: must be >= 1, got 0"):
        StateStore.open(str(tmp_path), keep_revisions=0)


def test_a_closed_store_refuses_calls_and_closing_twice_is_harmless(tmp_path: pathlib.Path):
    store = StateStore.open(str(tmp_path))
    store.close()
    store.close()
    with pytest.raises(StoreError, match=rf"{tmp_path}/supd.db: the store is closed"):
        store.specs()


# One supd per store.

HOLDER = """
import sys
import structlog
from supervisor._daemon.state.store import StateStore
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
store = StateStore.open(sys.argv[1])
print("open", flush=True)
sys.stdin.read()
store.close()
"""


def test_a_second_open_names_the_directory_and_the_holders_pid(tmp_path: pathlib.Path):
    directory = str(tmp_path / "state")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, directory],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "open\n"
        with pytest.raises(StoreError) as refused:
            StateStore.open(directory)
        assert f"state directory {directory} is in use by another supd (pid {holder.pid}," in str(refused.value)
    finally:
        holder.communicate("", timeout=10)
    assert holder.returncode == 0
    StateStore.open(directory).close()  # released when the holder closed it


def test_the_lock_is_released_when_the_holder_is_killed(tmp_path: pathlib.Path):
    directory = str(tmp_path / "state")
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, directory], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT, text=True
    ) as holder:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "open\n"
        holder.kill()
        holder.wait(timeout=10)
    StateStore.open(directory).close()


def test_a_second_open_in_one_process_is_refused_too(store: StateStore):
    with pytest.raises(StoreError, match=f"is in use by another supd \\(pid {os.getpid()},"):
        StateStore.open(os.path.dirname(store.path))


# Files that are not a usable store are refused, named, and left as they are.


def refused(directory: pathlib.Path, match: str) -> StoreError:
    before = snapshot(directory)
    with pytest.raises(StoreError) as caught:
        StateStore.open(str(directory))
    message = str(caught.value)
    assert f"{directory}/supd.db" in message
    assert match in message, message
    assert "supd never replaces it" in message or "newer supd" in message
    after = snapshot(directory)
    after.pop("supd.db.lock", None)
    before.pop("supd.db.lock", None)
    assert after == before, "the refused store must be left exactly as it was"
    return caught.value


def test_garbage_bytes_are_not_a_database(tmp_path: pathlib.Path):
    (tmp_path / "supd.db").write_bytes(os.urandom(8192))
    refused(tmp_path, "supd.db: not a supd store: file is not a database (SQLITE_NOTADB)")


def test_a_truncated_store_is_damaged(tmp_path: pathlib.Path):
    store = StateStore.open(str(tmp_path))
    for i in range(40):
        store.put_spec(f"child-{i:02}", os.urandom(3000))
        store.begin_revision(f"child-{i:02}", os.urandom(20000), "application/octet-stream", now())
    store.close()
    assert not (tmp_path / "supd.db-wal").exists(), "closing checkpoints the log into the file"
    data = (tmp_path / "supd.db").read_bytes()
    assert len(data) > 500_000
    (tmp_path / "supd.db").write_bytes(data[: len(data) // 2])
    refused(tmp_path, "the store is damaged")


def test_a_store_made_by_a_newer_supd_is_refused(tmp_path: pathlib.Path):
    StateStore.open(str(tmp_path)).close()
    with sqlite3.connect(tmp_path / "supd.db") as db:
        db.execute("PRAGMA user_version = 3")
    db.close()
    refused(tmp_path, "made by a newer supd (schema version 3; this supd knows 2)")


def test_another_programs_database_is_not_a_supd_store(tmp_path: pathlib.Path):
    with sqlite3.connect(tmp_path / "supd.db") as db:
        db.execute("CREATE TABLE bookmarks (url TEXT)")
    db.close()
    refused(tmp_path, "not a supd store (it holds tables bookmarks)")


def test_an_empty_file_left_by_a_first_open_becomes_a_store(tmp_path: pathlib.Path):
    (tmp_path / "supd.db").write_bytes(b"")
    store = StateStore.open(str(tmp_path))
    try:
        assert store.specs() == []
    finally:
        store.close()


UNREADABLE = """
import sys
import structlog
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
from supervisor._daemon.state.store import StateStore, StoreError
try:
    StateStore.open(sys.argv[1])
except StoreError as exc:
    print(exc)
else:
    print("opened")
"""
AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def test_a_store_file_supd_may_not_read_is_refused(tmp_path: pathlib.Path):
    if os.geteuid() != 0:
        directory = tmp_path
        StateStore.open(str(directory)).close()
        (directory / "supd.db").chmod(0)
        message = str(refused(directory, "Permission denied"))
        assert f"uid {os.getuid()}" in message
        return
    # Root reads any file (CAP_DAC_OVERRIDE): the open is made as nobody, in a directory nobody may write.
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: no way to open the store as another user")
    directory = pathlib.Path(tempfile.mkdtemp(prefix="supd-store-"))
    try:
        directory.chmod(0o755)
        StateStore.open(str(directory)).close()
        os.chown(directory, 65534, 65534)
        (directory / "supd.db.lock").unlink()
        before = snapshot(directory)
        result = subprocess.run(
            [*AS_NOBODY, sys.executable, "-c", UNREADABLE, str(directory)],
            check=False,
            capture_output=True,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
            timeout=30,
        )
        assert result.returncode == 0, result.stderr
        message = result.stdout.strip()
        assert message.startswith(f"{directory}/supd.db: cannot open the store: Permission denied"), message
        assert "uid 65534" in message
        after = snapshot(directory)
        after.pop("supd.db.lock")
        assert after == {k: v for k, v in before.items() if k != "supd.db.lock"}
    finally:
        shutil.rmtree(directory)


# Specs.


def test_specs_in_name_order_replaced_and_removed(store: StateStore):
    store.put_spec("web", b"v1")
    store.put_spec("api", b"a1")
    store.put_spec("web", b"v2")
    assert store.specs() == [("api", b"a1"), ("web", b"v2")]
    store.remove_child("web")
    assert store.specs() == [("api", b"a1")]
    store.remove_child("nobody")  # nothing to forget: no error


def test_a_child_with_revisions_but_no_spec_lists_no_spec(store: StateStore):
    store.begin_revision("configured", b"x", "text/plain", now())
    assert store.specs() == []


# Revisions.


def test_revisions_count_up_from_one_per_child(store: StateStore):
    assert [store.begin_revision("a", b"", "text/plain", now()) for _ in range(3)] == [1, 2, 3]
    assert store.begin_revision("b", b"", "text/plain", now()) == 1


def test_numbers_are_never_reused_after_pruning_until_the_child_is_removed(store: StateStore):
    for expected in range(1, 11):
        rev = store.begin_revision("web", b"%d" % expected, "text/plain", now())
        assert rev == expected
        store.fail_revision("web", rev, "rejected")
    assert numbers(store, "web") == [10, 9, 8]  # keep_revisions=3
    assert store.begin_revision("web", b"", "text/plain", now()) == 11
    store.remove_child("web")
    assert numbers(store, "web") == []
    assert store.begin_revision("web", b"", "text/plain", now()) == 1


def test_pruning_never_drops_the_accepted_revision_nor_pending_ones(store: StateStore):
    accepted = store.begin_revision("web", b"good", "application/json", now())
    store.accept_revision("web", accepted, now())
    pending = store.begin_revision("web", b"under way", "application/json", now())
    for _ in range(6):
        store.fail_revision("web", store.begin_revision("web", b"bad", "application/json", now()), "400 bad json")
    assert numbers(store, "web") == [8, 7, 6, pending, accepted]
    got = store.accepted("web")
    assert got is not None
    assert (got.revision, got.state) == (accepted, b"good")
    # A later accept moves the pointer; the old accepted one is then pruned like any other.
    store.accept_revision("web", pending, now())
    store.fail_revision("web", store.begin_revision("web", b"bad", "application/json", now()), "400")
    assert numbers(store, "web") == [9, 8, 7, pending]
    assert store.accepted_revisions() == {"web": pending}


def test_history_is_newest_first_without_bytes(store: StateStore):
    for size in (1, 10, 100):
        rev = store.begin_revision("web", b"x" * size, "text/plain", 1000 + size)
        if size == 10:
            store.fail_revision("web", rev, "503")
        else:
            store.accept_revision("web", rev, 2000 + size)
    history = store.history("web")
    assert [(r.revision, r.size_bytes, r.state, r.created_ns) for r in history] == [
        (3, 100, b"", 1100),
        (2, 10, b"", 1010),
        (1, 1, b"", 1001),
    ]
    assert [(r.accepted, r.accepted_ns, r.error, r.pending) for r in history] == [
        (True, 2100, "", False),
        (False, 0, "503", False),
        (True, 2001, "", False),
    ]
    assert [r.revision for r in store.history("web", limit=2)] == [3, 2]
    assert store.history("web", limit=0) == []
    assert store.history("nobody") == []
    with pytest.raises(ValueError, match="limit: must be >= 0, got -1"):
        store.history("web", limit=-1)


def test_revision_with_bytes_and_none_when_missing(store: StateStore):
    payload = os.urandom(300_000)
    rev = store.begin_revision("web", payload, "application/octet-stream", now())
    got = store.revision("web", rev)
    assert got is not None
    assert (got.state, got.size_bytes, got.pending) == (payload, len(payload), True)
    assert store.revision("web", rev + 1) is None
    assert store.revision("nobody", 1) is None
    assert store.accepted("web") is None


def test_accepted_is_the_one_accepted_last(store: StateStore):
    first = store.begin_revision("web", b"one", "text/plain", now())
    second = store.begin_revision("web", b"two", "text/plain", now())
    store.accept_revision("web", second, now())
    store.accept_revision("web", first, now())  # accepted later, though older: the child holds it now
    got = store.accepted("web")
    assert got is not None
    assert (got.revision, got.state) == (first, b"one")


def test_only_a_pending_revision_can_be_settled(store: StateStore):
    rev = store.begin_revision("web", b"x", "text/plain", now())
    store.accept_revision("web", rev, now())
    with pytest.raises(RevisionNotPending, match=f"revision {rev} of child 'web' is not pending"):
        store.accept_revision("web", rev, now())
    with pytest.raises(RevisionNotPending):
        store.fail_revision("web", rev, "late")
    with pytest.raises(RevisionNotPending):
        store.accept_revision("web", 99, now())
    rev = store.begin_revision("web", b"y", "text/plain", now())
    store.remove_child("web")
    with pytest.raises(RevisionNotPending):
        store.accept_revision("web", rev, now())
    with pytest.raises(ValueError, match="accepted_ns: must be > 0, got 0"):
        store.accept_revision("web", rev, 0)
    with pytest.raises(ValueError, match="error: must say why"):
        store.fail_revision("web", rev, "")
    assert store.accepted_revisions() == {}


def test_remove_child_forgets_spec_and_revisions_of_that_child_only(store: StateStore):
    for name in ("api", "web"):
        store.put_spec(name, name.encode())
        store.accept_revision(name, store.begin_revision(name, b"s", "text/plain", now()), now())
    store.remove_child("web")
    assert store.specs() == [("api", b"api")]
    assert store.accepted_revisions() == {"api": 1}
    assert store.accepted("web") is None
    assert store.history("web") == []


def test_a_write_that_fails_is_a_store_error_and_leaves_nothing_behind(store: StateStore):
    assert store._db is not None
    store.accept_revision("web", store.begin_revision("web", b"small", "text/plain", now()), now())
    (pages,) = store._db.execute("PRAGMA page_count").fetchone()
    store._db.execute(f"PRAGMA max_page_count = {pages + 2}")  # a full disk, as SQLite sees it
    with pytest.raises(StoreError) as full:
        store.begin_revision("web", os.urandom(1 << 20), "application/octet-stream", now())
    assert str(full.value).startswith(f"{store.path}: write failed: database or disk is full")
    assert str(full.value).endswith("(SQLITE_FULL); free space on the file system that holds it")
    store._db.execute("PRAGMA max_page_count = 1073741823")
    assert numbers(store, "web") == [1]
    assert store.begin_revision("web", b"again", "text/plain", now()) == 2  # the failed one took no number


def test_pending_revisions_of_a_previous_run_are_failed_at_open(tmp_path: pathlib.Path):
    store = StateStore.open(str(tmp_path))
    store.accept_revision("web", store.begin_revision("web", b"old", "text/plain", now()), now())
    store.begin_revision("web", b"cut short", "text/plain", now())
    store.begin_revision("api", b"cut short", "text/plain", now())
    store.close()  # as if supd had ended with two deliveries under way
    with capture_logs() as logs:
        store = StateStore.open(str(tmp_path))
    try:
        assert store.interrupted == 2
        assert [(r.revision, r.error) for r in store.history("web")] == [(2, INTERRUPTED_ERROR), (1, "")]
        assert [(r.revision, r.error) for r in store.history("api")] == [(1, INTERRUPTED_ERROR)]
        assert store.accepted_revisions() == {"web": 1}
        events = [e for e in logs if e["event"] == "store.revisions.interrupted"]
        assert [(e["count"], e["path"], e["log_level"]) for e in events] == [(2, store.path, "warning")]
    finally:
        store.close()
    store = StateStore.open(str(tmp_path))
    assert store.interrupted == 0
    store.close()


# The async wrapper.


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_the_async_store_runs_every_call_off_the_event_loop(store: StateStore):
    threads: set[int] = set()
    assert store._db is not None
    store._db.set_trace_callback(lambda _sql: threads.add(threading.get_ident()))
    loop_thread = threading.get_ident()
    astore = AsyncStateStore(store)
    await astore.put_spec("web", b"spec")
    with anyio.fail_after(30):
        revisions: list[int] = []

        async def begin() -> None:
            revisions.append(await astore.begin_revision("web", b"s", "text/plain", now()))

        async with anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(begin)
        assert sorted(revisions) == list(range(1, 21))
        await astore.accept_revision("web", 20, now())
        await astore.fail_revision("web", 19, "400")
        accepted = await astore.accepted("web")
        assert accepted is not None
        assert accepted.revision == 20
        assert (await astore.revision("web", 19)) is not None
        assert [r.revision for r in await astore.history("web", 2)] == [20, 19]
        assert await astore.accepted_revisions() == {"web": 20}
        assert await astore.specs() == [("web", b"spec")]
        await astore.remove_child("web")
        assert await astore.specs() == []
    assert threads, "the trace callback saw no statement"
    assert loop_thread not in threads
    await astore.aclose()
    with pytest.raises(StoreError, match="closed"):
        await astore.specs()


def test_a_version_1_store_gains_an_instance_id_and_process_records(tmp_path: pathlib.Path):
    first = StateStore.open(str(tmp_path))
    instance = first.instance
    first.begin_revision("web", b"kept", "text/plain", now())
    first.close()
    with sqlite3.connect(tmp_path / "supd.db") as db:  # back to the version-1 schema
        db.execute("DROP TABLE meta")
        db.execute("DROP TABLE processes")
        db.execute("PRAGMA user_version = 1")
    db.close()
    again = StateStore.open(str(tmp_path))
    try:
        assert len(again.instance) == 32 and again.instance != instance, "a migrated store gets its own id"
        assert again.revision("web", 1) is not None, "migrating keeps what was there"
        record = ProcessRecord(pid=123, start_ticks=456, child="web", generation=2, started_ns=now())
        again.record_process(record)
        again.record_process(dataclasses.replace(record, pid=124))
        assert [r.pid for r in again.processes()] == [123, 124]
        again.forget_processes([(123, 456), (999, 1)])
        assert again.processes() == [dataclasses.replace(record, pid=124)]
    finally:
        again.close()
    reopened = StateStore.open(str(tmp_path))
    try:
        assert [r.pid for r in reopened.processes()] == [124], "records outlive supd"
    finally:
        reopened.close()
