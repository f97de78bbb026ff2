"""Who may call what on a TCP listener: bearer tokens, client certificates, roles, and the interceptor.

A call that arrives on a TCP listener must carry a credential:

- a bearer token, the ``authorization: Bearer <token>`` metadata (RFC 6750, section 2.1), checked
  against the tokens file in constant time (``hmac.compare_digest`` against every token), or
- a client certificate verified by TLS against ``--tls-client-ca`` (mutual TLS), whose common name or a
  subject alternative name maps to a role (``--tls-client-role NAME=ROLE``; with no mapping at all, every
  certificate the CA signed is ``admin``).

A token, when sent, is what counts for the call (a wrong token is refused even beside a good certificate).

Roles: ``read`` may call the methods in ``READ_METHODS`` (List, Stream, Health, GetState, grpc.health.v1,
reflection); ``admin`` may call everything. Every other method needs ``admin`` (default-deny), so a new RPC
is admin-only until it is added to the list. A missing or unknown credential is UNAUTHENTICATED, a known
one without the role PERMISSION_DENIED; both are logged as ``rpc.auth.denied`` with the method, the peer
and the running count of that reason (never the token), and counted in ``statistics()``; an admitted call
is ``rpc.auth.allowed`` at debug level.

Calls over the Unix socket pass untouched: its file permissions are its access control.

Tokens file (``--tokens-file``): one ``ROLE TOKEN`` (or ``TOKEN ROLE``) per line, ``#`` starts a comment,
blank lines are ignored. ROLE is ``read`` or ``admin``; a token is 16 to 4096 printable ASCII characters
without spaces. The file is read again whenever its modification time, size or inode changes (checked on
every call; while its last change is under a second old, read on every call, since a change within the
clock's granularity could keep the stamp), so tokens rotate without a restart; a file that cannot be read
or parsed then keeps the previous tokens, and says so (``rpc.auth.tokens.reload_failed``).
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import hmac
import inspect
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import grpc
import structlog

__all__ = [
    "READ_METHODS",
    "AuthInterceptor",
    "AuthStatistics",
    "Role",
    "TokenError",
    "Tokens",
    "parse_tokens",
]

log = structlog.get_logger("supd.auth")

MIN_TOKEN_CHARS = 16
MAX_TOKEN_CHARS = 4096
# Methods the read role may call: nothing here changes a child, the store or supd.
READ_METHODS = frozenset({
    "/supervisor.v1.Supervisor/List",
    "/supervisor.v1.Supervisor/Stream",
    "/supervisor.v1.Supervisor/Health",
    "/supervisor.v1.Supervisor/GetState",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
})
_MISSING = (-1, -1, -1)
RACY_NS = 1_000_000_000
HEALTH_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})


class Role(enum.Enum):
    READ = "read"
    ADMIN = "admin"

    def allows(self, method: str) -> bool:
        return self is Role.ADMIN or method in READ_METHODS


class TokenError(Exception):
    """The tokens file cannot be used: unreadable, or a line that is not ``ROLE TOKEN``. Names file and line."""


def parse_tokens(text: str, where: str) -> list[tuple[str, Role]]:
    """``(token, role)`` pairs from the tokens file's text; TokenError naming ``where`` and the line (never a token)."""
    pairs = []
    roles = {role.value: role for role in Role}
    for number, raw in enumerate(text.splitlines(), 1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        here = f"{where}:{number}"
        if len(words) != 2 or (words[0] in roles) == (words[1] in roles):
            raise TokenError(f"{here}: must be 'ROLE TOKEN' with ROLE read or admin")
        role, token = (words[0], words[1]) if words[0] in roles else (words[1], words[0])
        if not MIN_TOKEN_CHARS <= len(token) <= MAX_TOKEN_CHARS or not token.isascii() or not token.isprintable():
            raise TokenError(
                f"{here}: a token must be {MIN_TOKEN_CHARS} to {MAX_TOKEN_CHARS} printable ASCII characters"
                f" (e.g. `openssl rand -hex 32`)"
            )
        pairs.append((token, roles[role]))
    return pairs


class Tokens:
    """The tokens file, read again when it changes (mtime, size or inode). ``role_of`` is constant-time per token."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._racy = False
        self._pairs: list[tuple[bytes, Role]] = []
        self.reloads = 0
        self.reload_failures = 0
        self._load(initial=True)
        if not self._pairs:
            raise TokenError(f"{path}: no tokens: add a line 'admin TOKEN' or 'read TOKEN'")

    def _load(self, *, initial: bool = False) -> None:
        error = None
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except OSError as exc:
            stamp, error = _MISSING, f"cannot read {self.path}: {exc.strerror}"
        if stamp == self._stamp and not self._racy:  # unchanged since the last look (read or failed)
            return
        changed = stamp != self._stamp
        self._stamp = stamp
        # A file changed within the clock's granularity of our read may change again under the same stamp (git's
        # "racily clean" entries): look inside again on every call until its modification is a second old.
        self._racy = error is None and st.st_mtime_ns > time.time_ns() - RACY_NS
        if error is None:
            try:
                with open(self.path, encoding="utf-8", errors="replace") as f:
                    pairs = parse_tokens(f.read(MAX_TOKEN_CHARS * 1024), self.path)
            except OSError as exc:
                error = f"cannot read {self.path}: {exc.strerror}"
            except TokenError as exc:
                error = str(exc)
        if error is not None:
            if initial:
                raise TokenError(error)
            if changed:  # once per change of the file, not once per call
                self.reload_failures += 1
                log.error("rpc.auth.tokens.reload_failed", error=error, detail="the previous tokens stay valid")
            return
        # SHA-256 digests, so that every comparison is of 32 bytes and the time does not tell a token's length.
        digests = [(hashlib.sha256(token.encode()).digest(), role) for token, role in pairs]
        if not initial and digests != self._pairs:
            self.reloads += 1
            log.info("rpc.auth.tokens.reloaded", tokens_file=self.path, tokens=len(pairs))
        self._pairs = digests

    def reload(self) -> None:
        """Read the file again if it changed since the last look."""
        self._load()

    def role_of(self, token: str) -> Role | None:
        """The role of ``token``, or None; compares against every token so the time does not tell which matched."""
        self.reload()
        given = hashlib.sha256(token.encode(errors="replace")).digest()
        found = None
        for known, role in self._pairs:
            if hmac.compare_digest(given, known):
                found = role
        return found


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
