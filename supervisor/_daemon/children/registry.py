"""The set of declared children, by name.

Operations on one name are serialised by that name's lock, never by a global
one: removing a child that takes its whole stop grace to die must not hold up
Spawn or Remove of any other child.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Sequence

import structlog

from supervisor._daemon.children.driver import Child
from supervisor._daemon.children.process import ExitInfo
from supervisor._daemon.output.sinks import LineSink
from supervisor.errors import AlreadyExists, NotFound, Unavailable
from supervisor.spec import ChildSpec

__all__ = ["Registry"]

log = structlog.get_logger("supd.registry")


class Registry:
    """Name → Child. Spawn, Remove and shutdown go through here so names stay unique."""

    def __init__(self, sinks: Sequence[LineSink] = ()) -> None:
        self._children: dict[str, Child] = {}
        self._sinks = tuple(sinks)
        self._name_locks: collections.defaultdict[str, asyncio.Lock] = collections.defaultdict(asyncio.Lock)
        self.closing = False

    def __repr__(self) -> str:
        return f"<Registry children={len(self._children)}{' closing' if self.closing else ''}>"

    def get(self, name: str) -> Child:
        try:
            return self._children[name]
        except KeyError:
            raise NotFound(f"no child named {name!r}") from None

    def all(self) -> list[Child]:
        return [self._children[n] for n in sorted(self._children)]

    async def spawn(self, spec: ChildSpec, replace: bool = False) -> Child:
        """Declare and start a child; with ``replace`` an existing one of that name is removed first."""
        async with self._name_locks[spec.name]:
            if self.closing:
                raise Unavailable("supd is shutting down")
            old = self._children.get(spec.name)
            if old is not None:
                if not replace:
                    raise AlreadyExists(f"a child named {spec.name!r} exists; pass replace to swap it")
                await old.remove()
                self._children.pop(spec.name, None)
                self._forget(spec.name)
            if self.closing:
                raise Unavailable("supd is shutting down")
            child = Child(spec, self._sinks)
            self._children[spec.name] = child
            await child.start()
            return child

    async def remove(self, name: str) -> tuple[Child, ExitInfo | None]:
        """Stop and forget a child: the child, and the exit of the process the removal ended (if any)."""
        async with self._name_locks[name]:
            child = self.get(name)
            ended = await child.remove()
            if self._children.get(name) is child:
                del self._children[name]
            self._forget(name)
            return child, ended

    def _forget(self, name: str) -> None:
        for sink in self._sinks:
            sink.forget(name)

    async def shutdown(self, deadline: float) -> None:
        """Stop every child in parallel within ``deadline`` seconds; end their streams."""
        self.closing = True
        children = list(self._children.values())
        results = await asyncio.gather(*(c.shutdown(deadline) for c in children), return_exceptions=True)
        for child, result in zip(children, results, strict=True):
            if isinstance(result, BaseException):
                log.error("child.shutdown.failed", child=child.name, error=repr(result))
