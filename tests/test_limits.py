"""supd raises its soft RLIMIT_NOFILE to the hard limit at start-up and says so (issue 16 target 5).

Guards: under the common soft limit of 1024, children 335-500 of a 500-child config failed with "Too many open
files" while the hard limit allowed far more.
"""

from __future__ import annotations

import json
import pathlib
import resource
import subprocess
import sys

import pytest

CODE = """
import io, json, resource, sys, structlog
from structlog.testing import capture_logs
from supervisor._daemon.limits import raise_nofile_limit
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[1]), resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
with capture_logs() as logs:
    result = raise_nofile_limit()
print(json.dumps({"result": [result.soft_before, result.soft, result.hard],
                  "now": list(resource.getrlimit(resource.RLIMIT_NOFILE)), "logs": logs}))
"""


def run_with_soft_limit(soft: int) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", CODE, str(soft)], capture_output=True, text=True, check=True, timeout=60
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


def test_the_soft_limit_is_raised_to_the_hard_limit_and_logged() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nr_open = int(pathlib.Path("/proc/sys/fs/nr_open").read_text())
    expected = hard if hard != resource.RLIM_INFINITY else nr_open
    if expected <= 256:
        pytest.skip(f"the hard limit here is {expected}: nothing to raise")
    got = run_with_soft_limit(256)
    assert got["now"] == [expected, hard]
    assert got["result"] == [256, expected, hard]
    assert got["logs"] == [
        {
            "event": "supd.limits.nofile",
            "log_level": "info",
            "soft": expected,
            "soft_before": 256,
            "hard": hard,
            "detail": "raised the soft limit to the hard",
        }
    ]


def test_a_soft_limit_already_at_the_hard_limit_is_left_and_said() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    got = run_with_soft_limit(hard if hard != resource.RLIM_INFINITY else soft)
    logs = got["logs"]
    assert isinstance(logs, list) and [entry["event"] for entry in logs] == ["supd.limits.nofile"]
    assert got["now"][0] == got["result"][1]  # type: ignore[index]
