#!/usr/bin/env python3
"""The control plane under a flood: Health latency while children write flat out and readers follow.

One run measures, side by side and against a baseline of the same run:

1. **baseline**: N floods (``bench/flood.c``, 100-byte lines, 40 per write) each
   piped into its own ``cat > /dev/null``, all at once: their longest write()
   stall and the bytes per second moved in all;
2. **idle**: Health RPC and ``grpc.health.v1`` Check latency against an idle supd;
3. **flood**: the same N floods as children of supd, nobody reading: latency of
   Health and Check sampled every 10 ms from another process for as long as the
   floods run, the floods' longest write() stall and bytes/s in all;
4. **flood + followers**: the same with F Stream followers attached before the
   floods write (one third SIGSTOPped, one third cancelling and reconnecting
   every 0.2 s, one third reading as fast as they can).

Targets (issue 16): p99 ≤ 20 ms with nobody reading, ≤ 100 ms with followers;
longest stall ≤ 20 ms (or at most twice the baseline's); bytes/s in all at least 0.7 of the baseline's.

    python bench/control_plane.py [--children 10] [--followers 20] [--lines 1000000] [--json OUT]

``--repo PATH`` runs the supd of another checkout (for a before/after comparison).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

BENCH = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import drain as d  # noqa: E402 - the sibling benchmark's helpers (build, flood, running supd)

INTERVAL = 0.01

FOLLOWER = r"""
import sys, time, grpc
from supervisor.v1 import supervisor_pb2 as pb, supervisor_pb2_grpc as pb_grpc
addr, names, mode = sys.argv[1], sys.argv[2].split(","), sys.argv[3]
ch = grpc.insecure_channel(addr, options=[("grpc.max_receive_message_length", 64 << 20)])
stub = pb_grpc.SupervisorStub(ch)
print("ready", flush=True)
while True:
    for name in names:
        call = stub.Stream(pb.StreamRequest(name=name, tail=0, follow=True))
        deadline = time.monotonic() + 0.2
        try:
            for _ in call:
                if mode == "reconnect" and time.monotonic() > deadline:
                    call.cancel()
                    break
        except grpc.RpcError:
            pass
        if mode != "reconnect":
            sys.exit(0)
"""


def percentile(xs: list[float], p: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(p / 100 * (len(xs) - 1)))]


SAMPLER = r"""
import json, select, sys, time, grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from supervisor.v1 import supervisor_pb2 as pb, supervisor_pb2_grpc as pb_grpc
addr, interval = sys.argv[1], float(sys.argv[2])
channel = grpc.insecure_channel(addr)
stub, check = pb_grpc.SupervisorStub(channel), health_pb2_grpc.HealthStub(channel)
hreq, creq = pb.HealthRequest(), health_pb2.HealthCheckRequest()
health, checks, errors = [], [], 0
stub.Health(hreq, timeout=10)  # connected before the first sample
print("ready", flush=True)
while True:
    for call, out in ((lambda: stub.Health(hreq, timeout=10), health), (lambda: check.Check(creq, timeout=10), checks)):
        t0 = time.perf_counter()
        try:
            call()
        except grpc.RpcError:
            errors += 1
        out.append((time.perf_counter() - t0) * 1000)
    if select.select([sys.stdin], [], [], interval)[0]:  # paced like a probe; stdin closed: stop
        break
