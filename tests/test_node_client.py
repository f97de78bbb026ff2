"""clients/node against a real supd: the example spawns, reloads, follows to the exit and reads health.

``npm install`` runs once per test session into clients/node/node_modules with
its cache under /tmp, so repeated runs take well under a second; skipped only
where node or npm is missing.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
from collections.abc import Iterator

import pytest

from supervisor.testing import SupervisorProcess, running_supervisor

NODE_DIR = pathlib.Path(__file__).resolve().parents[1] / "clients" / "node"
NPM_CACHE = "/tmp/supd-npm-cache"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None, reason="node and npm are needed for clients/node"
)


@pytest.fixture(scope="module")
def node_modules() -> None:
    installed = NODE_DIR / "node_modules" / ".package-lock.json"
    lock = NODE_DIR / "package-lock.json"
    if installed.exists() and installed.stat().st_mtime >= lock.stat().st_mtime:
        return  # installed from this lock already
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--prefer-offline", "--cache", NPM_CACHE],
        cwd=NODE_DIR,
        check=True,
        capture_output=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def sup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SupervisorProcess]:
    with running_supervisor(tmp_path_factory.mktemp("node")) as handle:
        yield handle


def node(sup: SupervisorProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SUPD_ADDR": sup.address}
    return subprocess.run(
        ["node", *args], cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_example_spawns_reloads_follows_to_the_exit_and_reads_health(
    node_modules: None, sup: SupervisorProcess
) -> None:
    result = node(sup, "examples/spawn_follow_reload.js")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["lines"] == ["waiting", 'state: {"greeting":"hello"}']
    assert summary["exit_code"] == 0 and summary["state"] == "CHILD_STATE_EXITED"
    assert summary["state_revision"] == 1 and summary["stored_state"] == '{"greeting":"hello"}'
    assert summary["supd_version"]
    with sup.client() as supd:
        assert supd.list() == []  # the example removed its child


def test_errors_carry_the_grpc_status_and_supds_words(node_modules: None, sup: SupervisorProcess) -> None:
    script = (
        "const { SupdClient, status } = require('.');"
        "const c = new SupdClient();"
        "c.stop('nobody').catch((e) => {"
        "  console.log(JSON.stringify([e.code === status.NOT_FOUND, e.details])); c.close();"
        "});"
    )
    result = node(sup, "-e", script)
    assert result.returncode == 0, result.stderr
    found, details = json.loads(result.stdout)
    assert found and "nobody" in details
