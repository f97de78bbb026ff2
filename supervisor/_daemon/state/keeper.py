"""Each child's stored state: Reload, the replay after every start, and what Health shows of it.

The deliveries to one child (a Reload, a replay) are serialised by that child's
delivery lock, never by its driver's inbox, so a Reload does not wait behind a
Stop's grace. A revision becomes the accepted one only once the child took it,
and it is durable (fsynced by the store) before Reload answers; a revision the
child refused, or that could not reach it, is kept in the history as failed and
changes nothing.

After every start of a child (first start, crash restart, manual restart, and
so after supd's own restart, which starts every child again) the accepted
revision is replayed to the new process once it can take it (at most
``ready_timeout_seconds``): when it has a startup probe, once that passed;
otherwise for ``http`` once the endpoint accepts a connection; for ``file``,
the file is written before the process starts, so it is applied at once. A
replay that fails is a soft error: the child keeps running, Health shows the error, and
the replay tries again with backoff for as long as that process runs. Each
failed attempt is a STATE_FAILED event, the success a STATE_APPLIED event.

A child with stored state is ready only once the accepted revision is applied
to its running process: a proxy that runs but routes nothing is not ready.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import anyio
import structlog
from anyio.abc import TaskGroup

from supervisor._daemon.children.driver import ChildDriver
from supervisor._daemon.output.records import ChildEvent, EventKind
from supervisor._daemon.state.deliver import (
    Delivered,
    DeliveryFailed,
    DeliveryRejected,
    Target,
    deliver,
    wait_accepting,
    write_state_file,
)
from supervisor._daemon.state.store import AsyncStateStore, StoredRevision
from supervisor._daemon.telemetry import recorder
from supervisor._fields import shown
from supervisor.delivery import FileDelivery, HttpDelivery, StateDelivery
from supervisor.errors import (
    Aborted,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    SupervisorError,
)
from supervisor.spec import ChildSpec, spec_to_proto

__all__ = ["DEFAULT_CONTENT_TYPE", "StateKeeper", "StateStatus"]

log = structlog.get_logger("supd.state")
DEFAULT_CONTENT_TYPE = "application/octet-stream"
MAX_CONTENT_TYPE_LENGTH = 255
# How often a replay waiting for the probes' verdict looks at it.
_READY_POLL_SECONDS = 0.01


def _outcome(exc: BaseException) -> str:
    """A failed delivery's outcome for metrics: "rejected" by the child, else the status it answers, in lower case."""
    if isinstance(exc, DeliveryRejected):
        return "rejected"
    if isinstance(exc, SupervisorError):
        return exc.code.name.lower()
    return "cancelled" if isinstance(exc, anyio.get_cancelled_exc_class()) else "internal"


@dataclasses.dataclass
class StateStatus:
    """What Health shows of one child's stored state."""

    accepted: int = 0  # the revision the child last accepted; 0: none
    applied: int = 0  # the revision applied to generation ``applied_generation``
    applied_generation: int = 0
    applied_driver: int = 0  # id() of the driver of that generation: a replaced child counts generations anew
    applied_ns: int = 0  # wall clock, when it was applied
    error: str = ""  # why the accepted revision is not applied to the running process
    prepared: int = 0  # file delivery: the revision written just before the next start


