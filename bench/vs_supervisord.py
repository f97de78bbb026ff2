#!/usr/bin/env python3
"""supd beside supervisord, same child, same run: drain speed, CPU per 100 MB, a burst's last line, idle RSS.

supervisord comes from PyPI into the bench's own virtual environment (its
import name ``supervisor`` is ours too, so it can never share supd's):

    python3 -m venv bench/.venv-supervisord && bench/.venv-supervisord/bin/pip install supervisor
    python bench/vs_supervisord.py [--lines 2000000] [--runs 3] [--json OUT]

Per run, interleaved: ``flood | cat > /dev/null`` (the baseline), the flood as a
child of supd (nobody reading: the default 8 MiB ring), the flood as a program
of supervisord (its stdout in a log file without rotation, as supervisord
keeps output). For each: the child's wall time into its reader over the
baseline's, its longest write() stall, and the supervisor's CPU seconds per
100 MB (from just before the child is released until every byte is counted:
supd's line count in Health, supervisord's log file size). Then a burst of
10,000 lines and an unterminated last line: whether each kept the last line,
and each supervisor's resident set with one idle child.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shlex
import statistics
import subprocess
import sys
import tempfile
from typing import Any

BENCH = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import drain as d  # noqa: E402 - the sibling benchmark's helpers (build, flood, running supd)

VENV = BENCH / ".venv-supervisord"

CONF = """
[supervisord]
nodaemon=true
logfile={tmp}/supervisord.log
pidfile={tmp}/supervisord.pid
childlogdir={tmp}
[unix_http_server]
file={tmp}/supervisor.sock
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
[supervisorctl]
serverurl=unix://{tmp}/supervisor.sock
[program:child]
command={command}
autostart=true
autorestart=false
startsecs=0
stdout_logfile={tmp}/child.log
stdout_logfile_maxbytes=0
stderr_logfile={tmp}/child.err
stderr_logfile_maxbytes=0
"""


def run_supervisord(tmp: pathlib.Path, command: list[str], done: Any, timeout: float = 300) -> dict[str, Any]:
    """supervisord with one program; ``done(tmp)`` says when the run is complete. Its CPU and RSS."""
    tmp.mkdir(parents=True, exist_ok=True)
    conf = tmp / "supervisord.conf"
    conf.write_text(CONF.format(tmp=tmp, command=shlex.join(command)))
    proc = subprocess.Popen([str(VENV / "bin" / "supervisord"), "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    try:
        d.wait_for((tmp / "child.log").exists, 30, "supervisord's child log")
        cpu0 = d.proc_cpu_s(proc.pid)
        rss = d.proc_rss_mb(proc.pid)
        extra = done(tmp)
        return {"cpu_s": d.proc_cpu_s(proc.pid) - cpu0, "rss_mb": rss, **extra}
    finally:
        d.stop(proc)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=2_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--json", type=pathlib.Path)
    ap.add_argument("--cc", default=os.environ.get("CC", "cc"))
    args = ap.parse_args(argv)
    if not (VENV / "bin" / "supervisord").exists():
        print(f"supervisord is not installed in {VENV}; see this file's docstring", file=sys.stderr)
        return 2
    d.build(args.cc)
    lines, mb = args.lines, args.lines * d.LINE_BYTES / 1e8
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="supd-vs-") as tmpdir:
        tmp = pathlib.Path(tmpdir)
        with d.running_supd(tmp, "off") as supd:
            for i in range(args.runs):
                cat = d.run_baseline(lines, tmp, f"cat{i}", 300)
                run: dict[str, Any] = {"cat": {"wall_s": cat["wall_s"], "stall_ms": cat["max_write_stall_ms"]}}
                r = d.run_drain_only(supd, lines, tmp, f"supd{i}", 300)
                run["supd"] = {"wall_s": r["wall_s"], "stall_ms": r["max_write_stall_ms"],
                               "cpu_per_100mb": r["supd_cpu_s_per_100mb"]}
                report, go = tmp / f"sv{i}.json", tmp / f"sv{i}.go"
                total = lines * d.LINE_BYTES

                def flood_done(t: pathlib.Path, report: pathlib.Path = report, go: pathlib.Path = go,
                               total: int = total) -> dict[str, Any]:
                    go.touch()
                    d.wait_for(lambda: d.read_json(report), 300, "flood under supervisord")
                    d.wait_for(lambda: (t / "child.log").stat().st_size >= total, 300, "supervisord's log")
                    return {}

                sv = run_supervisord(tmp / f"sv{i}", d.flood_cmd(lines, report, wait=go), flood_done)
                flood = d.check_flood(d.read_json(report), lines, "supervisord")
                run["supervisord"] = {"wall_s": flood["wall_s"], "stall_ms": flood["max_write_stall_ms"],
                                      "cpu_per_100mb": sv["cpu_s"] / mb}
                runs.append(run)
                print(f"run {i + 1}: cat {run['cat']['wall_s']:.3f} s | supd {run['supd']['wall_s']:.3f} s"
                      f" | supervisord {run['supervisord']['wall_s']:.3f} s", flush=True)
            supd_rss = d.proc_rss_mb(supd.pid)
        burst = [sys.executable, str(BENCH.parent / "tests" / "zoo.py"), "lines", "10000", "no newline at the end"]

        def burst_done(t: pathlib.Path) -> dict[str, Any]:
            log = t / "child.log"
            d.wait_for(lambda: log.read_bytes().endswith(b"no newline at the end") or
                       log.stat().st_size > 10000 * 12 + 20, 30, "supervisord's burst log")
            return {"kept_last": log.read_bytes().endswith(b"no newline at the end")}

        sv_burst = run_supervisord(tmp / "svburst", burst, burst_done)
        sv_idle = run_supervisord(tmp / "svidle", ["sleep", "1000"], lambda t: {})
    med = {
        who: {k: statistics.median(r[who][k] for r in runs) for k in runs[0][who]} for who in ("cat", "supd",
                                                                                              "supervisord")
    }
    base = med["cat"]["wall_s"]
    print()
    print(f"{lines:,} lines x 100 B, {args.runs} runs, medians; nobody reading")
    print(f"{'':<14}{'wall s':>9}{'vs cat':>8}{'stall ms':>10}{'CPU s/100MB':>13}")
    print(f"{'cat':<14}{base:>9.3f}{1.0:>8.2f}{med['cat']['stall_ms']:>10.1f}")
    for who in ("supd", "supervisord"):
        m = med[who]
        ratio = m["wall_s"] / base
        print(f"{who:<14}{m['wall_s']:>9.3f}{ratio:>8.2f}{m['stall_ms']:>10.1f}{m['cpu_per_100mb']:>13.3f}")
    print(f"supervisord burst of 10,000 lines + unterminated last line: last line kept: {sv_burst['kept_last']}")
    print(f"RSS MB: supd {supd_rss:.1f} (after the runs), supervisord with one idle child {sv_idle['rss_mb']:.1f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"runs": runs, "medians": med, "supervisord_burst": sv_burst,
                                         "supervisord_idle": sv_idle, "supd_rss_mb": supd_rss}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
