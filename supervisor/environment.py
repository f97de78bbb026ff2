"""What a child's environment holds: what its spec says, never supd's secrets by accident.

A child gets a minimal base from supd's environment, ``PATH``, ``LANG``,
``HOME`` and ``TZ`` (each only when supd has it), then the variables its spec
names in ``pass_env`` (like systemd's ``PassEnvironment=``), then the spec's
``env`` entries, which win. With ``inherit_env`` the base is supd's whole
environment instead, less every variable ``withheld`` names: supd's own
configuration and credentials pass through only when ``pass_env`` names them.
supd adds its marks (``SUPD_INSTANCE``, ``SUPD_CHILD``) after all of this.

The same environment is used for the child's process, its exec probes and its
exec state deliveries.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

__all__ = ["BASE_NAMES", "WITHHELD_NAMES", "WITHHELD_PREFIXES", "WITHHELD_SUFFIXES", "child_environment", "withheld"]

# Taken from supd's environment, when set, for every child.
BASE_NAMES = ("PATH", "LANG", "HOME", "TZ")
# Never inherited unless named in pass_env; names are compared in upper case.
WITHHELD_PREFIXES = ("OTEL_", "SUPD_", "AWS_", "AZURE_")
WITHHELD_NAMES = frozenset({"GOOGLE_APPLICATION_CREDENTIALS"})
WITHHELD_SUFFIXES = ("_TOKEN", "_SECRET", "_PASSWORD", "_KEY", "_CREDENTIALS")


def withheld(name: str) -> bool:
    """Whether ``inherit_env`` leaves supd's variable ``name`` out: its OpenTelemetry and own settings, credentials.

    True for names (in upper case) starting with OTEL_, SUPD_, AWS_ or AZURE_, for
    GOOGLE_APPLICATION_CREDENTIALS, and for names ending in _TOKEN, _SECRET,
    _PASSWORD, _KEY or _CREDENTIALS.
    """
    upper = name.upper()
    return upper.startswith(WITHHELD_PREFIXES) or upper in WITHHELD_NAMES or upper.endswith(WITHHELD_SUFFIXES)


def child_environment(
    env: Mapping[str, str],
    *,
    inherit: bool = False,
    pass_env: Iterable[str] = (),
    source: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of a child whose spec has ``env``, ``inherit_env=inherit`` and ``pass_env``.

    ``source`` is supd's environment (default ``os.environ``); a name in
    ``pass_env`` that supd does not have is left out, as systemd does.
    """
    supd = os.environ if source is None else source
    if inherit:
        out = {name: value for name, value in supd.items() if not withheld(name)}
    else:
        out = {name: supd[name] for name in BASE_NAMES if name in supd}
    out.update((name, supd[name]) for name in pass_env if name in supd)
    out.update(env)
    return out