class StateKeeper:
    """Stored state of every child. Use as ``async with StateKeeper(store) as keeper``; leaving ends the replays."""

    def __init__(self, store: AsyncStateStore) -> None:
        self._store = store
        self._status: dict[str, StateStatus] = {}
        self._locks: dict[str, anyio.Lock] = {}
        self._replays: dict[str, anyio.CancelScope] = {}
        self._task_group: TaskGroup | None = None
        # Called with a child's name when whether its state is applied may have changed.
        self.watchers: list[Callable[[str], None]] = []

    async def __aenter__(self) -> StateKeeper:
        for name, revision in (await self._store.accepted_revisions()).items():
            self._status[name] = StateStatus(accepted=revision)
        self._tg_cm = anyio.create_task_group()
        self._task_group = await self._tg_cm.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> bool | None:
        assert self._task_group is not None
        self._task_group.cancel_scope.cancel()
        return await self._tg_cm.__aexit__(*exc)  # type: ignore[arg-type]

    @property
    def store(self) -> AsyncStateStore:
        return self._store

    def status(self, name: str) -> StateStatus:
        """A copy of the child's state status (all zero when it has no stored state)."""
        return dataclasses.replace(self._status.get(name) or StateStatus())

    def applied(self, driver: ChildDriver) -> bool:
        """Whether the child's running process holds its accepted state (True when it has none to hold)."""
        st = self._status.get(driver.name)
        if driver.spec.state_delivery is None or st is None or not st.accepted:
            return True
        return self._holds(st, driver, driver.running_generation)

    @staticmethod
    def _holds(st: StateStatus, driver: ChildDriver, generation: int) -> bool:
        """Whether ``generation`` of ``driver`` was given the accepted revision."""
        return (
            bool(generation)
            and (st.applied_driver, st.applied_generation) == (id(driver), generation)
            and st.applied == st.accepted
        )

    def _lock(self, name: str) -> anyio.Lock:
        return self._locks.setdefault(name, anyio.Lock())

    # Declaring and forgetting children ----------------------------------------------

    async def declared(self, spec: ChildSpec, *, persist: bool) -> None:
        """A child was declared; with ``persist`` (Spawn) its spec is stored, so a restarted supd re-creates it."""
        if persist:
            await self._store.put_spec(spec.name, spec_to_proto(spec).SerializeToString())

    async def forget(self, name: str) -> None:
        """A child was removed: its stored spec and every state revision go with it."""
        scope = self._replays.pop(name, None)
        if scope is not None:
            scope.cancel()
        async with self._lock(name):
            await self._store.remove_child(name)
            self._status.pop(name, None)
        self._locks.pop(name, None)

    # Hooks of the driver ----------------------------------------------------------------

    async def prepare(self, driver: ChildDriver) -> None:
        """Before a start: a ``file`` delivery writes the accepted state, so the new process reads it at once.

        A write that fails is logged and left to the replay after the start: it
        is a soft error, not a reason to keep the child down.
        """
        spec = driver.spec
        d = spec.state_delivery
        st = self._status.get(spec.name)
        if d is None or not isinstance(d.method, FileDelivery) or st is None or not st.accepted:
            return
        async with self._lock(spec.name):
            stored = await self._store.accepted(spec.name)
            if stored is None:
                return
            try:
                await anyio.to_thread.run_sync(write_state_file, d.method, stored.state)
            except OSError as exc:
                st.error = f"cannot write {d.method.path}: {exc.strerror or exc}"
                log.warning("state.prepare.failed", child=spec.name, revision=stored.revision, error=st.error)
                return
            st.prepared = stored.revision

    def started(self, driver: ChildDriver, generation: int) -> None:
        """After a start: replay the accepted revision to the new process (in the background)."""
        old = self._replays.pop(driver.name, None)
        if old is not None:
            old.cancel()
        st = self._status.get(driver.name)
        if driver.spec.state_delivery is None or st is None or not st.accepted:
            return
        st.applied = st.applied_generation = st.applied_driver = 0  # a new process holds nothing yet
        st.error = ""
        self._changed(driver.name)
        if st.prepared and st.prepared == st.accepted:
            st.prepared = 0
            self._applied(driver, generation, st.accepted, "written before the start")
            return
        st.prepared = 0
        assert self._task_group is not None
        scope = anyio.CancelScope()
        self._replays[driver.name] = scope
        self._task_group.start_soon(self._replay, driver, generation, scope)

    # Replay ---------------------------------------------------------------------------------

    async def _replay(self, driver: ChildDriver, generation: int, scope: anyio.CancelScope) -> None:
        with scope:
            try:
                await self._replay_until_applied(driver, generation)
            except Exception as exc:
                log.exception("state.replay.crashed", child=driver.name, generation=generation)
                st = self._status.get(driver.name)
                if st is not None:
                    st.error = f"internal error while replaying the state: {exc!r}"
                    self._changed(driver.name)
            finally:
                if self._replays.get(driver.name) is scope:
                    del self._replays[driver.name]

    async def _replay_until_applied(self, driver: ChildDriver, generation: int) -> None:
        d = driver.spec.state_delivery
        assert d is not None
        name = driver.name
        if not await self._takes_state(driver, generation, d):
            log.warning(
                "state.endpoint.not_accepting", child=name, generation=generation, waited=d.ready_timeout_seconds,
                detail="delivering anyway",
            )
        round_ = 0
        while driver.running_generation == generation:
            round_ += 1
            async with self._lock(name):
                st = self._status.get(name)
                if st is None or driver.running_generation != generation:
                    return
                if self._holds(st, driver, generation):
                    return
                stored = await self._store.accepted(name)
                if stored is None:
                    return
                began = time.monotonic()
                try:
                    done = await deliver(
                        d, stored.state, self._target(driver, generation, stored),
                        on_attempt=self._on_attempt(driver, stored.revision),
                    )
                except (DeliveryRejected, DeliveryFailed) as exc:
                    recorder.active.state_delivered(name, "replay", _outcome(exc), time.monotonic() - began)
                    st.error = exc.message
                    self._changed(name)
                    log.warning(
                        "state.replay.failed", child=name, generation=generation, revision=stored.revision,
                        error=exc.message, round=round_,
                    )
                else:
                    recorder.active.state_delivered(name, "replay", "applied", time.monotonic() - began)
                    self._applied(driver, generation, stored.revision, done.detail)
                    return
            await anyio.sleep(d.retry.backoff.jittered(round_))

    async def _takes_state(self, driver: ChildDriver, generation: int, d: StateDelivery) -> bool:
        """Wait (at most ``ready_timeout_seconds``) until the new process can take its state; False at the bound.

        A child with a startup probe can once that probe passed; otherwise an http endpoint once it accepts a
        connection; file and exec at once. Never the readiness probe: a child's readiness often depends on
        the very state this replay brings (a proxy is ready once it has its routes).
        """
        deadline = time.monotonic() + d.ready_timeout_seconds
        if driver.spec.startup_probe is not None:
            with anyio.move_on_after(d.ready_timeout_seconds):
                while not driver.started_up and driver.running_generation == generation:  # noqa: ASYNC110
                    await anyio.sleep(_READY_POLL_SECONDS)  # the probe's pass has no event of its own here
                return True
            log.warning("state.startup_probe.not_passed", child=driver.name, waited=d.ready_timeout_seconds)
            return True
        if isinstance(d.method, HttpDelivery):
            return await wait_accepting(d, deadline)
        return True

    # Reload ---------------------------------------------------------------------------------

    async def reload(
        self,
        driver: ChildDriver,
        state: bytes,
        content_type: str,
        expected_revision: int | None,
        deadline: float | None = None,
    ) -> tuple[int, Delivered]:
        """``_reload``, its outcome and duration told to the metrics."""
        began = time.monotonic()
        try:
            done = await self._reload(driver, state, content_type, expected_revision, deadline)
        except BaseException as exc:
            recorder.active.state_delivered(driver.name, "reload", _outcome(exc), time.monotonic() - began)
            raise
        recorder.active.state_delivered(driver.name, "reload", "applied", time.monotonic() - began)
        return done

    async def _reload(
        self,
        driver: ChildDriver,
        state: bytes,
        content_type: str,
        expected_revision: int | None,
        deadline: float | None = None,
    ) -> tuple[int, Delivered]:
        """Deliver ``state`` to the running process; once accepted, store it: (the new revision, the delivery).

        Raises InvalidArgument (too big, a bad content type), FailedPrecondition
        (no state_delivery, no running process, or the child rejected it:
        DeliveryRejected), Aborted (``expected_revision`` is not the accepted
        one), Unavailable (DeliveryFailed: not reachable within the retries or the budget), DeadlineExceeded
        (the caller's deadline came first).
        ``deadline`` is ``time.monotonic()``-based.
        """
        name = driver.name
        d = driver.spec.state_delivery
        if d is None:
            raise FailedPrecondition(
                f"child {name!r} has no state_delivery in its spec; declare one (http, file or exec) to Reload it"
            )
        if len(state) > d.max_state_bytes:
            raise InvalidArgument(
                f"state: {len(state)} bytes is more than child {name!r} takes (max_state_bytes {d.max_state_bytes})"
            )
        content_type = content_type or DEFAULT_CONTENT_TYPE
        if len(content_type) > MAX_CONTENT_TYPE_LENGTH or any(c in content_type for c in "\r\n\0"):
            raise InvalidArgument(
                f"content_type: must be a media type of at most {MAX_CONTENT_TYPE_LENGTH} characters without line"
                f" breaks, got {shown(content_type)}"
            )
        async with self._lock(name):
            st = self._status.setdefault(name, StateStatus())
            if expected_revision is not None and expected_revision != st.accepted:
                raise Aborted(
                    f"expected_revision: child {name!r} has accepted revision {st.accepted}, not {expected_revision};"
                    " read it with GetState (supctl state) and try again"
                )
            generation = driver.running_generation
            if not generation:
                raise FailedPrecondition(
                    f"child {name!r} has no running process (state {driver.state.value}); Reload delivers to a"
                    f" running child: start it with `supctl restart {name}`"
                )
            revision = await self._store.begin_revision(name, state, content_type, time.time_ns())
            stored = StoredRevision(name, revision, state, len(state), content_type, 0, 0, "")
            try:
                done = await deliver(
                    d, state, self._target(driver, generation, stored), deadline=deadline,
                    on_attempt=self._on_attempt(driver, revision),
                )
            except (DeliveryRejected, DeliveryFailed) as exc:
                with anyio.CancelScope(shield=True):
                    await self._store.fail_revision(name, revision, exc.message)
                log.warning("state.reload.failed", child=name, revision=revision, error=exc.message)
                if isinstance(exc, DeliveryFailed) and exc.stopped_by == "deadline":
                    raise DeadlineExceeded(exc.message) from exc
                raise
            except BaseException:
                with anyio.CancelScope(shield=True):
                    await self._store.fail_revision(name, revision, "the Reload ended before the child answered")
                raise
            # The child took it: commit even if the caller went away meanwhile.
            with anyio.CancelScope(shield=True):
                await self._store.accept_revision(name, revision, time.time_ns())
            st.accepted = revision
            self._applied(driver, generation, revision, done.detail)
            log.info("state.reload.accepted", child=name, revision=revision, attempts=done.attempts)
            return revision, done

    # Reading ------------------------------------------------------------------------------

    async def get(self, name: str, revision: int = 0) -> tuple[StoredRevision | None, list[StoredRevision]]:
        """A revision with its bytes (0: the accepted one, None when there is none) and the history kept.

        Raises NotFound when ``revision`` is not kept.
        """
        history = await self._store.history(name)
        if not revision:
            return await self._store.accepted(name), history
        stored = await self._store.revision(name, revision)
        if stored is None:
            kept = ", ".join(str(r.revision) for r in history) or "none"
            raise NotFound(f"child {name!r} has no state revision {revision} (kept: {kept})")
        return stored, history

    # Helpers -------------------------------------------------------------------------------

    def _target(self, driver: ChildDriver, generation: int, stored: StoredRevision) -> Target:
        return Target(
            child=driver.name,
            pid=driver.running_pid,
            revision=stored.revision,
            content_type=stored.content_type,
            send_signal=lambda sig: driver.signal_generation(generation, sig),
            env=driver.spec.child_env(),
        )

    def _on_attempt(self, driver: ChildDriver, revision: int) -> Callable[[int, str], None]:
        def failed(attempt: int, error: str) -> None:
            message = f"attempt {attempt}: {error}"
            driver.output.append_event(self._event(driver, EventKind.STATE_FAILED, message, revision))
            log.info(
                "state.delivery.attempt_failed", child=driver.name, revision=revision, attempt=attempt, error=error
            )

        return failed

    def _applied(self, driver: ChildDriver, generation: int, revision: int, detail: str) -> None:
        st = self._status.setdefault(driver.name, StateStatus())
        st.applied, st.applied_generation, st.applied_driver = revision, generation, id(driver)
        st.applied_ns, st.error = time.time_ns(), ""
        driver.output.append_event(self._event(driver, EventKind.STATE_APPLIED, detail, revision))
        self._changed(driver.name)
        log.info("state.applied", child=driver.name, generation=generation, revision=revision, detail=detail)

    def _changed(self, name: str) -> None:
        for watcher in self.watchers:
            watcher(name)

    @staticmethod
    def _event(driver: ChildDriver, kind: EventKind, message: str, revision: int) -> ChildEvent:
        return ChildEvent(
            kind=kind, time_ns=time.time_ns(), generation=driver.generation, message=message, revision=revision
        )
