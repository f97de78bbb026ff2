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
from tcp_proxy import TcpProxy

from supervisor.testing import SupervisorProcess, running_supervisor, wait_until

from conftest import zoo

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


FOLLOW_THROUGH = """
const { SupdClient } = require('.');
const supd = new SupdClient(process.argv[1], { insecure: true });
(async () => {
  const seqs = [];
  for await (const item of supd.follow('ticker')) {
    if (item.gap) throw new Error('unexpected gap');
    const seq = item.line ? item.line.seq : item.event.seq;
    seqs.push(seq);
    if (item.line) console.log(`line ${seq} ${item.line.text}`);
    if (seqs.length >= 80) break;
  }
  console.log(JSON.stringify(seqs));
  supd.close();
})().catch((e) => { console.error(e); process.exit(1); });
"""


def test_follow_resumes_after_the_connection_is_cut(node_modules: None, sup: SupervisorProcess) -> None:
    with sup.client() as supd, TcpProxy(str(sup.socket)) as proxy:
        supd.spawn(name="ticker", argv=zoo("ticker", "0.01"))
        follower = subprocess.Popen(
            ["node", "-e", FOLLOW_THROUGH, proxy.address], cwd=NODE_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:
            assert follower.stdout is not None
            for _ in range(20):
                assert follower.stdout.readline().startswith(b"line ")
            proxy.cut()
            cut_at = supd.child("ticker").next_seq
            wait_until(lambda: supd.child("ticker").next_seq > cut_at + 30, what="ticks while cut")
            proxy.resume()
            out, err = follower.communicate(timeout=60)
        finally:
            follower.kill()
        supd.remove("ticker")
    assert follower.returncode == 0, err
    seqs = json.loads(out.splitlines()[-1])
    assert seqs == list(range(seqs[0], seqs[0] + 80))  # every record once, in order, across the cut
    assert proxy.accepted >= 2 and seqs[-1] > cut_at
