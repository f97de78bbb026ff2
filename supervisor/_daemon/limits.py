"""Process limits supd sets for itself at start-up.

Each child costs supd about three file descriptors (two pipes and a pidfd),
so under the common soft RLIMIT_NOFILE of 1024 children 335 and later failed
with "Too many open files". Like supervisord's ``minfds``, supd raises its
soft limit to the hard limit (capped at the kernel's ``fs.nr_open``) and says
what it did. Children inherit the raised soft limit.
"""

from __future__ import annotations

import dataclasses
import resource

import structlog

__all__ = ["NofileLimit", "raise_nofile_limit"]

log = structlog.get_logger("supd.limits")
_NR_OPEN = "/proc/sys/fs/nr_open"


@dataclasses.dataclass(frozen=True, slots=True)
class NofileLimit:
    """RLIMIT_NOFILE before and after: ``soft``/``hard`` in file descriptors, -1 meaning unlimited."""

    soft_before: int
    soft: int
    hard: int


def _kernel_cap() -> int | None:
    """The most descriptors the kernel lets one process have (``fs.nr_open``), if readable."""
    try:
        with open(_NR_OPEN) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def raise_nofile_limit() -> NofileLimit:
    """Raise the soft RLIMIT_NOFILE to the hard limit and log ``supd.limits.nofile``; never raises.

    An unlimited hard limit is read as the kernel's ``fs.nr_open``. If the
    kernel refuses, the limits stay as they were and ``supd.limits.nofile.failed``
    says why.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        target = _kernel_cap() or soft
    if soft == resource.RLIM_INFINITY or soft >= target:
        log.info("supd.limits.nofile", soft=soft, hard=hard, detail="the soft limit is already the hard limit")
        return NofileLimit(soft_before=soft, soft=soft, hard=hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError) as exc:
        log.warning("supd.limits.nofile.failed", soft=soft, hard=hard, wanted=target, error=str(exc))
        return NofileLimit(soft_before=soft, soft=soft, hard=hard)
    log.info("supd.limits.nofile", soft=target, soft_before=soft, hard=hard, detail="raised the soft limit to the hard")
    return NofileLimit(soft_before=soft, soft=target, hard=hard)
