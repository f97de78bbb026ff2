#!/usr/bin/env python3
"""Apply's cost against List's, in one run: what re-applying an unchanged file costs an operator.

One supd with N children (``sleep``) declared by one Apply; then, alternating,
R times each: List (the baseline: every child's snapshot), a dry-run Apply of
the same set, and a real Apply of the same set (every child unchanged: a plan,
no store write, no process touched). Prints the median and p90 of each in ms
and the ratios of the medians to List's.

    python bench/apply.py [--children 200] [--runs 30] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import grpc

from supervisor.testing import supd_command, wait_until
from supervisor.v1 import supervisor_pb2 as pb
from supervisor.v1 import supervisor_pb2_grpc as pb_grpc


def file_text(children: int) -> str:
    table = '[children.c{:04d}]\nargv = ["sleep", "1000"]\nstop_grace_seconds = 1\n\n'
    return "".join(table.format(i) for i in range(children))


def timed(call: object, request: object, runs: list[float]) -> None:
    start = time.perf_counter()
    call(request, timeout=60)  # type: ignore[operator]
    runs.append((time.perf_counter() - start) * 1000)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--children", type=int, default=200)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        socket = pathlib.Path(tmp) / "run" / "supd.sock"
        supd = subprocess.Popen(
            [*supd_command(), "--socket", str(socket), "--state-dir", f"{tmp}/state"],
            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        )
        try:
            wait_until(socket.exists, 15, what="supd's socket")
            channel = grpc.insecure_channel(f"unix://{socket}")
            stub = pb_grpc.SupervisorStub(channel)
            text = file_text(args.children)
            stub.Apply(pb.ApplyRequest(config_toml=text), timeout=120, wait_for_ready=True)
            runs: dict[str, list[float]] = {"List": [], "Apply --dry-run": [], "Apply (unchanged)": []}
            for _ in range(args.runs):
                timed(stub.List, pb.ListRequest(), runs["List"])
                timed(stub.Apply, pb.ApplyRequest(config_toml=text, dry_run=True), runs["Apply --dry-run"])
                timed(stub.Apply, pb.ApplyRequest(config_toml=text), runs["Apply (unchanged)"])
            channel.close()
        finally:
            supd.terminate()
            supd.wait(60)
    base = statistics.median(runs["List"])
    figures = {
        name: {
            "median_ms": round(statistics.median(ms), 2),
            "p90_ms": round(statistics.quantiles(ms, n=10)[-1], 2),
            "ratio_to_list": round(statistics.median(ms) / base, 2),
        }
        for name, ms in runs.items()
    }
    print(f"{args.children} children, {args.runs} runs each")
    for name, f in figures.items():
        print(f"  {name:<18} median {f['median_ms']:7.2f} ms  p90 {f['p90_ms']:7.2f} ms  x{f['ratio_to_list']} of List")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({"children": args.children, "figures": figures}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
