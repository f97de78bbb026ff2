"""The socket's directory must be supd's own and private (issue 15 item 17).

Guards: a ``/tmp/supd-UID`` created beforehand by another user was accepted with a warning about its mode, and
that user could then receive every supctl request.
"""

from __future__ import annotations

import os
import pathlib
import subprocess

import pytest

from supervisor.testing import supd_command

NOBODY = 65534


def run_supd(socket: pathlib.Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*supd_command(), "--socket", str(socket)], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a directory to another user needs root")
@pytest.mark.parametrize("mode", [0o700, 0o777])
def test_a_directory_of_another_user_is_refused(tmp_path: pathlib.Path, mode: int) -> None:
    directory = tmp_path / "supd-1000"
    directory.mkdir()
    os.chown(directory, NOBODY, NOBODY)
    directory.chmod(mode)
    result = run_supd(directory / "supd.sock")
    assert result.returncode == 3, result.stderr
    assert result.stderr.splitlines()[-1] + "\n" == (
        f"supd: socket directory {directory} belongs to uid {NOBODY}, not to supd's uid 0: another user could"
        " intercept supctl's requests; remove it (supd creates it with mode 0700) or choose another --socket"
        " in a directory of your own\n"
    )
    assert not (directory / "supd.sock").exists() and not (directory / "supd.sock.lock").exists()


def test_a_directory_others_may_enter_is_refused(tmp_path: pathlib.Path) -> None:
    directory = tmp_path / "shared"
    directory.mkdir()
    directory.chmod(0o755)
    result = run_supd(directory / "supd.sock")
    assert result.returncode == 3, result.stderr
    assert result.stderr.splitlines()[-1] + "\n" == (
        f"supd: socket directory {directory} has mode 0755, supd needs 0700 so that only its own user can reach"
        f" or replace the socket: run chmod 700 {directory}, or choose another --socket in a directory of your own\n"
    )
