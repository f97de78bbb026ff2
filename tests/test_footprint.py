"""An idle supd (export, metrics, TCP listeners and probes off, no child) loads only what serving needs.

What a feature alone needs is imported where the feature starts, so it costs an idle supd no memory; the
figures are in bench/idle_rss.py. The process under test is a real supd started as the ``supd`` command starts;
a ``sitecustomize`` module on its PYTHONPATH (Python's own start-up hook) writes its ``sys.modules`` when it exits.
"""

from __future__ import annotations

import os
import pathlib

from supervisor.testing import running_supervisor

SITECUSTOMIZE = """\
import atexit, os, sys

def _write_modules():
    loaded = sorted(name for name, module in sys.modules.items() if module is not None)
    with open(os.environ["SUPD_TEST_MODULES_FILE"], "w") as out:
        out.write("\\n".join(loaded))

atexit.register(_write_modules)
"""

# Loaded only by the feature named: nothing an idle supd without it may hold.
FEATURE_ONLY = {
    "rich": "never: supctl top's view (structlog would import it for a console renderer supd does not use)",
    "pygments": "never: rich's syntax highlighting",
    "tenacity": "state deliveries (their retries)",
    "httpx": "HTTP state deliveries and probes",
    "opentelemetry": "OTLP export or metrics",
    "supervisor._daemon.telemetry.otlp.export": "OTLP export of child lines",
    "supervisor._daemon.telemetry.sdk_pipeline": "OTLP export of supd's events and spans",
    "supervisor._daemon.telemetry.metrics": "metrics",
}


def test_an_idle_supd_has_not_imported_what_only_a_feature_needs(tmp_path: pathlib.Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    modules_file = tmp_path / "modules.txt"
    env = {name: "" for name in os.environ if name.startswith("OTEL_")}  # export off, whatever the runner has
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    env["SUPD_TEST_MODULES_FILE"] = str(modules_file)
    with running_supervisor(tmp_path, env=env) as sup, sup.client(timeout=10) as supd:
        assert supd.list() == [] and supd.health().version  # idle, yet answering
    assert sup.proc.returncode == 0, sup.stderr_text()[-2000:]
    loaded = modules_file.read_text().split()
    assert {"supervisor._daemon.main", "grpc", "structlog"} <= set(loaded), "the list is not that of a supd"
    held = {
        name: why for name in loaded for prefix, why in FEATURE_ONLY.items()
        if name == prefix or name.startswith(prefix + ".")
    }
    assert held == {}, held
