"""supd: a gRPC-controlled sidecar process supervisor.

The public surface: ``ChildSpec`` and friends (spec), the error taxonomy
(errors), the default address (paths) and a test harness (testing). The
daemon lives in ``supervisor._daemon``; the CLI in ``supervisor.cli``.
"""

from supervisor.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    SupervisorError,
    Unavailable,
    Unimplemented,
)

__version__ = "0.1.0"

__all__ = [
    "AlreadyExists",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "SupervisorError",
    "Unavailable",
    "Unimplemented",
    "__version__",
]
