"""The asyncio client of supd (grpc.aio): one method per thing a user wants done.

Example (a running supd on the default socket)::

    import asyncio
    from supervisor.client import AsyncClient, Line

    async def main() -> None:
        async with AsyncClient() as supd:
            await supd.spawn(name="hello", argv=["sh", "-c", "echo hi"], restart="never")
            async for item in supd.follow("hello"):
                if isinstance(item, Line):
                    print(item.text)
                elif item.kind == item.KIND_EXITED:
                    break

    asyncio.run(main())

Every failed call raises the taxonomy's error for its status (NotFound,
InvalidArgument, FailedPrecondition, ...; see ``supervisor.errors``), the gRPC
error as its ``__cause__``; ConnectionConfigError when the connection settings
cannot work.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import AsyncIterator, Awaitable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import grpc

from supervisor import errors
from supervisor.client import _requests as rq
from supervisor.client._errors import error_from_rpc, is_connection_lost
from supervisor.client._records import Item, Resume, items_of
from supervisor.client.connection import ChannelOptions, Connection, connection_of
from supervisor.v1 import supervisor_pb2 as pb
from supervisor.v1 import supervisor_pb2_grpc as pb_grpc

__all__ = ["AsyncClient"]

T = TypeVar("T")


class AsyncClient:
    """An asyncio client of one supd. Use it as ``async with AsyncClient(...) as supd`` or call ``close()``.

    ``connection``: a Connection, an address (``unix:///path``, a path,
    ``host:port``), or None for ``SUPD_ADDR`` and the default socket.
    ``timeout``: the deadline of every unary call in seconds, overriding each
    method's default (30 s for quick calls; an hour and a minute for those
    that may wait out a stop grace; 120 s for reload). Create it inside the
    event loop that uses it: a grpc.aio channel belongs to one loop.
    """

    def __init__(
        self, connection: Connection | str | None = None, *, timeout: float | None = None, options: ChannelOptions = ()
    ) -> None:
        self.connection = connection_of(connection)
        self.timeout = timeout
        self.channel = self.connection.aio_channel([*rq.CHANNEL_OPTIONS, *options])
        self.stub = pb_grpc.SupervisorStub(self.channel)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        await self.channel.close()

    def __repr__(self) -> str:
        return f"<AsyncClient {self.connection.address}>"

    async def _unary(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from exc

    def _deadline(self, default: float) -> float:
        return self.timeout if self.timeout is not None else default

    async def spawn(
        self,
        spec: pb.ChildSpec | None = None,
        /,
        *,
        name: str | None = None,
        argv: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        replace: bool = False,
        **fields: Any,
    ) -> pb.ChildInfo:
        """Declare a child and start it; the child after its first start attempt (check ``state``: a
        failed start shows BACKOFF or FATAL and the reason, the child stays declared).

        ``spec`` a ChildSpec, or ``name=``, ``argv=`` and any other ChildSpec
        field as keywords (``restart="never"``, ``stop_grace_seconds=5``, ...);
        keywords override the spec's fields. ``replace``: stop and remove a
        child of that name first. Raises InvalidArgument naming the bad field,
        AlreadyExists without ``replace``.
        """
        request = pb.SpawnRequest(spec=rq.child_spec(spec, name, argv, env, fields), replace=replace)
        reply = await self._unary(self.stub.Spawn(request, timeout=self._deadline(rq.STOPPING_TIMEOUT)))
        return reply.child

    async def list(self) -> list[pb.ChildInfo]:
        """Every declared child, in name order."""
        reply = await self._unary(self.stub.List(pb.ListRequest(), timeout=self._deadline(rq.QUICK_TIMEOUT)))
        return list(reply.children)

    async def health(self, name: str | None = None) -> pb.HealthResponse:
        """Health of one child (NotFound if unknown) or of all, with supd's version and uptime."""
        request = pb.HealthRequest(name=name or "")
        return await self._unary(self.stub.Health(request, timeout=self._deadline(rq.QUICK_TIMEOUT)))

    async def child(self, name: str) -> pb.ChildInfo:
        """One child's snapshot. NotFound if there is no child of that name."""
        return (await self.health(name)).children[0]

    async def stop(self, name: str, grace: float | None = None) -> pb.StopResponse:
        """Stop a child (it stays declared); ``grace``: seconds before SIGKILL, this time only."""
        request = pb.StopRequest(name=name, grace_seconds=grace or 0.0)
        return await self._unary(self.stub.Stop(request, timeout=self._deadline(rq.STOPPING_TIMEOUT)))

    async def restart(self, name: str, grace: float | None = None) -> pb.ChildInfo:
        """Stop a child if it runs, then start it; the child after the start attempt."""
        request = pb.RestartRequest(name=name, grace_seconds=grace or 0.0)
        reply = await self._unary(self.stub.Restart(request, timeout=self._deadline(rq.STOPPING_TIMEOUT)))
        return reply.child

    async def signal(self, name: str, signal: int | str, *, group: bool = False) -> None:
        """Send one signal (``15``, ``"TERM"``, ``"SIGHUP"``) to a child's process, or its process group."""
        request = rq.signal_request(name, signal, group)
        await self._unary(self.stub.Signal(request, timeout=self._deadline(rq.QUICK_TIMEOUT)))

    async def remove(self, name: str, grace: float | None = None) -> pb.RemoveResponse:
        """Stop a child if it runs and forget it."""
        request = pb.RemoveRequest(name=name, grace_seconds=grace or 0.0)
        return await self._unary(self.stub.Remove(request, timeout=self._deadline(rq.STOPPING_TIMEOUT)))

    async def reload(
        self,
        name: str,
        state: bytes | str,
        *,
        content_type: str | None = None,
        expected_revision: int | None = None,
    ) -> pb.ReloadResponse:
        """Deliver a new state to the running child and store it once accepted (text is sent as UTF-8).

        Raises FailedPrecondition (no state_delivery, not running, rejected),
        Aborted (``expected_revision`` is not the accepted one), Unavailable
        (the child could not be reached within its retries).
        """
        request = rq.reload_request(name, state, content_type, expected_revision)
        return await self._unary(self.stub.Reload(request, timeout=self._deadline(rq.RELOAD_TIMEOUT)))

    async def get_state(self, name: str, revision: int = 0) -> pb.GetStateResponse:
        """The accepted state revision (or ``revision``, if still kept) with its bytes, and the history."""
        request = pb.GetStateRequest(name=name, revision=revision)
        return await self._unary(self.stub.GetState(request, timeout=self._deadline(rq.QUICK_TIMEOUT)))

    async def get_spec(self, name: str) -> pb.ChildSpec:
        """The child's spec exactly as declared, environment and header values included (List and Health show
        their names only). Needs the ``admin`` role on a TCP listener. Raises NotFound for an unknown child."""
        request = pb.GetSpecRequest(name=name)
        return (await self._unary(self.stub.GetSpec(request, timeout=self._deadline(rq.QUICK_TIMEOUT)))).spec

    async def apply(
        self,
        config_toml: str | None = None,
        /,
        *,
        children: Sequence[pb.ChildSpec] = (),
        config_name: str = "",
        dry_run: bool = False,
        prune: bool = False,
    ) -> pb.ApplyResponse:
        """Reconcile the children with a declared set: the text of a ``--config`` file, or ``children``.

        Children declared and absent are added, declared with another spec
        changed (restarted with it), undeclared ones removed only with
        ``prune``; unchanged ones are not touched. With ``dry_run`` nothing
        changes. The answer has a step per child (action, changed fields,
        outcome). Needs the ``admin`` role on a TCP listener. Raises
        InvalidArgument with ``--config``'s line-numbered message for a bad
        file (``config_name`` names it there).
        """
        request = rq.apply_request(config_toml, children, config_name, dry_run, prune)
        return await self._unary(self.stub.Apply(request, timeout=self._deadline(rq.STOPPING_TIMEOUT)))

    async def shutdown(self) -> pb.ShutdownResponse:
        """Start supd's ordered shutdown, as SIGTERM does; answers once it has begun."""
        return await self._unary(self.stub.Shutdown(pb.ShutdownRequest(), timeout=self._deadline(rq.QUICK_TIMEOUT)))

    async def stream(
        self,
        name: str,
        *,
        from_seq: int | None = None,
        tail: int | None = None,
        follow: bool = True,
        streams: Iterable[str | int] = (),
        since: datetime.datetime | None = None,
        reconnect: float = rq.RECONNECT_TIMEOUT,
        resume: Resume | None = None,
    ) -> AsyncIterator[pb.StreamMessage]:
        """A child's records as Stream messages (line batches, events, gaps), resumed across reconnects.

        Starts at ``from_seq``, or with the last ``tail`` lines, else at the
        oldest record held; ``follow`` keeps streaming live output. When the
        connection breaks, the stream is asked for again from the next sequence
        number, for up to ``reconnect`` seconds (0: never), so nothing arrives
        twice and nothing is skipped that a Gap does not report. ``streams``:
        ``"stdout"``, ``"stderr"`` (default both). ``since``: drop lines and
        events older than this aware datetime (filtered here: Stream has no time
        filter). Ends after a REMOVED or SHUTDOWN event, or when not following
        and everything held was sent. ``resume``: a Resume made by the caller
        (it then gives the start, not the other arguments), to read
        ``next_seq`` from after a failure. Raises the taxonomy's errors, as
        Unavailable when the connection stays lost past ``reconnect``.
        """
        resume = resume or Resume(rq.stream_request(name, from_seq, tail, follow, streams), since)
        # A supd never reached is reported at once; once a stream came, a break is waited out and resumed.
        established = False
        while True:
            call = self.stub.Stream(resume.request(), wait_for_ready=established)
            try:
                async for msg in call:
                    established = True
                    if resume.seen(msg):
                        yield msg
                return
            except grpc.RpcError as exc:
                if not reconnect or resume.ended or not is_connection_lost(exc, established=established):
                    raise error_from_rpc(exc) from exc
                await self._reconnect(exc, reconnect)
                established = True
            finally:
                call.cancel()

    async def _reconnect(self, lost: grpc.RpcError, budget: float) -> None:
        try:
            await asyncio.wait_for(self.channel.channel_ready(), budget)
        except TimeoutError:
            raise error_from_rpc(lost) from lost

    async def follow(
        self,
        name: str,
        *,
        from_seq: int | None = None,
        tail: int | None = None,
        streams: Iterable[str | int] = (),
        since: datetime.datetime | None = None,
        live: bool = True,
        reconnect: float = rq.RECONNECT_TIMEOUT,
    ) -> AsyncIterator[Item]:
        """A child's lines (Line), events (Event) and gaps (Gap), one at a time; see ``stream``.

        ``live=False`` ends once everything held was sent.
        """
        async for msg in self.stream(
            name, from_seq=from_seq, tail=tail, follow=live, streams=streams, since=since, reconnect=reconnect
        ):
            for item in items_of((msg,)):
                yield item

    async def wait_ready(self, name: str, timeout: float = 60.0) -> pb.ChildInfo:  # noqa: ASYNC109 - the same call as Client.wait_ready; the deadline is the health Watch's own
        """Wait until the child is READY (grpc.health.v1 Watch on its name); the child then.

        Raises NotFound for an unknown child, FailedPrecondition as soon as the
        child is stopped, exited or FATAL (it would not become ready without a
        request), DeadlineExceeded after ``timeout`` seconds naming its state
        and why it is not ready.
        """
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        from supervisor.client._ready import never_ready, not_ready_in_time

        limit = time.monotonic() + timeout
        await self.child(name)  # NotFound now rather than a watch of a name that is not there
        watch = health_pb2_grpc.HealthStub(self.channel).Watch(
            health_pb2.HealthCheckRequest(service=name), timeout=timeout
        )
        try:
            async for reply in watch:
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return await self.child(name)
                if (error := never_ready(await self.child(name))) is not None:
                    raise error
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise error_from_rpc(exc) from exc
        finally:
            watch.cancel()
        if time.monotonic() < limit:
            raise errors.Unavailable(f"supd ended the health watch of {name} before it was ready")
        raise not_ready_in_time(name, timeout, await self.child(name))
