"""supd's entry point and nested lifetimes: telemetry > server > children, under one shutdown deadline.

The server outlives the children so that open streams receive the children's
last lines and exits. SIGTERM, SIGINT or the Shutdown RPC start the ordered
shutdown, and one deadline (``--shutdown-timeout``) runs from that moment to
supd's exit:

1. every child is stopped in parallel, each with its own grace cut to the time
   left minus a reserve; whatever still runs at that point is SIGKILLed, with
   every process of its session;
2. open streams deliver what is queued, within the reserve;
3. telemetry flushes with whatever time is left (never past the deadline).

A second signal means now: every child's session is SIGKILLed and supd exits 1.

SIGHUP re-applies the ``--config`` file (reapply.py); without one it is logged and ignored.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import anyio
import structlog
from google.protobuf.message import DecodeError

from supervisor import __version__
from supervisor._daemon import early_signals, signal_inbox
from supervisor._daemon.api.health_board import HealthBoard
from supervisor._daemon.api.listeners import ListenError
from supervisor._daemon.api.server import SERVICE_NAME, SocketError, SocketLock, build_server
from supervisor._daemon.api.service import SupervisorService
from supervisor._daemon.children.cgroups import find_root
from supervisor._daemon.children.port_reaper import PortReaper
from supervisor._daemon.children.process import PidfdUnavailable, check_pidfd_support
from supervisor._daemon.children.process_book import ProcessBook
from supervisor._daemon.children.reaper import OrphanReaper, become_subreaper
from supervisor._daemon.children.registry import Registry
from supervisor._daemon.limits import raise_nofile_limit
from supervisor._daemon.memory import tune_malloc
from supervisor._daemon.reapply import ConfigReapply
from supervisor._daemon.settings import ConfigError, Settings, parse_args
from supervisor._daemon.state.keeper import StateKeeper
from supervisor._daemon.state.store import AsyncStateStore, StateStore, StoreError
from supervisor._daemon.telemetry.configure import Telemetry, TelemetrySettings, configure_logging
from supervisor._daemon.telemetry.log_writer import installed as installed_log_writer
from supervisor.errors import InvalidArgument, SupervisorError
from supervisor.spec import ChildSpec, spec_from_proto
from supervisor.v1 import supervisor_pb2 as pb

__all__ = ["main"]

log = structlog.get_logger("supd")
EXIT_CONFIG = 2
EXIT_SOCKET = 3
EXIT_PLATFORM = 4
EXIT_STORE = 5
# What the shutdown deadline keeps back from the children for streams and telemetry, at most.
RESERVE_SECONDS = 1.0
# Telemetry's flush when supd exits for another reason than a shutdown (a socket error).
TELEMETRY_FLUSH_SECONDS = 5.0
# How long the log lines queued before a start-up failure may take to reach stderr ahead of its reason, at most.
FATAL_LOG_DRAIN_SECONDS = 2.0
# The grace given to the children a crashed supd left running, before SIGKILL (cut to the shutdown timeout).
PREVIOUS_CHILDREN_GRACE_SECONDS = 10.0
# Config children started at once at boot: each spawn waits for its child's exec in a worker thread, so the boot
# is bound by latency, not by the loop. Measured, 500 idle children (bench/shutdown.py, 2 cores, 2 x 3 runs each,
# interleaved): 8 at once 3.7-4.0 s, 16 2.7-2.9 s, 32 2.3-2.5 s, 64 2.0-2.3 s. 32 leaves 8 of anyio's 40 default
# worker-thread tokens to what else runs in threads meanwhile (port lookups, exec probes).
BOOT_SPAWNS_AT_ONCE = 32


class Shutdown:
    """The one shutdown deadline: set by the first signal or Shutdown RPC, read by every later step."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.deadline: float | None = None
        self.begun = anyio.Event()
        self.now = anyio.Event()  # a second signal: stop waiting for anyone

    def begin(self) -> float:
        """Start the shutdown (once); the seconds left until supd exits."""
        if self.deadline is None:
            self.deadline = time.monotonic() + self.timeout
            self.begun.set()
        return self.left()

    def left(self) -> float:
        return max(0.0, (self.deadline if self.deadline is not None else time.monotonic()) - time.monotonic())

    @property
    def reserve(self) -> float:
        return min(RESERVE_SECONDS, self.timeout / 4)


async def _watch_signals(shutdown: Shutdown, reapply: ConfigReapply | None) -> None:
    with signal_inbox.receive(*early_signals.HELD) as signals:
        for sig in early_signals.take():  # those that came before the receiver (the supd command holds them)
            _on_signal(shutdown, sig, reapply)
        async for sig in signals:
            _on_signal(shutdown, sig, reapply)


