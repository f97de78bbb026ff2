"""One error taxonomy for supd, each error knowing its gRPC status code.

The servicer turns these into statuses in one place; anything else that
escapes a handler is a bug, answered INTERNAL and logged with its traceback.
"""

from __future__ import annotations

import grpc

__all__ = [
    "Aborted",
    "AlreadyExists",
    "DeadlineExceeded",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "SupervisorError",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
]


class SupervisorError(Exception):
    """Base of every error supd reports to a caller."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(SupervisorError):
    """A request or config field is malformed; the message names the field."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(SupervisorError):
    """No child of that name."""

    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(SupervisorError):
    """A child of that name exists and the request did not ask to replace it."""

    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(SupervisorError):
    """The child's current state does not allow the operation."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(SupervisorError):
    """A limit of supd's is reached; the message names it and the flag that raises it."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(SupervisorError):
    """supd is shutting down and takes no new work."""

    code = grpc.StatusCode.UNAVAILABLE


class Unimplemented(SupervisorError):
    """This supd does not have the capability asked for."""

    code = grpc.StatusCode.UNIMPLEMENTED


class Aborted(SupervisorError):
    """A compare-and-swap lost: what the request expected is no longer current."""

    code = grpc.StatusCode.ABORTED


class DeadlineExceeded(SupervisorError):
    """The operation could not finish within the caller's deadline."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


class Unauthenticated(SupervisorError):
    """A TCP listener got no credentials, or ones it does not know (a missing or wrong token or certificate)."""

    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(SupervisorError):
    """The credentials are known but their role may not call this method (a ``read`` token asking for a change)."""

    code = grpc.StatusCode.PERMISSION_DENIED
