#!/usr/bin/env python3
"""Idle resident set: supd (export off, no child) beside supervisord and a bare gRPC server, same run.

    python3 -m venv bench/.venv-supervisord && bench/.venv-supervisord/bin/pip install supervisor
    .venv/bin/python bench/idle_rss.py [--runs 7] [--baseline REF] [--json OUT]

Per round, interleaved, each process started afresh and measured once it serves plus ``--settle`` seconds:

- ``supd``: this checkout's supd as the ``supd`` command starts (``supervisor.testing.supd_command()``), every
  ``OTEL_*`` variable blanked (export and metrics off), no TCP listener, no child;
- ``supd REF`` (with ``--baseline``): the same from REF checked out in a temporary git worktree, started with
  REF's own ``supd_command()`` (this checkout's built C core is copied in when REF's source of it is the same);
- ``supervisord``: supervisord from PyPI (its own venv) with its control socket and no program;
- ``grpc floor``: a bare ``grpc.aio`` server with ``grpc.health.v1`` on a Unix socket, in supd's interpreter:
  what any supd built on grpcio and asyncio holds before its first line of code.

Printed: each one's median resident set (``VmRSS``) and its anonymous and file-backed parts, with min..max.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

BENCH = pathlib.Path(__file__).resolve().parent
ROOT = BENCH.parent
SUPERVISORD = BENCH / ".venv-supervisord" / "bin" / "supervisord"

SUPERVISORD_CONF = """
[supervisord]
nodaemon=true
logfile={tmp}/supervisord.log
pidfile={tmp}/supervisord.pid
[unix_http_server]
file={tmp}/supervisor.sock
[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface
"""

GRPC_FLOOR = """
import asyncio, sys
import grpc
from grpc_health.v1 import health, health_pb2_grpc

async def main():
    server = grpc.aio.server()
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    server.add_insecure_port("unix://" + sys.argv[1])
    await server.start()
    await server.wait_for_termination()

asyncio.run(main())
"""

NATIVE = "supervisor/_daemon/output"


def memory_mib(pid: int) -> dict[str, float]:
    """VmRSS, RssAnon and RssFile of ``pid`` in MiB."""
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return {k: int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "RssAnon", "RssFile")}


def measure(argv: list[str], ready: Callable[[], bool], settle: float, env: dict[str, str], cwd: str,
            stderr: pathlib.Path) -> dict[str, float]:
    """Start ``argv``, wait until ``ready()``, ``settle`` seconds more, read its memory, SIGTERM it."""
    with stderr.open("wb") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env, cwd=cwd)
    try:
        deadline = time.monotonic() + 60
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{argv[:3]} did not start: {stderr.read_text(errors='replace')[-1500:]}")
            time.sleep(0.02)
        time.sleep(settle)
        return memory_mib(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def supd_side(tree: pathlib.Path) -> Callable[[pathlib.Path, float], dict[str, float]]:
    """A supd from ``tree`` (the checkout or a worktree), started as that tree's ``supd_command()`` says."""
    env = {**os.environ, **{k: "" for k in os.environ if k.startswith("OTEL_")}, "PYTHONPATH": str(tree)}
    code = "import json, supervisor.testing as t; print(json.dumps(t.supd_command()))"
    command = json.loads(subprocess.run([sys.executable, "-c", code], env=env, cwd=tree, capture_output=True,
                                        text=True, check=True).stdout)

    def run(tmp: pathlib.Path, settle: float) -> dict[str, float]:
        (tmp / "run").mkdir(mode=0o700)
        stderr = tmp / "supd.stderr"
        argv = [*command, "--socket", str(tmp / "run" / "supd.sock"), "--state-dir", str(tmp / "state")]
        return measure(argv, lambda: b'"supd.started"' in stderr.read_bytes(), settle, env, str(tmp), stderr)

    return run


def supervisord_side(tmp: pathlib.Path, settle: float) -> dict[str, float]:
    conf = tmp / "supervisord.conf"
    conf.write_text(SUPERVISORD_CONF.format(tmp=tmp))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return measure([str(SUPERVISORD), "-c", str(conf)], (tmp / "supervisor.sock").exists, settle, env, str(tmp),
                   tmp / "supervisord.stderr")


def floor_side(tmp: pathlib.Path, settle: float) -> dict[str, float]:
    sock = tmp / "floor.sock"
    return measure([sys.executable, "-c", GRPC_FLOOR, str(sock)], sock.exists, settle, dict(os.environ), str(tmp),
                   tmp / "floor.stderr")


def add_worktree(ref: str, where: pathlib.Path) -> None:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(where), ref], check=True)
    source = f"{NATIVE}/_native.c"
    diff = subprocess.run(["git", "-C", str(ROOT), "diff", "--quiet", ref, "--", source], check=False)
    same = diff.returncode == 0
    built = sorted((ROOT / NATIVE).glob("_native*.so"))
    if same and built:
        shutil.copy2(built[0], where / NATIVE / built[0].name)
    else:
        print(f"{ref}: its C core differs from this checkout's or none is built: it runs pure Python", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--settle", type=float, default=1.0, help="seconds from serving to the reading (default 1)")
    ap.add_argument("--baseline", metavar="REF", help="also measure the supd of this git ref")
    ap.add_argument("--json", type=pathlib.Path)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="supd-idle-") as tmpdir:
        tmp = pathlib.Path(tmpdir)
        sides: dict[str, Callable[[pathlib.Path, float], dict[str, float]]] = {"supd": supd_side(ROOT)}
        if args.baseline:
            add_worktree(args.baseline, tmp / "baseline")
            sides[f"supd {args.baseline}"] = supd_side(tmp / "baseline")
        if SUPERVISORD.exists():
            sides["supervisord"] = supervisord_side
        else:
            print(f"supervisord is not installed in {SUPERVISORD.parent.parent}; see this file's docstring",
                  file=sys.stderr)
        sides["grpc floor"] = floor_side
        got: dict[str, list[dict[str, float]]] = {name: [] for name in sides}
        try:
            for i in range(args.runs):
                for name, side in sides.items():
                    where = tmp / f"{i}-{name.replace(' ', '_')}"
                    where.mkdir()
                    got[name].append(side(where, args.settle))
                print(f"round {i + 1}: " + ", ".join(f"{n} {got[n][-1]['VmRSS']:.1f}" for n in sides), flush=True)
        finally:
            if args.baseline:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tmp / "baseline")],
                               check=False)
    print(f"\nidle resident set, MiB, median [min..max] of {args.runs} starts, interleaved")
    print(f"{'':<22}{'VmRSS':>22}{'anonymous':>12}{'file':>8}")
    summary: dict[str, Any] = {}
    for name, runs in got.items():
        rss = [r["VmRSS"] for r in runs]
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        summary[name] = {"median": med, "runs": runs}
        print(f"{name:<22}{med['VmRSS']:>8.1f} [{min(rss):.1f}..{max(rss):.1f}]{med['RssAnon']:>12.1f}"
              f"{med['RssFile']:>8.1f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
