"""A one-shot answer from a child's driver to the request that asked (an RPC, a shutdown)."""

from __future__ import annotations

from typing import Generic, TypeVar

import anyio

__all__ = ["Reply"]

T = TypeVar("T")


class Reply(Generic[T]):
    """Set once with a value or an error; ``wait`` returns the value or raises the error."""

    def __init__(self) -> None:
        self._done = anyio.Event()
        self._value: T | None = None
        self._error: BaseException | None = None

    def __repr__(self) -> str:
        state = "pending" if not self._done.is_set() else ("failed" if self._error else "done")
        return f"<Reply {state}>"

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def set(self, value: T) -> None:
        if not self._done.is_set():
            self._value = value
            self._done.set()

    def fail(self, error: BaseException) -> None:
        if not self._done.is_set():
            self._error = error
            self._done.set()

    async def wait(self) -> T:
        await self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]  # set() stored a T
