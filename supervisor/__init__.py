"""supd: a gRPC-controlled sidecar process supervisor.

The public surface: ``ChildSpec`` and friends (spec), the error taxonomy
(errors), the default address (paths) and a test harness (testing). The
daemon lives in ``supervisor._daemon``; the CLI in ``supervisor.cli``.

The error classes are imported on first use (PEP 562 module ``__getattr__``):
importing this package imports nothing else, so the ``supd`` command holds its
signals before grpc loads (``supervisor._daemon.early_signals``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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


def __getattr__(name: str) -> Any:
    """The error classes of ``__all__``, from supervisor.errors; AttributeError for any other name."""
    if name in __all__:
        from supervisor import errors

        return getattr(errors, name)
    raise AttributeError(f"module 'supervisor' has no attribute {name!r}")