def _on_signal(shutdown: Shutdown, sig: int, reapply: ConfigReapply | None = None) -> None:
    if sig == signal.SIGHUP:
        if reapply is None:
            log.warning("supd.sighup.ignored", detail="supd was started without --config: there is no file to apply")
        else:
            reapply.hangup()
        return
    if shutdown.deadline is None:
        log.info("supd.stopping", signal=signal.Signals(sig).name, deadline=shutdown.timeout)
        shutdown.begin()
    else:
        log.warning("supd.stopping.now", signal=signal.Signals(sig).name)
        shutdown.now.set()


async def serve(settings: Settings, telemetry: Telemetry, shutdown: Shutdown) -> int:
    """Run until a signal or the Shutdown RPC; the exit code. Raises SocketError, StoreError."""
    lock = SocketLock(settings.socket, settings.socket_group)
    lock.acquire()
    become_subreaper()
    try:
        store = await anyio.to_thread.run_sync(StateStore.open, settings.state_dir)
    except BaseException:
        lock.release()
        raise
    if store.interrupted:
        log.warning("state.revisions.interrupted", count=store.interrupted, store=store.path)
    cgroups = None
    try:
        exporter = telemetry.line_exporter
        shared = AsyncStateStore(store)
        book = ProcessBook(shared, store.instance)
        # Before anything starts: the children a crashed supd of this store left running.
        await book.stop_previous(min(PREVIOUS_CHILDREN_GRACE_SECONDS, shutdown.timeout))
        port_reaper = PortReaper(store.instance)
        cgroups = await anyio.to_thread.run_sync(find_root, store.instance)
        async with (
            StateKeeper(shared) as keeper,
            Registry(
                [exporter] if exporter is not None else [], prepare=[port_reaper.prepare], keeper=keeper, book=book,
                cgroups=cgroups, max_children=settings.limits.max_children,
            ) as registry,
            anyio.create_task_group() as tg,
        ):
            port_reaper.owned = registry.owned_pids
            reapply = ConfigReapply(settings.config, settings.children) if settings.config else None
            tg.start_soon(_watch_signals, shutdown, reapply)
            tg.start_soon(OrphanReaper(owned=registry.owned_pids).run)
            service = SupervisorService(registry, telemetry.span_tracer(), exporter, shutdown=shutdown.begin)
            telemetry.observe(registry.snapshot)
            server, health = await build_server(
                service, settings.socket, settings.listen, settings.limits, interceptors=telemetry.rpc_interceptors()
            )
            board = HealthBoard(health, service.child_ready, reserved=frozenset({SERVICE_NAME}))
            registry.watchers.append(board.changed)
            tg.start_soon(board.run)
            log.info(
                "supd.started", socket=settings.socket, pid=os.getpid(), version=__version__, store=store.path,
                listen=settings.listen.summary() if settings.listen else [],
            )
            await _boot(registry, [*settings.children, *await _stored_children(keeper, settings.children)], shutdown)
            if reapply is not None:
                reapply.booted.set()
                tg.start_soon(reapply.run, service.applier)
            await shutdown.begun.wait()
            await health.enter_graceful_shutdown()  # grpc.health.v1 says NOT_SERVING from the first moment
            code = await _stop_everything(registry, shutdown)
            with anyio.CancelScope(shield=True):
                # Children are down and their rings closed: streams finish what is queued, within the deadline.
                await server.stop(max(0.05, shutdown.left() - shutdown.reserve / 2))
                if settings.listen is not None:
                    await settings.listen.stop()
            tg.cancel_scope.cancel()
        log.info("supd.stopped", code=code)
        return code
    finally:
        if cgroups is not None:
            cgroups.remove()
        store.close()
        lock.release()


async def _stored_children(keeper: StateKeeper, config: tuple[ChildSpec, ...]) -> list[ChildSpec]:
    """The children declared by Spawn before supd restarted; a child of the same name in --config wins."""
    declared = {spec.name for spec in config}
    specs = []
    for name, raw in await keeper.store.specs():
        if name in declared:
            log.warning(
                "child.spec.stored_ignored", child=name,
                detail="declared in --config too: the config's spec wins; the stored one stays until Remove",
            )
            continue
        try:
            specs.append(spec_from_proto(pb.ChildSpec.FromString(raw), check_runnable=False))
        except SupervisorError as exc:
            log.error("child.spec.stored_invalid", child=name, error=exc.message)
        except DecodeError as exc:
            log.error("child.spec.stored_invalid", child=name, error=f"cannot decode the stored spec: {exc}")
    if specs:
        log.info("supd.children.restored", children=[s.name for s in specs])
    return specs


