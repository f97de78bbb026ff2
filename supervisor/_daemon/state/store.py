"""The durable store: specs of children declared by Spawn, and each child's state revisions.

One SQLite file, ``supd.db``, in the state directory: WAL mode with
``synchronous=FULL``, so every method that returned has its transaction
fsynced, and a supd killed at any instant leaves either the old or the new
row, never a half-written one. One supd per directory: an exclusive
``flock`` on ``supd.db.lock`` (holding the owner's pid) for as long as the
store is open. A file that is not a supd store, is damaged, unreadable, or
made by a newer supd is a StoreError naming the file and the cause; the file
is never replaced, renamed or deleted.

A revision is *pending* from ``begin_revision`` until the child accepted it
(``accept_revision``) or not (``fail_revision``). Pending revisions found at
open were cut short by the end of the previous supd; they are marked failed.

It also holds this store's instance id (given to every child in its
environment as SUPD_INSTANCE, so a process supd started can be told apart from
any other) and the pid and start time of every process supd started, so a supd
restarted after a crash can find its predecessor's children. Those records are
committed with ``synchronous=NORMAL``: durable across a crash of supd (which is
what they are for), not across a power loss, which ends the processes too.

StateStore is synchronous (one connection guarded by a lock, each method one
transaction); AsyncStateStore runs the same methods in a worker thread, one at
a time, never on the event loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator

import anyio
import anyio.to_thread
import structlog

__all__ = [
    "DB_NAME",
    "INTERRUPTED_ERROR",
    "LOCK_NAME",
    "SCHEMA_VERSION",
    "AsyncStateStore",
    "ProcessRecord",
    "RevisionNotPending",
    "StateStore",
    "StoreError",
    "StoredRevision",
]

log = structlog.get_logger("supd.store")

DB_NAME = "supd.db"
LOCK_NAME = "supd.db.lock"
# PRAGMA user_version of the schema this code writes; a file with a greater one was made by a newer supd.
SCHEMA_VERSION = 2
# The error of a revision whose delivery was pending when the previous supd ended.
INTERRUPTED_ERROR = "supd stopped before the delivery ended"

_SCHEMA = (
    # One row per child the store knows: declared by Spawn (spec), or holding revisions, or both.
    """CREATE TABLE children (
        name TEXT PRIMARY KEY NOT NULL,
        spec BLOB,                                  -- a serialised ChildSpec when Spawn declared it
        last_revision INTEGER NOT NULL DEFAULT 0,   -- the last number begin_revision handed out
        accepted_revision INTEGER NOT NULL DEFAULT 0  -- the revision accepted last; 0 for none
    )""",
    # The state last, so that reading the other columns never walks its overflow pages.
    """CREATE TABLE revisions (
        child TEXT NOT NULL,
        revision INTEGER NOT NULL,
        size_bytes INTEGER NOT NULL,
        content_type TEXT NOT NULL,
        created_ns INTEGER NOT NULL,
        accepted_ns INTEGER NOT NULL DEFAULT 0,
        error TEXT NOT NULL DEFAULT '',
        state BLOB NOT NULL,
        PRIMARY KEY (child, revision)
    )""",
)
# Version 2: the instance id and the processes supd started.
_SCHEMA_2 = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL)",
    """CREATE TABLE processes (
        pid INTEGER NOT NULL,
        start_ticks INTEGER NOT NULL,               -- /proc/PID/stat field 22: with the pid, one process ever
        child TEXT NOT NULL,
        generation INTEGER NOT NULL,
        started_ns INTEGER NOT NULL,
        PRIMARY KEY (pid, start_ticks)
    )""",
)
# The log is cut back to this after a checkpoint, so that one large state does not keep it large.
_WAL_LIMIT_BYTES = 64 << 20
_TABLES = frozenset({"children", "revisions"})
_TABLES_2 = _TABLES | {"meta", "processes"}
_MOVE_ASIDE = (
    f"supd never replaces it: move it (with any {DB_NAME}-wal and {DB_NAME}-shm beside it) aside"
    " to start with an empty store, or restore it from a backup"
)
_PENDING = "accepted_ns = 0 AND error = ''"
_META = "child, revision, size_bytes, content_type, created_ns, accepted_ns, error"


class StoreError(Exception):
    """The store cannot be used. ``str(exc)`` names the file and the cause and says what to do."""


class RevisionNotPending(LookupError):
    """accept_revision or fail_revision of a revision that is not pending.

    It was never begun, was already accepted or failed, or its child was
    removed (remove_child) meanwhile.
    """


@dataclasses.dataclass(frozen=True)
class StoredRevision:
    """One state revision of one child, as stored."""

    child: str
    revision: int  # counts up from 1 per child; never reused for that child (even after pruning) until remove_child
    state: bytes  # b"" when loaded without bytes (history)
    size_bytes: int  # len of the state
    content_type: str
    created_ns: int  # time.time_ns() when the Reload asked for it
    accepted_ns: int  # 0 unless the child accepted it
    error: str  # why not accepted ("" while pending or when accepted)

    @property
    def accepted(self) -> bool:
        return self.accepted_ns != 0

    @property
    def pending(self) -> bool:
        """Neither accepted nor failed yet."""
        return self.accepted_ns == 0 and not self.error

    def __repr__(self) -> str:
        status = "accepted" if self.accepted else "pending" if self.pending else f"failed {self.error!r}"
        return f"<StoredRevision {self.child} rev={self.revision} {self.size_bytes} B {self.content_type} {status}>"


def _revision(row: tuple[str, int, int, str, int, int, str], state: bytes = b"") -> StoredRevision:
    child, revision, size_bytes, content_type, created_ns, accepted_ns, error = row
    return StoredRevision(child, revision, state, size_bytes, content_type, created_ns, accepted_ns, error)


def _cause(exc: BaseException) -> str:
    """Words for an OSError or sqlite3.Error: its message and, when known, its code name."""
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    name = getattr(exc, "sqlite_errorname", None)
    return f"{exc} ({name})" if name else str(exc)


_ADVICE = {
    "SQLITE_FULL": "free space on the file system that holds it",
    "SQLITE_BUSY": "another program holds it open (an sqlite3 shell?): close that one",
    "SQLITE_IOERR": "check the disk (the kernel log says more)",
    "SQLITE_READONLY": "give the user supd runs as write access to it and its directory",
    "SQLITE_CORRUPT": _MOVE_ASIDE,
    "SQLITE_NOTADB": _MOVE_ASIDE,
}


def _advice(exc: sqlite3.Error) -> str:
    """What to do about a failed read or write, as "; ..." (empty when there is nothing to say)."""
    name = getattr(exc, "sqlite_errorname", "")
    for prefix, advice in _ADVICE.items():
        if name.startswith(prefix):
            return f"; {advice}"
    return ""


def _make_directory(directory: str) -> None:
    """Create ``directory`` and missing parents with mode 0700; StoreError when it cannot be."""
    missing: list[str] = []
    path = os.path.abspath(directory)
    while not os.path.lexists(path):
        missing.append(path)
        path = os.path.dirname(path)
    try:
        for path in reversed(missing):
            with contextlib.suppress(FileExistsError):  # made meanwhile by someone else: theirs to set up
                os.mkdir(path, 0o700)
                os.chmod(path, 0o700)  # whatever the umask
        if not os.path.isdir(directory):
            raise StoreError(f"state directory {directory}: not a directory; give supd a directory (--state-dir)")
    except OSError as exc:
        raise StoreError(
            f"state directory {directory}: cannot create it: {_cause(exc)}; create it for the user supd runs as"
            f" (uid {os.getuid()}) with mode 0700, or give supd another one (--state-dir)"
        ) from exc


def _lock(directory: str) -> int:
    """Hold the exclusive flock of ``directory``'s lock file, with our pid in it; the file descriptor."""
    path = os.path.join(directory, LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StoreError(
            f"{path}: cannot open the lock file: {_cause(exc)}; give the user supd runs as (uid {os.getuid()})"
            f" read and write access to {directory}"
        ) from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            raise StoreError(
                f"state directory {directory} is in use by another supd (pid {holder}, holding {path});"
                " stop that one, or give this one another --state-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _create_file(path: str) -> None:
    """Create the empty database file with mode 0600 if it is missing, so SQLite never picks the mode."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        pass
    except OSError as exc:
        raise StoreError(f"{path}: cannot create the store: {_cause(exc)}") from exc
    else:
        try:
            os.fchmod(fd, 0o600)
            directory = os.open(os.path.dirname(path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.fsync(directory)  # the new name is durable before anything is acknowledged in it
            finally:
                os.close(directory)
        except OSError as exc:
            raise StoreError(f"{path}: cannot create the store: {_cause(exc)}") from exc
        finally:
            os.close(fd)
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CLOEXEC))
    except OSError as exc:
        raise StoreError(
            f"{path}: cannot open the store: {_cause(exc)}; give the user supd runs as (uid {os.getuid()})"
            " read and write access to it (mode 0600)"
        ) from exc


def _prepare(db: sqlite3.Connection, path: str) -> int:
    """Check the file, create the schema in an empty one, fail pending revisions; how many were pending.

    StoreError when the file is not a supd store, is damaged, or was made by a newer supd.
    """
    (version,) = db.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path}: made by a newer supd (schema version {version}; this supd knows {SCHEMA_VERSION});"
            f" run a supd at least as new as the one that wrote it, or {_MOVE_ASIDE}"
        )
    problems = [row[0] for row in db.execute("PRAGMA quick_check(5)").fetchall()]
    if problems != ["ok"]:
        raise StoreError(f"{path}: the store is damaged (PRAGMA quick_check: {'; '.join(problems)}); {_MOVE_ASIDE}")
    # Checked before anything is written: a file that is not ours is left exactly as it was.
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_schema WHERE type = 'table'")}
    if version == 0 and tables:
        raise StoreError(f"{path}: not a supd store (it holds tables {', '.join(sorted(tables))}); {_MOVE_ASIDE}")
    missing = (_TABLES_2 if version >= 2 else _TABLES) - tables if version else frozenset()
    if missing:
        raise StoreError(f"{path}: the store is damaged (tables missing: {', '.join(sorted(missing))}); {_MOVE_ASIDE}")
    (mode,) = db.execute("PRAGMA journal_mode=WAL").fetchone()
    if mode != "wal":
        raise StoreError(f"{path}: cannot use write-ahead logging (journal_mode is {mode!r}); {_MOVE_ASIDE}")
    db.execute("PRAGMA synchronous=FULL")
    db.execute(f"PRAGMA journal_size_limit={_WAL_LIMIT_BYTES}")
    db.execute("BEGIN IMMEDIATE")
    try:
        if version == 0:  # an empty file: ours, made by a first open
            for statement in _SCHEMA:
                db.execute(statement)
        if version < 2:
            for statement in _SCHEMA_2:
                db.execute(statement)
            db.execute("INSERT INTO meta (key, value) VALUES ('instance', ?)", (uuid.uuid4().hex,))
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        interrupted = db.execute(f"UPDATE revisions SET error = ? WHERE {_PENDING}", (INTERRUPTED_ERROR,)).rowcount
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return interrupted


@dataclasses.dataclass(frozen=True)
class ProcessRecord:
    """A process supd started: (pid, start_ticks) names it for good; the child and generation it was."""

    pid: int
    start_ticks: int
    child: str
    generation: int
    started_ns: int


class StateStore:
    """Synchronous; one sqlite3 connection (check_same_thread=False) guarded by a threading.Lock.

    Each method is one transaction. Every method raises StoreError when the
    store is closed or SQLite fails (disk full, I/O error); a write that
    raised left nothing behind.
    """

    def __init__(self, path: str, db: sqlite3.Connection, lock_fd: int, keep_revisions: int, interrupted: int) -> None:
        """Use ``StateStore.open``."""
        self.path = path
        self.keep_revisions = keep_revisions
        self.interrupted = interrupted
        self._db: sqlite3.Connection | None = db
        self._lock_fd = lock_fd
        self._lock = threading.Lock()
        # This store's id, given to every child as SUPD_INSTANCE: the same across restarts of supd.
        self.instance = ""

    @classmethod
    def open(cls, directory: str, *, keep_revisions: int = 16) -> StateStore:
        """Open (creating when missing) the store ``directory/supd.db`` and hold its lock until close.

        ``keep_revisions`` (>= 1) is how many of a child's newest revisions
        are kept, besides the accepted one and pending ones. ValueError for
        less; StoreError when the directory or the file cannot be used, or
        another supd holds the store.
        """
        if keep_revisions < 1:
            raise ValueError(f"keep_revisions: must be >= 1, got {keep_revisions}")
        _make_directory(directory)
        lock_fd = _lock(directory)
        path = os.path.join(directory, DB_NAME)
        db: sqlite3.Connection | None = None
        try:
            _create_file(path)
            db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            interrupted = _prepare(db, path)
        except sqlite3.Error as exc:
            if db is not None:
                db.close()
            os.close(lock_fd)
            name = getattr(exc, "sqlite_errorname", "")
            if name in {"SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_PERM"}:
                raise StoreError(
                    f"{path}: cannot open the store: {_cause(exc)}; give the user supd runs as (uid {os.getuid()})"
                    f" read and write access to it and to {directory}"
                ) from exc
            if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
                what = "the store is damaged" if name.startswith("SQLITE_CORRUPT") else "not a supd store"
                raise StoreError(f"{path}: {what}: {_cause(exc)}; {_MOVE_ASIDE}") from exc
            raise StoreError(f"{path}: cannot open the store: {_cause(exc)}{_advice(exc)}") from exc
        except BaseException:
            if db is not None:
                db.close()
            os.close(lock_fd)
            raise
        if interrupted:
            log.warning("store.revisions.interrupted", path=path, count=interrupted, error=INTERRUPTED_ERROR)
        (instance,) = db.execute("SELECT value FROM meta WHERE key = 'instance'").fetchone()
        log.info("store.opened", path=path, keep_revisions=keep_revisions, instance=instance)
        store = cls(path, db, lock_fd, keep_revisions, interrupted)
        store.instance = str(instance)
        return store

    def __repr__(self) -> str:
        return f"<StateStore {self.path} {'open' if self._db is not None else 'closed'} interrupted={self.interrupted}>"

    def close(self) -> None:
        """Close the database and release the directory's lock; closing twice is harmless."""
        with self._lock:
            if self._db is None:
                return
            db, self._db = self._db, None
            try:
                db.close()
            finally:
                os.close(self._lock_fd)

    @contextlib.contextmanager
    def _transaction(self, *, write: bool) -> Iterator[sqlite3.Connection]:
        """One transaction under the lock: committed when the body returns, rolled back when it raises."""
        with self._lock:
            db = self._db
            if db is None:
                raise StoreError(f"{self.path}: the store is closed")
            try:
                db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield db
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
            except sqlite3.Error as exc:
                if db.in_transaction:
                    try:
                        db.execute("ROLLBACK")
                    except sqlite3.Error:
                        log.exception("store.rollback.failed", path=self.path)
                raise StoreError(
                    f"{self.path}: {'write' if write else 'read'} failed: {_cause(exc)}{_advice(exc)}"
                ) from exc

    # Specs of children declared by Spawn.

    def put_spec(self, name: str, spec: bytes) -> None:
        """Store (or replace) the spec of child ``name``: opaque bytes, a serialised ChildSpec."""
        with self._transaction(write=True) as db:
            db.execute(
                "INSERT INTO children (name, spec) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET spec = excluded.spec",
                (name, bytes(spec)),
            )

    def remove_child(self, name: str) -> None:
        """Forget child ``name``: its spec and every revision; its revision numbers start again from 1.

        Nothing to do (and no error) when the store does not know it.
        """
        with self._transaction(write=True) as db:
            db.execute("DELETE FROM revisions WHERE child = ?", (name,))
            db.execute("DELETE FROM children WHERE name = ?", (name,))

    def apply_specs(self, put: list[tuple[str, bytes]], remove: list[str]) -> None:
        """Store the specs ``put`` and forget the children ``remove`` (as remove_child), all in one transaction."""
        with self._transaction(write=True) as db:
            db.executemany(
                "INSERT INTO children (name, spec) VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET spec = excluded.spec",
                [(name, bytes(spec)) for name, spec in put],
            )
            db.executemany("DELETE FROM revisions WHERE child = ?", [(name,) for name in remove])
            db.executemany("DELETE FROM children WHERE name = ?", [(name,) for name in remove])

    def specs(self) -> list[tuple[str, bytes]]:
        """Every stored spec as (name, spec bytes), in name order."""
        with self._transaction(write=False) as db:
            return list(db.execute("SELECT name, spec FROM children WHERE spec IS NOT NULL ORDER BY name"))

    # State revisions.

    def begin_revision(self, name: str, state: bytes, content_type: str, created_ns: int) -> int:
        """Store ``state`` as a new pending revision of child ``name``; its number (1 for a child's first)."""
        state = bytes(state)
        with self._transaction(write=True) as db:
            db.execute("INSERT INTO children (name) VALUES (?) ON CONFLICT (name) DO NOTHING", (name,))
            (revision,) = db.execute(
                "UPDATE children SET last_revision = last_revision + 1 WHERE name = ? RETURNING last_revision", (name,)
            ).fetchone()
            db.execute(
                "INSERT INTO revisions (child, revision, size_bytes, content_type, created_ns, state)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (name, revision, len(state), content_type, created_ns, state),
            )
        return int(revision)

    def accept_revision(self, name: str, revision: int, accepted_ns: int) -> None:
        """Mark a pending revision accepted at ``accepted_ns`` (> 0; time.time_ns()): the child's state from now.

        Durable when it returns. Then prunes the child's revisions to the
        ``keep_revisions`` newest, never this one nor pending ones. ValueError
        for ``accepted_ns`` <= 0; RevisionNotPending when it is not pending.
        """
        if accepted_ns <= 0:
            raise ValueError(f"accepted_ns: must be > 0, got {accepted_ns}")
        with self._transaction(write=True) as db:
            self._settle(db, name, revision, "accepted_ns = ?", accepted_ns)
            db.execute("UPDATE children SET accepted_revision = ? WHERE name = ?", (revision, name))
            self._prune(db, name)

    def fail_revision(self, name: str, revision: int, error: str) -> None:
        """Mark a pending revision not accepted, with ``error`` (not empty) saying why; then prune as accept does.

        ValueError for an empty ``error``; RevisionNotPending when it is not pending.
        """
        if not error:
            raise ValueError("error: must say why the revision was not accepted, got ''")
        with self._transaction(write=True) as db:
            self._settle(db, name, revision, "error = ?", error)
            self._prune(db, name)

    def _settle(self, db: sqlite3.Connection, name: str, revision: int, assignment: str, value: object) -> None:
        settled = db.execute(
            f"UPDATE revisions SET {assignment} WHERE child = ? AND revision = ? AND {_PENDING}",
            (value, name, revision),
        ).rowcount
        if settled != 1:
            raise RevisionNotPending(
                f"{self.path}: revision {revision} of child {name!r} is not pending"
                " (never begun, already accepted or failed, or the child was removed)"
            )

    def _prune(self, db: sqlite3.Connection, name: str) -> None:
        """Delete settled revisions older than the newest ``keep_revisions``, except the accepted one."""
        db.execute(
            "DELETE FROM revisions WHERE child = :name AND revision < ("
            "  SELECT revision FROM revisions WHERE child = :name ORDER BY revision DESC LIMIT 1 OFFSET :skip)"
            " AND revision != (SELECT accepted_revision FROM children WHERE name = :name)"
            f" AND NOT ({_PENDING})",
            {"name": name, "skip": self.keep_revisions - 1},
        )

    def accepted(self, name: str) -> StoredRevision | None:
        """The revision child ``name`` accepted last, with its bytes; None when it has none."""
        with self._transaction(write=False) as db:
            row = db.execute(
                f"SELECT {_META}, state FROM revisions JOIN children ON child = name AND revision = accepted_revision"
                " WHERE name = ?",
                (name,),
            ).fetchone()
        return None if row is None else _revision(row[:-1], row[-1])

    def revision(self, name: str, revision: int) -> StoredRevision | None:
        """Revision ``revision`` of child ``name``, with its bytes; None when there is none (or it was pruned)."""
        with self._transaction(write=False) as db:
            row = db.execute(
                f"SELECT {_META}, state FROM revisions WHERE child = ? AND revision = ?", (name, revision)
            ).fetchone()
        return None if row is None else _revision(row[:-1], row[-1])

    def history(self, name: str, limit: int = 16) -> list[StoredRevision]:
        """Up to ``limit`` (>= 0) revisions of child ``name``, newest first, without bytes (state=b"")."""
        if limit < 0:
            raise ValueError(f"limit: must be >= 0, got {limit}")
        with self._transaction(write=False) as db:
            rows = db.execute(
                f"SELECT {_META} FROM revisions WHERE child = ? ORDER BY revision DESC LIMIT ?", (name, limit)
            ).fetchall()
        return [_revision(row) for row in rows]

    def accepted_revisions(self) -> dict[str, int]:
        """Every child with an accepted revision → that revision's number."""
        with self._transaction(write=False) as db:
            rows = db.execute(
                "SELECT name, accepted_revision FROM children WHERE accepted_revision > 0 ORDER BY name"
            ).fetchall()
        return dict(rows)

    # Processes supd started.

    def record_process(self, record: ProcessRecord) -> None:
        """Remember a process supd started (committed with synchronous=NORMAL: see the module's docstring)."""
        with self._relaxed(), self._transaction(write=True) as db:
            db.execute(
                "INSERT OR REPLACE INTO processes (pid, start_ticks, child, generation, started_ns)"
                " VALUES (?, ?, ?, ?, ?)",
                (record.pid, record.start_ticks, record.child, record.generation, record.started_ns),
            )

    def forget_processes(self, identities: list[tuple[int, int]]) -> None:
        """Forget processes by (pid, start_ticks): they ended (unknown ones are ignored)."""
        with self._relaxed(), self._transaction(write=True) as db:
            db.executemany("DELETE FROM processes WHERE pid = ? AND start_ticks = ?", identities)

    def processes(self) -> list[ProcessRecord]:
        """Every process recorded and not forgotten, oldest first."""
        with self._transaction(write=False) as db:
            rows = db.execute(
                "SELECT pid, start_ticks, child, generation, started_ns FROM processes ORDER BY started_ns"
            ).fetchall()
        return [ProcessRecord(*row) for row in rows]

    @contextlib.contextmanager
    def _relaxed(self) -> Iterator[None]:
        """synchronous=NORMAL for the transaction inside (WAL: durable across a crash of supd, not a power loss)."""
        with self._lock:
            if self._db is not None:
                self._db.execute("PRAGMA synchronous=NORMAL")
        try:
            yield
        finally:
            with self._lock:
                if self._db is not None:
                    self._db.execute("PRAGMA synchronous=FULL")


class AsyncStateStore:
    """The methods of StateStore, async: each runs in a worker thread, one at a time, never on the event loop.

    A cancelled call still finishes its transaction in its thread; the
    cancellation is raised once it has (so a write that was asked for is
    either wholly done or not begun).
    """

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self._limiter = anyio.CapacityLimiter(1)

    def __repr__(self) -> str:
        return f"<AsyncStateStore {self.store!r}>"

    async def put_spec(self, name: str, spec: bytes) -> None:
        await anyio.to_thread.run_sync(self.store.put_spec, name, spec, limiter=self._limiter)

    async def remove_child(self, name: str) -> None:
        await anyio.to_thread.run_sync(self.store.remove_child, name, limiter=self._limiter)

    async def apply_specs(self, put: list[tuple[str, bytes]], remove: list[str]) -> None:
        await anyio.to_thread.run_sync(self.store.apply_specs, put, remove, limiter=self._limiter)

    async def specs(self) -> list[tuple[str, bytes]]:
        return await anyio.to_thread.run_sync(self.store.specs, limiter=self._limiter)

    async def begin_revision(self, name: str, state: bytes, content_type: str, created_ns: int) -> int:
        return await anyio.to_thread.run_sync(
            self.store.begin_revision, name, state, content_type, created_ns, limiter=self._limiter
        )

    async def accept_revision(self, name: str, revision: int, accepted_ns: int) -> None:
        await anyio.to_thread.run_sync(self.store.accept_revision, name, revision, accepted_ns, limiter=self._limiter)

    async def fail_revision(self, name: str, revision: int, error: str) -> None:
        await anyio.to_thread.run_sync(self.store.fail_revision, name, revision, error, limiter=self._limiter)

    async def accepted(self, name: str) -> StoredRevision | None:
        return await anyio.to_thread.run_sync(self.store.accepted, name, limiter=self._limiter)

    async def revision(self, name: str, revision: int) -> StoredRevision | None:
        return await anyio.to_thread.run_sync(self.store.revision, name, revision, limiter=self._limiter)

    async def history(self, name: str, limit: int = 16) -> list[StoredRevision]:
        return await anyio.to_thread.run_sync(self.store.history, name, limit, limiter=self._limiter)

    async def accepted_revisions(self) -> dict[str, int]:
        return await anyio.to_thread.run_sync(self.store.accepted_revisions, limiter=self._limiter)

    async def record_process(self, record: ProcessRecord) -> None:
        await anyio.to_thread.run_sync(self.store.record_process, record, limiter=self._limiter)

    async def forget_processes(self, identities: list[tuple[int, int]]) -> None:
        await anyio.to_thread.run_sync(self.store.forget_processes, identities, limiter=self._limiter)

    async def processes(self) -> list[ProcessRecord]:
        return await anyio.to_thread.run_sync(self.store.processes, limiter=self._limiter)

    async def aclose(self) -> None:
        """Close the store (in the worker thread, after any call under way)."""
        await anyio.to_thread.run_sync(self.store.close, limiter=self._limiter)
