"""Whether a child's argv and environment fit the kernel's limits of ``execve(2)``.

Linux refuses an exec with E2BIG when (fs/exec.c, and ``execve(2)`` "Limits on size of arguments and
environment"):

- one argument or ``KEY=VALUE`` string, with its terminating NUL, is longer than ``MAX_ARG_STRLEN``,
  32 pages (128 KiB with 4 KiB pages);
- the strings of argv and envp with their NULs, plus one pointer each, come to more than the limit the kernel
  derives from the stack rlimit, which ``sysconf(_SC_ARG_MAX)`` reports (a quarter of the stack limit, at least
  32 pages; 2 MiB under the common 8 MiB stack).

A spec over either would pass every other check and then fail each start until it is FATAL, so Spawn refuses it
with INVALID_ARGUMENT naming the field and the limit. supd keeps ``RESERVE_BYTES`` of the total for what it adds
itself: its identity marks in the child's environment (``SUPD_INSTANCE``, ``SUPD_CHILD``) and the program's
path, which the kernel copies onto the new stack too.
"""

from __future__ import annotations

import os
import resource
from collections.abc import Mapping, Sequence

from supervisor._fields import FieldError, bad, shown

__all__ = ["POINTER_BYTES", "RESERVE_BYTES", "arg_max", "check_exec_limits", "exec_bytes", "max_arg_strlen"]

POINTER_BYTES = 8  # one argv or envp pointer on a 64-bit kernel
RESERVE_BYTES = 4096 + 256  # the program's path (PATH_MAX) and supd's identity marks


def max_arg_strlen() -> int:
    """The kernel's ``MAX_ARG_STRLEN``: 32 pages, the longest one string may be, its NUL included."""
    return 32 * resource.getpagesize()


def arg_max() -> int:
    """``sysconf(_SC_ARG_MAX)``: bytes argv and envp may take together, pointers included."""
    return os.sysconf("SC_ARG_MAX")


def exec_bytes(strings: Sequence[bytes]) -> int:
    """What ``strings`` cost against ARG_MAX: each string with its NUL, and one pointer each."""
    return sum(len(s) + 1 + POINTER_BYTES for s in strings)


def check_exec_limits(argv: Sequence[str], env: Mapping[str, str], prefix: str = "") -> None:
    """Raise InvalidArgument (a FieldError naming ``argv[i]``, ``env[KEY]``, ``argv`` or ``env``) over a limit.

    Over the total, the field named is the larger of argv and the environment. ``prefix`` goes before ``argv``
    in the field named (``liveness_probe.exec.`` for an exec probe's argv, run with the child's environment).
    """
    longest = max_arg_strlen()
    args = [os.fsencode(a) for a in argv]
    for i, arg in enumerate(args):
        if len(arg) + 1 > longest:
            bad(f"{prefix}argv[{i}]", f"is {len(arg)} bytes, the kernel takes at most {longest - 1} per argument"
                " (MAX_ARG_STRLEN, 32 pages)", argv[i])
    entries = [os.fsencode(k) + b"=" + os.fsencode(v) for k, v in env.items()]
    for key, entry in zip(env, entries, strict=True):
        if len(entry) + 1 > longest:
            bad(f"env[{shown(key)}]", f"KEY=VALUE is {len(entry)} bytes, the kernel takes at most {longest - 1}"
                " per variable (MAX_ARG_STRLEN, 32 pages)", env[key])
    limit = arg_max() - RESERVE_BYTES
    used_by_argv = exec_bytes(args)
    total = used_by_argv + exec_bytes(entries)
    if total > limit:
        field = f"{prefix}argv" if 2 * used_by_argv >= total else "env"  # the larger part is named
        raise FieldError(
            field,
            f"spec.{field}: {len(args)} arguments and {len(entries)} environment variables come to {total} bytes"
            f" with their pointers (argv {used_by_argv}), over the {limit} the kernel takes: ARG_MAX {arg_max()}"
            f" (os.sysconf('SC_ARG_MAX')) less {RESERVE_BYTES} kept for the program's path and supd's marks",
        )
