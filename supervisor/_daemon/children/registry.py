"""The set of declared children by name: the only way to change a child.

Spawn, Stop, Signal, Restart, Remove and shutdown all go through here. Each
child's driver runs as a task of the registry's task group, and serialises what
happens to that child through its inbox. Declaring and removing a name is
serialised by that name's lock, never by a global one: removing a child that
takes its whole stop grace must not hold up any other child. Locks exist only
while someone holds or waits for them, so they do not grow with every name
ever asked about. Once shutdown begins, every request is refused UNAVAILABLE.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import anyio
import structlog
from anyio.abc import TaskGroup

from supervisor._daemon.children import lifecycle as lc
from supervisor._daemon.children.driver import ChildDriver, PrepareHook
from supervisor._daemon.children.sessions import SessionScanner, scan_sessions, signal_member
from supervisor._daemon.output.records import ExitRecord
from supervisor._daemon.output.sinks import LineSink
from supervisor._daemon.state.store import StoreError
from supervisor.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    SupervisorError,
    Unavailable,
)
from supervisor.names import check_name
from supervisor.spec import ChildSpec

if TYPE_CHECKING:
    from supervisor._daemon.children.cgroups import CgroupRoot
    from supervisor._daemon.children.process_book import ProcessBook
    from supervisor._daemon.state.keeper import StateKeeper

__all__ = ["MAX_STOP_GRACE_SECONDS", "Registry"]

log = structlog.get_logger("supd.registry")
# The longest grace a Stop, Restart or Remove may ask for (the same bound as a spec's stop_grace_seconds).
MAX_STOP_GRACE_SECONDS = 3600.0


class _NameLocks:
    """A lock per name that exists only while held or awaited."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[anyio.Lock, int]] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @contextlib.asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(name, (None, 0))
        if lock is None:
            lock = anyio.Lock()
        self._locks[name] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            _, users = self._locks[name]
            if users == 1:
                del self._locks[name]
            else:
                self._locks[name] = (lock, users - 1)


def _grace(grace: float | None) -> float | None:
    """A request's grace: None or 0 means the child's own stop grace; InvalidArgument outside the bound."""
    if grace is None or grace == 0:
        return None
    if not math.isfinite(grace):
        raise InvalidArgument(f"grace_seconds: must be a finite number of seconds, got {grace}")
    if grace < 0:
        raise InvalidArgument(f"grace_seconds: must be >= 0 (0 means the child's stop_grace_seconds), got {grace:g}")
    if grace > MAX_STOP_GRACE_SECONDS:
        raise InvalidArgument(
            f"grace_seconds: must be > 0 and at most {MAX_STOP_GRACE_SECONDS:g} s"
            f" (0 means the child's stop_grace_seconds), got {grace:g}"
        )
    return grace


