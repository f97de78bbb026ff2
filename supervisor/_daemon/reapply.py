"""SIGHUP: supd reads its ``--config`` file again and applies it (children/apply.py), as supervisord's ``update`` does.

The file is read with the code that read it at start, so a bad file gives the
same line-numbered message; it is logged (``apply.failed``) and nothing
changes: supd keeps running with what it had. A good file is applied with
``persist=False`` (the file declares its children again at every start) and
prunes only the children the file declared before and no longer does:
children spawned or applied over the API are never removed by a SIGHUP.
``[supervisor]`` settings (socket, store, listeners) are read at start only.

SIGHUPs that arrive while one is applied coalesce into one more apply; those
that arrive before the children of the first start are up wait for them.
"""

from __future__ import annotations

import anyio
import structlog

from supervisor._daemon.children.apply import Applier
from supervisor._daemon.config_file import ConfigError, load_config
from supervisor.errors import SupervisorError
from supervisor.spec import ChildSpec
from supervisor.v1 import supervisor_pb2 as pb

__all__ = ["ConfigReapply"]

log = structlog.get_logger("supd.apply")


class ConfigReapply:
    """Re-applies one config file on every ``hangup()``; ``run`` does the work once ``booted`` is set."""

    def __init__(self, path: str, children: tuple[ChildSpec, ...]) -> None:
        """``children``: what the file declared at start (the children a later version may prune)."""
        self.path = path
        self._declared = frozenset(spec.name for spec in children)
        self._pending = anyio.Event()
        self.booted = anyio.Event()

    def __repr__(self) -> str:
        return f"<ConfigReapply {self.path}>"

    def hangup(self) -> None:
        """A SIGHUP came: apply the file (again) as soon as the one under way, if any, is done."""
        self._pending.set()

    async def run(self, applier: Applier) -> None:
        """Apply the file at every hangup, for ever (cancelled at shutdown)."""
        await self.booted.wait()
        while True:
            await self._pending.wait()
            self._pending = anyio.Event()
            await self.once(applier)

    async def once(self, applier: Applier) -> pb.ApplyResponse | None:
        """Read and apply the file now; None when it is unusable or the apply is refused (logged)."""
        log.info("supd.config.reread", path=self.path)
        try:
            config = await anyio.to_thread.run_sync(load_config, self.path)
            response = await applier.apply(
                config.children, prune=self._declared, persist=False, source=f"SIGHUP {self.path}"
            )
        except ConfigError as exc:
            log.error("apply.failed", source=f"SIGHUP {self.path}", error=str(exc), detail="nothing changed")
            return None
        except SupervisorError as exc:
            log.error("apply.failed", source=f"SIGHUP {self.path}", error=exc.message)
            return None
        self._declared = frozenset(spec.name for spec in config.children)
        return response
