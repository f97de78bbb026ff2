"""The public surface is what __all__ says, and supctl never pulls in the daemon."""

from __future__ import annotations

import subprocess
import sys

import supervisor
import supervisor.errors
import supervisor.paths
import supervisor.spec
import supervisor.testing


def test_every_name_in_all_exists():
    for module in (supervisor, supervisor.errors, supervisor.paths, supervisor.spec, supervisor.testing):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"


def test_errors_carry_their_status_codes():
    import grpc

    assert supervisor.NotFound("x").code == grpc.StatusCode.NOT_FOUND
    assert supervisor.InvalidArgument("x").code == grpc.StatusCode.INVALID_ARGUMENT
    assert supervisor.AlreadyExists("x").code == grpc.StatusCode.ALREADY_EXISTS


def test_supctl_does_not_import_the_daemon():
    code = "import sys, supervisor.cli; print(any(m.startswith('supervisor._daemon') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_both_programs_say_their_version():
    for module in ("supervisor._daemon.main", "supervisor.cli"):
        out = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True, text=True, check=True)
        assert out.stdout.strip().endswith(supervisor.__version__)


def test_the_supd_command_holds_its_signals_before_anything_but_the_standard_library_loads():
    """supd's handlers (early_signals) come before grpc: a SIGTERM in that import (0.1-0.3 s) was lost as PID 1."""
    code = (
        "import sys; before = set(sys.modules); import supervisor._daemon.early_signals;"
        " print(' '.join(sorted(set(sys.modules) - before)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    loaded = {name.partition(".")[0] for name in out.split()} - set(sys.stdlib_module_names)
    assert loaded == {"supervisor"}, f"importing early_signals loads {sorted(loaded)}"