class Registry:
    """Name → ChildDriver. Use as ``async with Registry(...) as registry:``; leaving it ends every driver."""

    def __init__(
        self,
        sinks: Sequence[LineSink] = (),
        *,
        prepare: Sequence[PrepareHook] = (),
        keeper: StateKeeper | None = None,
        book: ProcessBook | None = None,
        cgroups: CgroupRoot | None = None,
        max_children: int = 0,
    ) -> None:
        """``keeper`` stores spawned specs and state, and replays state after every start (None: no stored state).

        ``book`` marks every child process with supd's identity and records it in the store. ``prepare``
        hooks run before every start, in order (port reaping first), then the keeper's. A spawn beyond
        ``max_children`` children (0: no limit) is refused RESOURCE_EXHAUSTED.
        """
        self.max_children = max_children
        self._spawning = 0  # spawns of a new name under way: they count against max_children
        self._children: dict[str, ChildDriver] = {}
        self._sinks = tuple(sinks)
        self._prepare = tuple(prepare) + ((keeper.prepare,) if keeper is not None else ())
        self._on_start = ((keeper.started,) if keeper is not None else ()) + ((self._recorded,) if book else ())
        self._on_exit = (self._reaped,) if book is not None else ()
        self.keeper = keeper
        self.book = book
        self._cgroups = cgroups
        # Called with a child's name whenever it may have changed, removal included (grpc.health.v1 listens).
        self.watchers: list[Callable[[str], None]] = []
        if keeper is not None:
            keeper.watchers = self.watchers
        self._locks = _NameLocks()
        self._scanner = SessionScanner(book.instance if book is not None else "")
        self._task_group: TaskGroup | None = None
        self.closing = False

    def __repr__(self) -> str:
        return f"<Registry children={len(self._children)}{' closing' if self.closing else ''}>"

    async def __aenter__(self) -> Registry:
        self._tg_cm = anyio.create_task_group()
        self._task_group = await self._tg_cm.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> bool | None:
        if self._task_group is not None:
            self._task_group.cancel_scope.cancel()
        return await self._tg_cm.__aexit__(*exc)  # type: ignore[arg-type]

    @property
    def lock_count(self) -> int:
        """Name locks alive now (held or awaited)."""
        return len(self._locks)

    def get(self, name: str) -> ChildDriver:
        """The child named ``name``; NotFound when there is none, InvalidArgument when it is no valid name."""
        check_name(name)
        try:
            return self._children[name]
        except KeyError:
            raise NotFound(f"no child named {name!r}") from None

    def owned_pids(self) -> set[int]:
        """The pids of every child process supd runs now (each watched through its pidfd)."""
        return {pid for pid in (d.live_pid for d in self._children.values()) if pid}

    def all(self) -> list[ChildDriver]:
        return [self._children[n] for n in sorted(self._children)]

    def snapshot(self) -> list[ChildDriver]:
        """The children now, unordered; safe to call from another thread (one atomic copy under the GIL)."""
        return list(self._children.values())

    def _refuse_if_closing(self) -> None:
        if self.closing:
            raise Unavailable("supd is shutting down")

    async def spawn(self, spec: ChildSpec, replace: bool = False, *, persist: bool = True) -> ChildDriver:
        """Declare and start a child; with ``replace`` an existing one of that name is removed first.

        With ``persist`` (a Spawn request) the spec is stored before the child
        starts, so a restarted supd declares it again; config children and
        children re-created from the store are not stored again. Replacing a
        child keeps its stored state.
        """
        self._refuse_if_closing()
        async with self._locks.hold(spec.name):
            old = self._children.get(spec.name)
            if old is not None and not replace:
                raise AlreadyExists(f"a child named {spec.name!r} exists; use --replace (replace=true) to swap it")
            if old is None:
                self._check_room()
            self._spawning += 1  # a slot held from here to the insertion, across every await
            try:
                if old is not None:
                    await self._remove_locked(old, None, forget=False)
                self._refuse_if_closing()
                if self.keeper is not None:
                    await self.keeper.declared(spec, persist=persist)
                assert self._task_group is not None
                driver = ChildDriver(
                    spec, self._sinks, scanner=self._scanner, prepare=self._prepare, on_start=self._on_start,
                    on_change=(self._changed,), on_exit=self._on_exit,
                    identity=self.book.identity(spec.name) if self.book is not None else None,
                    cgroups=self._cgroups,
                )
                # No await between the closing check and the insertion: shutdown sees every driver.
                self._children[spec.name] = driver
            finally:
                self._spawning -= 1
            await self._task_group.start(driver.run)
            await driver.start()
            return driver

    async def respec(self, spec: ChildSpec, announce: str = "") -> ChildDriver:
        """Give a declared child a changed spec: stopped, then started with it (its stored state kept).

        With the same ring and line sizes the child keeps its ring, sequence
        numbers, followers and generation count (``ChildDriver.respec``);
        otherwise it is declared again as ``spawn(replace=True)`` does.
        ``announce``: an event for its stream. Raises NotFound, Unavailable.
        """
        self._refuse_if_closing()
        async with self._locks.hold(spec.name):
            driver = self.get(spec.name)
            if driver.keeps_output_with(spec):
                await driver.respec(spec, announce)
                self._changed(driver)
                return driver
        driver = await self.spawn(spec, replace=True, persist=False)
        if announce:
            driver.note_applied(announce)
        return driver

    def _check_room(self) -> None:
        """ResourceExhausted when the children declared and those being declared reach ``max_children``."""
        if self.max_children and len(self._children) + self._spawning >= self.max_children:
            raise ResourceExhausted(
                f"supd has {len(self._children)} children, its limit: remove one, or start supd with a higher"
                f" --max-children (now {self.max_children})"
            )

    async def stop(self, name: str, grace: float | None = None) -> tuple[ChildDriver, ExitRecord | None]:
        """Stop with escalation: the child, and the exit of the process the stop ended (if any)."""
        g = _grace(grace)
        self._refuse_if_closing()
        driver = self.get(name)
        return driver, await driver.stop(g)

    async def restart(self, name: str, grace: float | None = None) -> tuple[ChildDriver, ExitRecord | None]:
        """Stop what runs (if anything), then start again; the flap history is kept."""
        g = _grace(grace)
        self._refuse_if_closing()
        driver = self.get(name)
        return driver, await driver.restart(g)

    async def signal(self, name: str, sig: int, group: bool) -> None:
        self._refuse_if_closing()
        await self.get(name).send_signal(sig, group)

    async def remove(self, name: str, grace: float | None = None) -> tuple[ChildDriver, ExitRecord | None]:
        """Stop and forget a child: the child, and the exit of the process the removal ended (if any)."""
        g = _grace(grace)
        self._refuse_if_closing()
        async with self._locks.hold(name):
            driver = self.get(name)
            return driver, await self._remove_locked(driver, g)

    async def _remove_locked(
        self, driver: ChildDriver, grace: float | None, *, forget: bool = True
    ) -> ExitRecord | None:
        try:
            ended = await driver.remove(grace)
        finally:
            if driver.state is lc.State.REMOVED and self._children.get(driver.name) is driver:
                del self._children[driver.name]
                for sink in self._sinks:
                    sink.forget(driver.name)
        if forget and self.keeper is not None:
            # After the stop: a supd killed in between declares the child again, as the Remove never answered.
            await self.keeper.forget(driver.name)
        self._changed(driver)
        return ended

    def _recorded(self, driver: ChildDriver, generation: int) -> None:
        """A process started: record it in the store (in the background; its environment marks it meanwhile)."""
        assert self._task_group is not None and self.book is not None
        self._task_group.start_soon(self._book_call, self.book.started(driver.name, generation, driver.running_pid))

    def _reaped(self, driver: ChildDriver, pid: int) -> None:
        assert self._task_group is not None and self.book is not None
        self._task_group.start_soon(self._book_call, self.book.ended(pid))

    async def _book_call(self, call: Awaitable[object]) -> None:
        try:
            await call
        except SupervisorError as exc:
            log.error("supd.process_record.failed", error=exc.message)
        except StoreError as exc:
            log.error("supd.process_record.failed", error=str(exc))

    def _changed(self, driver: ChildDriver) -> None:
        for watcher in self.watchers:
            watcher(driver.name)

    async def shutdown(self, deadline: float) -> list[str]:
        """Stop every child by ``deadline`` (monotonic); the names still alive then.

        Children stop by descending ``start_order``, those of one order in
        parallel; each gets its own grace, cut to the time left. At the
        deadline whatever still runs is SIGKILLed, session members included.
        """
        self.closing = True
        drivers = list(self._children.values())
        orders = sorted({d.spec.start_order for d in drivers}, reverse=True)
        with anyio.move_on_after(max(0.0, deadline - time.monotonic())):
            for order in orders:  # the reverse of the start order; one order's children together
                async with anyio.create_task_group() as tg:
                    for driver in drivers:
                        if driver.spec.start_order == order:
                            tg.start_soon(self._shutdown_one, driver, deadline)
        alive = [d for d in drivers if d.state is not lc.State.REMOVED]
        if alive:
            await self.kill_all(alive)
        return [d.name for d in alive]

    async def _shutdown_one(self, driver: ChildDriver, deadline: float) -> None:
        try:
            await driver.shutdown(max(0.0, deadline - time.monotonic()))
        except (NotFound, FailedPrecondition, Unavailable):
            return  # removed meanwhile, or already shutting down
        except Exception:
            log.exception("child.shutdown.failed", child=driver.name)

    async def kill_all(self, drivers: Sequence[ChildDriver] | None = None) -> None:
        """SIGKILL every child's leader, group and session members now (supd must exit)."""
        sids: list[int] = []
        for driver in self.all() if drivers is None else drivers:
            sids += driver.kill_now()
        if not sids:
            return
        found = await anyio.to_thread.run_sync(scan_sessions, frozenset(sids))
        killed = sum(signal_member(m, signal.SIGKILL) for members in found.values() for m in members)
        log.warning("supd.children.killed", sessions=len(sids), processes=killed)

