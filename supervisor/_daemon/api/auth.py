"""Who may call what on a TCP listener: bearer tokens, client certificates, roles, and the interceptor.

A call that arrives on a TCP listener must carry a credential:

- a bearer token, the ``authorization: Bearer <token>`` metadata (RFC 6750, section 2.1), checked
  against the tokens file in constant time (``hmac.compare_digest`` against every token), or
- a client certificate verified by TLS against ``--tls-client-ca`` (mutual TLS), whose common name or a
  subject alternative name maps to a role (``--tls-client-role NAME=ROLE``; with no mapping at all, every
  certificate the CA signed is ``admin``).

A token, when sent, is what counts for the call (a wrong token is refused even beside a good certificate).

Roles (``tokens.Role``): ``read`` may call the read-only methods, ``admin`` everything (default-deny).
A missing or unknown credential is UNAUTHENTICATED, a known one without the role PERMISSION_DENIED; both
are logged as ``rpc.auth.denied`` with the method, the peer and the running count of that reason (never
the token), and counted in ``statistics()``; an admitted call is ``rpc.auth.allowed`` at debug level.

Calls over the Unix socket pass untouched: its file permissions are its access control.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import grpc
import structlog

from supervisor._daemon.api.tokens import HEALTH_METHODS, Role, Tokens

__all__ = ["AuthInterceptor", "AuthStatistics"]

log = structlog.get_logger("supd.auth")


@dataclasses.dataclass(frozen=True)
class AuthStatistics:
    """Calls on TCP listeners: allowed by role, and denied by reason (``unauthenticated``, ``permission_denied``)."""

    allowed: Mapping[str, int]
    denied: Mapping[str, int]
    tokens_reloaded: int
    tokens_reload_failed: int


class _Denied(Exception):
    def __init__(self, code: grpc.StatusCode, reason: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message


_UNAUTHENTICATED = grpc.StatusCode.UNAUTHENTICATED


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Checks every call that arrives over TCP (see the module docstring); Unix socket calls pass."""

    def __init__(
        self,
        tokens: Tokens | None,
        client_roles: Mapping[str, Role] | None,
        *,
        health_unauthenticated: bool = False,
    ) -> None:
        """``client_roles``: None when no client certificates are verified; empty maps every one to admin."""
        self.tokens = tokens
        self.client_roles = client_roles
        self.health_unauthenticated = health_unauthenticated
        self._allowed: Counter[str] = Counter()
        self._denied: Counter[str] = Counter()

    def statistics(self) -> AuthStatistics:
        return AuthStatistics(
            allowed=dict(self._allowed),
            denied=dict(self._denied),
            tokens_reloaded=self.tokens.reloads if self.tokens else 0,
            tokens_reload_failed=self.tokens.reload_failures if self.tokens else 0,
        )

    def __repr__(self) -> str:
        return f"<AuthInterceptor allowed={sum(self._allowed.values())} denied={sum(self._denied.values())}>"

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method: str = handler_call_details.method
        if self.health_unauthenticated and method in HEALTH_METHODS:
            return handler
        return _guarded(handler, lambda context: self._check(method, context))

    async def _check(self, method: str, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        peer = context.peer()
        if peer.startswith("unix"):
            return
        try:
            role, via = self._role(context)
            if not role.allows(method):
                raise _Denied(
                    grpc.StatusCode.PERMISSION_DENIED,
                    "permission_denied",
                    f"{_short(method)} needs the admin role; this {via} has the read role",
                )
        except _Denied as denied:
            self._denied[denied.reason] += 1
            log.warning(
                "rpc.auth.denied", method=method, peer=peer, reason=denied.reason, detail=denied.message,
                count=self._denied[denied.reason],
            )
            await context.abort(denied.code, denied.message)
        self._allowed[role.value] += 1
        log.debug("rpc.auth.allowed", method=method, peer=peer, role=role.value, credential=via)

    def _role(self, context: grpc.aio.ServicerContext[Any, Any]) -> tuple[Role, str]:
        token = _bearer(context.invocation_metadata() or ())
        if token is not None:
            role = self.tokens.role_of(token) if self.tokens is not None else None
            if role is None:
                raise _Denied(
                    _UNAUTHENTICATED, "unauthenticated",
                    "the bearer token was not accepted (unknown, or rotated away): get a current one for --token-file",
                )
            return role, "token"
        names = _certificate_names(context.auth_context())
        if self.client_roles is not None and names:
            if not self.client_roles:
                return Role.ADMIN, "client certificate"
            for name in names:
                if name in self.client_roles:
                    return self.client_roles[name], "client certificate"
            raise _Denied(
                grpc.StatusCode.PERMISSION_DENIED, "permission_denied",
                f"the client certificate ({names[0]}) has no role: supd maps names with --tls-client-role NAME=ROLE",
            )
        raise _Denied(
            _UNAUTHENTICATED, "unauthenticated",
            "no credentials: send a bearer token (supctl --token-file FILE) or a client certificate (--cert-file)",
        )


def _short(method: str) -> str:
    return method.rpartition("/")[2]


def _bearer(metadata: Iterable[tuple[str, Any]]) -> str | None:
    """The token of ``authorization: Bearer <token>``; a malformed header is UNAUTHENTICATED."""
    for key, value in metadata:
        if key == "authorization":
            text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
            scheme, _, token = text.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise _Denied(_UNAUTHENTICATED, "unauthenticated", "the authorization metadata must be 'Bearer TOKEN'")
            return token.strip()
    return None


def _certificate_names(auth: Mapping[str, Iterable[bytes]]) -> list[str]:
    """The verified client certificate's common name and subject alternative names (none without mutual TLS)."""
    raw = [*auth.get("x509_common_name", ()), *auth.get("x509_subject_alternative_name", ())]
    return [name.decode(errors="replace") for name in raw]


def _guarded(handler: grpc.RpcMethodHandler[Any, Any], check: Callable[[Any], Any]) -> grpc.RpcMethodHandler[Any, Any]:
    """``handler`` with ``await check(context)`` before its behaviour, for each of the four call shapes."""
    if handler.unary_unary is not None:
        inner_uu = handler.unary_unary

        async def unary_unary(request: Any, context: Any) -> Any:
            await check(context)
            return await inner_uu(request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary_unary, request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _streaming(handler.unary_stream, check), request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(
            _streaming(handler.stream_stream, check), request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    inner_su = handler.stream_unary
    assert inner_su is not None

    async def stream_unary(requests: Any, context: Any) -> Any:
        await check(context)
        return await inner_su(requests, context)

    return grpc.stream_unary_rpc_method_handler(
        stream_unary, request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _streaming(inner: Any, check: Callable[[Any], Any]) -> Any:
    """A streaming behaviour of the same kind as ``inner``: an async generator, or a coroutine using context.write."""
    if inspect.isasyncgenfunction(inner):

        async def generator(request: Any, context: Any) -> Any:
            await check(context)
            async for item in inner(request, context):
                yield item

        return generator

    async def coroutine(request: Any, context: Any) -> Any:
        await check(context)
        return await inner(request, context)

    return coroutine
