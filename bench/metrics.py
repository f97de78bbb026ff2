#!/usr/bin/env python3
"""What supd's OpenTelemetry metrics cost: supd's CPU with metrics on against off, in one run.

Per round, interleaved (off, on, off, on, ...), each side a fresh supd:

1. **flood**: N children (``bench/flood.c``, 100-byte lines) write L lines each at
   once, nobody reading; supd's CPU time (utime + stime, /proc) from the start
   signal to the last flood's report, and the floods' wall time;
2. **idle**: the same N children declared again as sleepers, then supd's CPU
   time over ``--idle`` seconds (the cost of the collections themselves).

"on" exports metrics every ``--interval-ms`` (default 1000: sixty times the
SDK's default rate, so a short run sees many collections) over OTLP/gRPC to a
real receiver in this process (tests/otlp_receiver.py); the round only counts
if the receiver saw ``supd.child.output.lines`` >= N x L for the flood (flood adds its heartbeat lines).
Log export is off on both sides, so only the metrics differ.

    python bench/metrics.py [--children 10] [--lines 2000000] [--runs 3] [--idle 10] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import tempfile
import time
from typing import Any

BENCH = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent / "tests"))

import drain as d  # noqa: E402 - the sibling benchmark's helpers (build, flood, running supd)

from supervisor.v1 import supervisor_pb2 as pb  # noqa: E402
from supervisor.v1 import supervisor_pb2_grpc as pb_grpc  # noqa: E402

from otlp_receiver import GrpcReceiver  # noqa: E402 - the tests' real OTLP receiver


def lines_seen(receiver: GrpcReceiver, prefix: str) -> int:
    return sum(
        p.as_int
        for attrs, p in receiver.received.points("supd.child.output.lines")
        if str(attrs.get("supd.child.name", "")).startswith(prefix)
    )


def one_side(
    tmp: pathlib.Path, side: str, i: int, args: argparse.Namespace, receiver: GrpcReceiver
) -> dict[str, Any]:
    tag = f"{side}{i}"
    otel = None
    if side == "on":
        otel = {
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": receiver.endpoint,
            "OTEL_METRIC_EXPORT_INTERVAL": str(args.interval_ms),
        }
    home = tmp / tag
    home.mkdir()
    sink = _Env(otel) if otel else None
    with d.running_supd(home, side, sink=sink) as supd, supd.handle.channel() as channel:
        stub = pb_grpc.SupervisorStub(channel)

        def spawn(name: str, argv: list[str]) -> None:
            spec = pb.ChildSpec(name=name, argv=argv, restart=pb.RESTART_POLICY_NEVER)
            stub.Spawn(pb.SpawnRequest(spec=spec), timeout=30)

        go = home / "go"
        reports = [home / f"flood{k}.json" for k in range(args.children)]
        for k, report in enumerate(reports):
            spawn(f"{tag}-{k}", d.flood_cmd(args.lines, report, wait=go))
        cpu0 = d.proc_cpu_s(supd.pid)
        began = time.monotonic()
        go.touch()
        d.wait_for(lambda: all(d.read_json(r) for r in reports), 600, f"{tag} floods")
        wall = time.monotonic() - began
        flood_cpu = d.proc_cpu_s(supd.pid) - cpu0
        for report in reports:
            supd.check_flood(d.read_json(report), args.lines, tag)
        if side == "on":
            total = args.children * args.lines
            d.wait_for(lambda: lines_seen(receiver, tag + "-") >= total, 30, f"{tag}: {total} lines in the metrics")
        for k in range(args.children):
            stub.Remove(pb.RemoveRequest(name=f"{tag}-{k}"), timeout=30)
            spawn(f"{tag}-idle{k}", ["sleep", "600"])
        cpu0 = d.proc_cpu_s(supd.pid)
        time.sleep(args.idle)
        idle_cpu = d.proc_cpu_s(supd.pid) - cpu0
        supd.assert_alive(tag)
    return {"flood_cpu_s": flood_cpu, "flood_wall_s": wall, "idle_cpu_s": idle_cpu}


class _Env:
    """What ``drain.running_supd`` asks of a sink: its environment."""

    def __init__(self, env: dict[str, str]) -> None:
        self._env = env

    def env(self, protocol: str) -> dict[str, str]:
        return self._env


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--children", type=int, default=10)
    ap.add_argument("--lines", type=int, default=2_000_000, help="100-byte lines per child")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--idle", type=float, default=10.0, help="seconds of the idle phase")
    ap.add_argument("--interval-ms", type=int, default=1000)
    ap.add_argument("--json", type=pathlib.Path)
    ap.add_argument("--cc", default="cc")
    args = ap.parse_args(argv)
    d.build(args.cc)
    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    with tempfile.TemporaryDirectory(prefix="supd-metrics-") as tmpdir, GrpcReceiver() as receiver:
        for i in range(args.runs):
            for side in ("off", "on"):
                res = one_side(pathlib.Path(tmpdir), side, i, args, receiver)
                runs[side].append(res)
                print(side, i, {k: round(v, 3) for k, v in res.items()}, flush=True)
    med = {s: {k: statistics.median(r[k] for r in runs[s]) for k in runs[s][0]} for s in runs}
    print()
    print(f"{args.children} children x {args.lines:,} lines x 100 B; metrics every {args.interval_ms} ms when on;"
          f" medians of {args.runs}")
    print(f"{'':<28}{'off':>10}{'on':>10}{'on/off':>9}")
    for key, label in (("flood_cpu_s", "supd CPU s, flood"), ("flood_wall_s", "floods' wall s"),
                       ("idle_cpu_s", f"supd CPU s, {args.idle:g} s idle")):
        off, on = med["off"][key], med["on"][key]
        print(f"{label:<28}{off:>10.3f}{on:>10.3f}{(on / off if off else float('nan')):>9.3f}")
    per = (med["on"]["idle_cpu_s"] - med["off"]["idle_cpu_s"]) / (args.idle * 1000 / args.interval_ms)
    print(f"CPU per collection and export, {args.children} children: {per * 1000:.2f} ms")
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "runs": runs, "median": med},
                                        indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
