"""supd's entry point and nested lifetimes: telemetry > server > children.

The server outlives the children so that open streams receive the children's
last lines and exits; SIGTERM or SIGINT stops every child in parallel within
one deadline, lets streams deliver what is queued, then exits 0. A second
signal means now: every child group is SIGKILLed and supd exits 1.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import structlog

from supervisor import __version__
from supervisor._daemon.api.server import SocketError, SocketLock, build_server
from supervisor._daemon.api.service import SupervisorService
from supervisor._daemon.children.registry import Registry
from supervisor._daemon.memory import tune_malloc
from supervisor._daemon.settings import ConfigError, Settings, parse_args
from supervisor._daemon.telemetry.configure import Telemetry, TelemetrySettings, configure_logging
from supervisor.errors import InvalidArgument

__all__ = ["main"]

log = structlog.get_logger("supd")
# How long open streams get to deliver what is queued once children are down.
STREAM_DRAIN_SECONDS = 5.0
EXIT_CONFIG = 2
EXIT_SOCKET = 3


# How long the OTLP pipelines get to flush when supd exits.
TELEMETRY_FLUSH_SECONDS = 5.0


async def serve(settings: Settings, telemetry: Telemetry) -> int:
    """Run until a signal; the exit code."""
    lock = SocketLock(settings.socket)
    lock.acquire()
    loop = asyncio.get_running_loop()
    signals: asyncio.Queue[int] = asyncio.Queue()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, signals.put_nowait, int(sig))
    exporter = telemetry.line_exporter
    registry = Registry([exporter] if exporter is not None else [])
    service = SupervisorService(registry, telemetry.get_tracer(), exporter)
    try:
        server, health = await build_server(service, settings.socket)
    except Exception:
        lock.release()
        raise
    log.info("supd.started", socket=settings.socket, pid=os.getpid(), version=__version__)
    try:
        for spec in settings.children:
            await registry.spawn(spec)
        first = await signals.get()
        log.info("supd.stopping", signal=signal.Signals(first).name, deadline=settings.shutdown_timeout)
        await health.enter_graceful_shutdown()
        shutdown = asyncio.create_task(registry.shutdown(settings.shutdown_timeout))
        second = asyncio.create_task(signals.get())
        done, _ = await asyncio.wait({shutdown, second}, return_when=asyncio.FIRST_COMPLETED)
        if second in done:
            log.warning("supd.stopping.now", signal=signal.Signals(second.result()).name)
            for child in registry.all():
                if child.process is not None:
                    child.process.signal_group(signal.SIGKILL)
            return 1
        second.cancel()
        shutdown.result()
        # Children are down and their rings closed: streams finish what is queued.
        await server.stop(STREAM_DRAIN_SECONDS)
        log.info("supd.stopped")
        return 0
    finally:
        lock.release()


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
    telemetry = configure_logging(
        telemetry_settings,
        level=settings.log_level,
        exporter_options={
            "summary_interval": settings.export_summary_seconds,
            "max_queue_lines": settings.export_queue_lines,
            # Bytes follow lines at a generous 512 bytes a line, so the line bound is the one that binds.
            "max_queue_bytes": settings.export_queue_lines * 512,
        },
    )
    tune_malloc()
    try:
        return asyncio.run(serve(settings, telemetry))
    except SocketError as exc:
        print(f"supd: {exc}", file=sys.stderr)
        return EXIT_SOCKET
    finally:
        # Telemetry outlives everything else: the children's last lines and supd's last events.
        if not telemetry.shutdown(TELEMETRY_FLUSH_SECONDS):
            log.warning("supd.telemetry.incomplete", detail="some telemetry could not be flushed before exit")


if __name__ == "__main__":
    sys.exit(main())
