"""The blocking client of supd: the same methods as ``AsyncClient``, for scripts, tests and supctl.

Example (a running supd on the default socket)::

    from supervisor.client import Client

    with Client() as supd:
        supd.spawn(name="web", argv=["python3", "-m", "http.server", "8080"])
        supd.wait_ready("web", timeout=10)
        for child in supd.list():
            print(child.spec.name, child.pid)

Errors as in ``AsyncClient``. Every method documents itself there; this
class differs only in blocking and in returning plain iterators.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import grpc

from supervisor import errors
from supervisor.client import _requests as rq
from supervisor.client._errors import error_from_rpc, is_connection_lost
from supervisor.client._records import Item, Resume, items_of
from supervisor.client.connection import ChannelOptions, Connection, connection_of
from supervisor.v1 import supervisor_pb2 as pb
from supervisor.v1 import supervisor_pb2_grpc as pb_grpc

__all__ = ["Client"]

T = TypeVar("T")


class Client:
    """A blocking client of one supd. Use it as ``with Client(...) as supd`` or call ``close()``.

    Arguments as for ``AsyncClient``.
    """

    def __init__(
        self, connection: Connection | str | None = None, *, timeout: float | None = None, options: ChannelOptions = ()
    ) -> None:
        self.connection = connection_of(connection)
        self.timeout = timeout
        self.channel = self.connection.channel([*rq.CHANNEL_OPTIONS, *options])
        self.stub = pb_grpc.SupervisorStub(self.channel)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        self.channel.close()

    def __repr__(self) -> str:
        return f"<Client {self.connection.address}>"

    def _unary(self, method: Callable[..., T], request: Any, default: float) -> T:
        try:
            return method(request, timeout=self.timeout if self.timeout is not None else default)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from exc

    def wait_connected(self, timeout: float) -> bool:
        """Whether the channel connected to supd within ``timeout`` seconds (for start-up scripts)."""
        try:
            grpc.channel_ready_future(self.channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            return False
        return True

    def spawn(
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
        """See ``AsyncClient.spawn``."""
        request = pb.SpawnRequest(spec=rq.child_spec(spec, name, argv, env, fields), replace=replace)
        return self._unary(self.stub.Spawn, request, rq.STOPPING_TIMEOUT).child

    def list(self) -> list[pb.ChildInfo]:
        """Every declared child, in name order."""
        return list(self._unary(self.stub.List, pb.ListRequest(), rq.QUICK_TIMEOUT).children)

    def health(self, name: str | None = None) -> pb.HealthResponse:
        """See ``AsyncClient.health``."""
        return self._unary(self.stub.Health, pb.HealthRequest(name=name or ""), rq.QUICK_TIMEOUT)

    def child(self, name: str) -> pb.ChildInfo:
        """One child's snapshot. NotFound if there is no child of that name."""
        return self.health(name).children[0]

    def stop(self, name: str, grace: float | None = None) -> pb.StopResponse:
        """See ``AsyncClient.stop``."""
        return self._unary(self.stub.Stop, pb.StopRequest(name=name, grace_seconds=grace or 0.0), rq.STOPPING_TIMEOUT)

    def restart(self, name: str, grace: float | None = None) -> pb.ChildInfo:
        """See ``AsyncClient.restart``."""
        request = pb.RestartRequest(name=name, grace_seconds=grace or 0.0)
        return self._unary(self.stub.Restart, request, rq.STOPPING_TIMEOUT).child

    def signal(self, name: str, signal: int | str, *, group: bool = False) -> None:
        """See ``AsyncClient.signal``."""
        self._unary(self.stub.Signal, rq.signal_request(name, signal, group), rq.QUICK_TIMEOUT)

    def remove(self, name: str, grace: float | None = None) -> pb.RemoveResponse:
        """See ``AsyncClient.remove``."""
        request = pb.RemoveRequest(name=name, grace_seconds=grace or 0.0)
        return self._unary(self.stub.Remove, request, rq.STOPPING_TIMEOUT)

    def reload(
        self,
        name: str,
        state: bytes | str,
        *,
        content_type: str | None = None,
        expected_revision: int | None = None,
    ) -> pb.ReloadResponse:
        """See ``AsyncClient.reload``."""
        request = rq.reload_request(name, state, content_type, expected_revision)
        return self._unary(self.stub.Reload, request, rq.RELOAD_TIMEOUT)

    def get_state(self, name: str, revision: int = 0) -> pb.GetStateResponse:
        """See ``AsyncClient.get_state``."""
        return self._unary(self.stub.GetState, pb.GetStateRequest(name=name, revision=revision), rq.QUICK_TIMEOUT)

    def get_spec(self, name: str) -> pb.ChildSpec:
        """See ``AsyncClient.get_spec``."""
        return self._unary(self.stub.GetSpec, pb.GetSpecRequest(name=name), rq.QUICK_TIMEOUT).spec

    def apply(
        self,
        config_toml: str | None = None,
        /,
        *,
        children: Sequence[pb.ChildSpec] = (),
        config_name: str = "",
        dry_run: bool = False,
        prune: bool = False,
    ) -> pb.ApplyResponse:
        """See ``AsyncClient.apply``."""
        request = rq.apply_request(config_toml, children, config_name, dry_run, prune)
        return self._unary(self.stub.Apply, request, rq.STOPPING_TIMEOUT)

    def shutdown(self) -> pb.ShutdownResponse:
        """See ``AsyncClient.shutdown``."""
        return self._unary(self.stub.Shutdown, pb.ShutdownRequest(), rq.QUICK_TIMEOUT)

    def stream(
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
    ) -> Iterator[pb.StreamMessage]:
        """See ``AsyncClient.stream``."""
        resume = resume or Resume(rq.stream_request(name, from_seq, tail, follow, streams), since)
        # A supd never reached is reported at once; once a stream came, a break is waited out and resumed.
        established = False
        while True:
            call = self.stub.Stream(resume.request(), wait_for_ready=established)
            try:
                for msg in call:
                    established = True
                    if resume.seen(msg):
                        yield msg
                return
            except grpc.RpcError as exc:
                if not reconnect or resume.ended or not is_connection_lost(exc, established=established):
                    raise error_from_rpc(exc) from exc
                if not self.wait_connected(reconnect):
                    raise error_from_rpc(exc) from exc
                established = True
            finally:
                call.cancel()

    def follow(
        self,
        name: str,
        *,
        from_seq: int | None = None,
        tail: int | None = None,
        streams: Iterable[str | int] = (),
        since: datetime.datetime | None = None,
        live: bool = True,
        reconnect: float = rq.RECONNECT_TIMEOUT,
    ) -> Iterator[Item]:
        """See ``AsyncClient.follow``."""
        messages = self.stream(
            name, from_seq=from_seq, tail=tail, follow=live, streams=streams, since=since, reconnect=reconnect
        )
        return items_of(messages)

    def wait_ready(self, name: str, timeout: float = 60.0) -> pb.ChildInfo:
        """See ``AsyncClient.wait_ready``."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        from supervisor.client._ready import never_ready, not_ready_in_time

        limit = time.monotonic() + timeout
        self.child(name)  # NotFound now rather than a watch of a name that is not there
        watch = health_pb2_grpc.HealthStub(self.channel).Watch(
            health_pb2.HealthCheckRequest(service=name), timeout=timeout
        )
        try:
            for reply in watch:
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return self.child(name)
                if (error := never_ready(self.child(name))) is not None:
                    raise error
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
                raise error_from_rpc(exc) from exc
        finally:
            watch.cancel()
        if time.monotonic() < limit:
            raise errors.Unavailable(f"supd ended the health watch of {name} before it was ready")
        raise not_ready_in_time(name, timeout, self.child(name))