json.dump({"health": health, "check": checks, "errors": errors}, sys.stdout)
"""


class Sampler:
    """Health then grpc.health.v1 Check every INTERVAL s, from a process of its own, until stopped.

    A process that does nothing else: a thread of the bench would share the bench's GIL with its polling, and
    measure that too.
    """

    def __init__(self, address: str) -> None:
        self._address = address
        self.health: list[float] = []
        self.check: list[float] = []
        self.errors = 0
        self._proc: subprocess.Popen[str] | None = None

    def __enter__(self) -> Sampler:
        self._proc = subprocess.Popen(
            [sys.executable, "-c", SAMPLER, self._address, str(INTERVAL)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=d.child_env(),
        )
        assert self._proc.stdout is not None
        if self._proc.stdout.readline().strip() != "ready":
            raise d.BenchError("the Health sampler did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._proc is not None
        out, _ = self._proc.communicate(timeout=60)  # closes stdin: the sampler stops and reports
        result = json.loads(out)
        self.health, self.check, self.errors = result["health"], result["check"], result["errors"]

    def summary(self) -> dict[str, Any]:
        return {
            "health_n": len(self.health),
            "health_p50_ms": percentile(self.health, 50),
            "health_p99_ms": percentile(self.health, 99),
            "health_max_ms": max(self.health, default=float("nan")),
            "check_p50_ms": percentile(self.check, 50),
            "check_p99_ms": percentile(self.check, 99),
            "check_max_ms": max(self.check, default=float("nan")),
            "errors": self.errors,
        }


def flood_summary(reports: list[dict[str, Any]]) -> dict[str, Any]:
    start = min(r["start_mono_s"] for r in reports)
    end = max(r["end_mono_s"] for r in reports)
    total = sum(r["bytes"] for r in reports)
    return {
        "max_write_stall_ms": max(r["max_write_stall_ms"] for r in reports),
        "mb_per_s_all": total / (end - start) / 1e6,
        "wall_s": end - start,
        # What writing cost the floods themselves (getrusage at their end): their pipes' pages, their waits.
        "floods_cpu_s_per_100mb": sum(r["user_s"] + r["sys_s"] for r in reports) / total * 1e8,
    }


def run_baseline(n: int, lines: int, tmp: pathlib.Path) -> dict[str, Any]:
    cat = shutil.which("cat") or "/bin/cat"
    procs = []
    reports = [tmp / f"base{i}.json" for i in range(n)]
    for path in reports:
        flood = subprocess.Popen(d.flood_cmd(lines, path), stdout=subprocess.PIPE)
        assert flood.stdout is not None
        consumer = subprocess.Popen([cat], stdin=flood.stdout, stdout=subprocess.DEVNULL)
        flood.stdout.close()
        procs += [flood, consumer]
    for p in procs:
        p.wait(600)
    return flood_summary([d.check_flood(d.read_json(p), lines, "baseline") for p in reports])


def run_supd_flood(supd: d.Supd, n: int, lines: int, tmp: pathlib.Path, tag: str, followers: int) -> dict[str, Any]:
    go = tmp / f"{tag}.go"
    reports = [tmp / f"{tag}{i}.json" for i in range(n)]
    names = [f"{tag}-{i}" for i in range(n)]
    for name, path in zip(names, reports, strict=True):
        supd.spawn(name, d.flood_cmd(lines, path, wait=go))
    fprocs: list[subprocess.Popen[bytes]] = []
    modes = ["stopped", "reconnect", "fast"]
    for i in range(followers):
        mode = modes[i % 3]
        p = subprocess.Popen(
            [sys.executable, "-c", FOLLOWER, supd.address, names[i % n], mode],
            stdout=subprocess.PIPE, env=d.child_env(),
        )
        assert p.stdout is not None
        p.stdout.readline()
        fprocs.append(p)
    time.sleep(0.5)  # let the streams attach (the measure is of the steady state, not of their start)
    for i, p in enumerate(fprocs):
        if modes[i % 3] == "stopped":
            p.send_signal(signal.SIGSTOP)
    cpu0 = d.proc_cpu_s(supd.pid)
    with Sampler(supd.address) as sampler:
        go.touch()
        d.wait_for(lambda: all(p.exists() and d.read_json(p) for p in reports), 600, f"{tag} floods")
    cpu = d.proc_cpu_s(supd.pid) - cpu0
    rss_full = d.proc_rss_mb(supd.pid)  # every ring full (each child wrote more than its ring holds)
    for p in fprocs:
        p.send_signal(signal.SIGCONT)
        p.kill()
        p.wait()
    for name in names:
        supd.supctl("rm", name)
    rss_removed = settled_rss(supd.pid)
    out = flood_summary([d.check_flood(d.read_json(p), lines, tag) for p in reports])
    out.update(sampler.summary())
    out["supd_cpu_s"] = cpu
    out["supd_rss_mb_rings_full"] = rss_full
    out["supd_rss_mb_removed"] = rss_removed
    return out


def settled_rss(pid: int, seconds: float = 1.0) -> float:
    """supd's lowest RSS over ``seconds`` (the removed children's memory handed back meanwhile)."""
    deadline = time.monotonic() + seconds
    low = d.proc_rss_mb(pid) or 0.0
    while time.monotonic() < deadline:
        time.sleep(0.05)
        low = min(low, d.proc_rss_mb(pid) or low)
    return low


def run_idle(supd: d.Supd, seconds: float) -> dict[str, Any]:
    with Sampler(supd.address) as sampler:
        time.sleep(seconds)
    return sampler.summary()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--children", type=int, default=10)
    ap.add_argument("--followers", type=int, default=20)
    ap.add_argument("--lines", type=int, default=1_000_000, help="100-byte lines per child")
    ap.add_argument("--ring-bytes", type=int, default=None)
    ap.add_argument("--repo", type=pathlib.Path, default=None, help="run this checkout's supd")
    ap.add_argument("--json", type=pathlib.Path)
    ap.add_argument(
        "--export", choices=("off", "on"), default="off",
        help="OTLP log export of every line: off, or on to bench/otlp_sink.py over gRPC (default off)",
    )
    ap.add_argument("--cc", default=os.environ.get("CC", "cc"))
    args = ap.parse_args(argv)
    if args.repo is not None:
        d.REPO = args.repo.resolve()
    d.build(args.cc)
    res: dict[str, Any] = {"children": args.children, "followers": args.followers, "lines": args.lines}
    with tempfile.TemporaryDirectory(prefix="supd-cp-") as tmpdir:
        tmp = pathlib.Path(tmpdir)
        res["baseline"] = run_baseline(args.children, args.lines, tmp)
        print("baseline", res["baseline"], flush=True)
        with contextlib.ExitStack() as stack:
            if args.export == "on":  # every line as an OTLP LogRecord over gRPC to bench/otlp_sink.py
                import otlp_sink

                sink = stack.enter_context(otlp_sink.Sink(http=False))
                supd = stack.enter_context(d.running_supd(tmp, "on", sink, "grpc"))
            else:
                supd = stack.enter_context(d.running_supd(tmp, "off"))
            supd.ring_bytes = args.ring_bytes
            res["idle"] = run_idle(supd, 3.0)
            res["idle"]["supd_rss_mb"] = d.proc_rss_mb(supd.pid)
            print("idle", res["idle"], flush=True)
            res["flood"] = run_supd_flood(supd, args.children, args.lines, tmp, "flood", 0)
            print("flood", res["flood"], flush=True)
            res["followed"] = run_supd_flood(supd, args.children, args.lines, tmp, "followed", args.followers)
            print("followed", res["followed"], flush=True)
    base = res["baseline"]
    print()
    print(f"{args.children} children x {args.lines:,} lines x 100 B; {args.followers} followers in the last phase")
    print(f"{'phase':<22}{'Health p50':>11}{'p99':>9}{'max':>9}{'Check p99':>11}{'stall ms':>10}"
          f"{'MB/s all':>10}{'vs cat':>8}")
    print(f"{'baseline (cat)':<22}{'':>11}{'':>9}{'':>9}{'':>11}{base['max_write_stall_ms']:>10.1f}"
          f"{base['mb_per_s_all']:>10.0f}{1.0:>8.2f}")
    for phase in ("idle", "flood", "followed"):
        r = res[phase]
        stall = f"{r['max_write_stall_ms']:>10.1f}" if "max_write_stall_ms" in r else f"{'':>10}"
        mbs = f"{r['mb_per_s_all']:>10.0f}{r['mb_per_s_all'] / base['mb_per_s_all']:>8.2f}" if "mb_per_s_all" in r \
            else f"{'':>18}"
        print(f"{phase:<22}{r['health_p50_ms']:>11.1f}{r['health_p99_ms']:>9.1f}{r['health_max_ms']:>9.1f}"
              f"{r['check_p99_ms']:>11.1f}{stall}{mbs}")
    total_mb = args.children * args.lines * 100 / 1e6
    cpu = [f"baseline: floods {base['floods_cpu_s_per_100mb']:.3f}"]
    for phase in ("flood", "followed"):
        r = res[phase]
        cpu.append(f"{phase}: floods {r['floods_cpu_s_per_100mb']:.3f}, supd {r['supd_cpu_s'] / total_mb * 100:.3f}")
    print("CPU s per 100 MB: " + "; ".join(cpu))
    rings_mb = args.children * (args.ring_bytes or 8 << 20) / (1 << 20)
    base_mb = res["idle"]["supd_rss_mb"]
    for phase in ("flood", "followed"):
        rss = res[phase]["supd_rss_mb_rings_full"]
        print(f"supd RSS with every ring full ({phase}): {rss:.0f} MB = {(rss - base_mb) / rings_mb:.2f} x the"
              f" {rings_mb:.0f} MiB of rings above the idle {base_mb:.0f} MB (target <= 1.25);"
              f" {res[phase]['supd_rss_mb_removed']:.0f} MB once its children were removed")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