async def _boot(registry: Registry, specs: list[ChildSpec], shutdown: Shutdown) -> None:
    """Start the declared children, order by order; none is started once a stop began (a signal held at start-up
    included): what would only be stopped again is left alone."""
    limiter = anyio.CapacityLimiter(BOOT_SPAWNS_AT_ONCE)
    skipped: list[str] = []
    for order in sorted({spec.start_order for spec in specs}):
        async with anyio.create_task_group() as boot:  # one order at a time, its children together
            for spec in specs:
                if spec.start_order == order:
                    boot.start_soon(_boot_child, registry, spec, limiter, shutdown, skipped)
    if skipped:
        log.info("supd.boot.skipped", children=len(skipped), detail="supd was stopping before they started")


async def _boot_child(
    registry: Registry, spec: ChildSpec, limiter: anyio.CapacityLimiter, shutdown: Shutdown, skipped: list[str]
) -> None:
    async with limiter:
        if shutdown.begun.is_set():
            skipped.append(spec.name)
            return
        try:
            await registry.spawn(spec, persist=False)
        except SupervisorError as exc:
            log.error("child.spawn.refused", child=spec.name, error=exc.message)


async def _stop_everything(registry: Registry, shutdown: Shutdown) -> int:
    """Stop every child by the deadline less the reserve; 1 if a second signal cut it short."""
    assert shutdown.deadline is not None
    kill_at = shutdown.deadline - shutdown.reserve
    forced = False
    async with anyio.create_task_group() as tg:

        async def children() -> None:
            alive = await registry.shutdown(kill_at)
            if alive:
                log.error("supd.children.unstopped", children=alive)
            tg.cancel_scope.cancel()

        async def now() -> None:
            nonlocal forced
            await shutdown.now.wait()
            forced = True
            tg.cancel_scope.cancel()

        tg.start_soon(children)
        tg.start_soon(now)
    if forced:
        with anyio.CancelScope(shield=True):
            await registry.kill_all()
        return 1
    return 0


def _fatal(message: str, code: int) -> int:
    """Print why supd cannot start as the last line of its stderr; ``code``.

    supd's log lines are written by a thread of their own (log_writer.py): the
    ones queued before the failure go first, or a person reading the end of the
    output would see an ordinary log line where the reason should be.
    """
    writer = installed_log_writer()
    if writer is not None and not writer.drain(FATAL_LOG_DRAIN_SECONDS):
        log.warning("supd.log.undrained", detail="stderr did not take supd's log lines in time")
    print(f"supd: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    try:
        settings = parse_args(argv)
        telemetry_settings = TelemetrySettings.from_env(os.environ)
    except ConfigError as exc:
        print(f"supd: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except InvalidArgument as exc:
        print(f"supd: {exc.message}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        check_pidfd_support()
    except PidfdUnavailable as exc:
        print(f"supd: {exc}", file=sys.stderr)
        return EXIT_PLATFORM
    telemetry = configure_logging(
        telemetry_settings,
        level=settings.log_level,
        exporter_options={
            "summary_interval": settings.export_summary_seconds,
            "max_queue_lines": settings.export_queue_lines,
            # Bytes follow lines at a generous 512 bytes a line, so the line bound is the one that binds.
            "max_queue_bytes": settings.export_queue_lines * 512,
        },
        metrics_listen=settings.metrics_listen,
    )
    tune_malloc()
    raise_nofile_limit()
    shutdown = Shutdown(settings.shutdown_timeout)
    try:
        if settings.listen is not None:
            settings.listen.check_ports()  # before anything starts: a busy port named with its cause
        telemetry.serve_scrapes()
        return anyio.run(serve, settings, telemetry, shutdown, backend="asyncio")
    except (SocketError, ListenError) as exc:
        return _fatal(str(exc), EXIT_SOCKET)
    except StoreError as exc:
        return _fatal(str(exc), EXIT_STORE)
    finally:
        # Telemetry outlives everything else: the children's last lines and supd's last events.
        flush = shutdown.left() if shutdown.deadline is not None else TELEMETRY_FLUSH_SECONDS
        if not telemetry.shutdown(flush):
            log.warning("supd.telemetry.incomplete", detail="some telemetry could not be flushed before exit")


if __name__ == "__main__":
    sys.exit(main())
