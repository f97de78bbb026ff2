"""Roles, and the tokens file that gives them to bearer tokens.

Roles: ``read`` may call the methods in ``READ_METHODS`` (List, Stream, Health, GetState, grpc.health.v1,
reflection); ``admin`` may call everything. Every other method needs ``admin`` (default-deny), so a new RPC
is admin-only until it is added to the list.

Tokens file (``--tokens-file``): one ``ROLE TOKEN`` (or ``TOKEN ROLE``) per line, ``#`` starts a comment,
blank lines are ignored. ROLE is ``read`` or ``admin``; a token is 16 to 4096 printable ASCII characters
without spaces. The file is read again whenever its modification time, size or inode changes (checked on
every call; while its last change is under a second old, read on every call, since a change within the
clock's granularity could keep the stamp), so tokens rotate without a restart; a file that cannot be read
or parsed then keeps the previous tokens, and says so (``rpc.auth.tokens.reload_failed``).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
import time

import structlog

from supervisor._daemon.api.methods import method_path

__all__ = ["HEALTH_METHODS", "READ_METHODS", "Role", "TokenError", "Tokens", "parse_tokens"]

log = structlog.get_logger("supd.auth")

MIN_TOKEN_CHARS = 16
MAX_TOKEN_CHARS = 4096
# Methods the read role may call: nothing here changes a child, the store or supd.
READ_METHODS = frozenset({
    *(method_path(m) for m in ("List", "Stream", "Health", "GetState")),
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
        if changed and st.st_mode & 0o004:
            # Not refused: a Kubernetes Secret volume's default mode is 0644, inside a pod that is supd's own.
            log.warning(
                "rpc.auth.tokens.readable_by_others", tokens_file=self.path, mode=f"{st.st_mode & 0o777:04o}",
                detail="every local user can read these tokens: chmod 600 (or 640 with a group) the file",
            )
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
