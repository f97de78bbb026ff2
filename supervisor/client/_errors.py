"""supd's gRPC statuses as the package's error taxonomy (``supervisor.errors``).

Each status supd answers with maps to the SupervisorError subclass that knows
that code (NOT_FOUND to NotFound, ...). A status without a subclass of its
own (INTERNAL, UNKNOWN, DATA_LOSS, ...) is
a plain SupervisorError whose ``code`` is that status. The gRPC error stays
attached as ``__cause__``, for callers that want its details or metadata.
"""

from __future__ import annotations

from typing import cast

import grpc

from supervisor import errors

__all__ = ["error_from_rpc", "is_connection_lost", "rpc_error_of"]

_BY_CODE: dict[grpc.StatusCode, type[errors.SupervisorError]] = {
    cls.code: cls
    for cls in (
        errors.InvalidArgument,
        errors.NotFound,
        errors.AlreadyExists,
        errors.FailedPrecondition,
        errors.Unavailable,
        errors.Unimplemented,
        errors.Aborted,
        errors.DeadlineExceeded,
        errors.ResourceExhausted,
        errors.Unauthenticated,
        errors.PermissionDenied,
    )
}

# What gRPC core says when an established connection breaks or cannot be made.
_TRANSPORT = ("failed to connect", "Socket closed", "Stream removed", "Connection reset", "Broken pipe", "GOAWAY")


def error_from_rpc(exc: grpc.RpcError) -> errors.SupervisorError:
    """The taxonomy's error for a failed call: its class by status code, supd's words as the message."""
    call = cast(grpc.Call, exc)
    code, details = call.code(), call.details() or ""
    cls = _BY_CODE.get(code)
    error = (cls or errors.SupervisorError)(details or code.name)
    if cls is None:
        error.code = code  # an instance attribute: the status this error stands for
    error.__cause__ = exc
    return error


def rpc_error_of(error: BaseException) -> grpc.RpcError | None:
    """The gRPC error a taxonomy error was made from, if any."""
    cause = error.__cause__
    return cause if isinstance(cause, grpc.RpcError) else None


def is_connection_lost(exc: grpc.RpcError, *, established: bool = True) -> bool:
    """Whether the call failed in transport (the connection broke), not by supd's answer.

    With ``established=False`` (nothing came over this channel yet) a failure to connect does not count:
    a supd that was never reached is reported at once rather than waited for.
    """
    call = cast(grpc.Call, exc)
    details = call.details() or ""
    if call.code() != grpc.StatusCode.UNAVAILABLE:
        return False
    if not established and "failed to connect" in details:
        return False
    return any(s in details for s in _TRANSPORT)
