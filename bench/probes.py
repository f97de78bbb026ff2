"""What probes cost supd: N children probed every second, against the same N children unprobed, in one run.

    .venv/bin/python bench/probes.py                          # 100 children: 50% http, 30% tcp, 20% exec
    .venv/bin/python bench/probes.py --children 20 --json bench/out/probes-20.json
    .venv/bin/python bench/probes.py --kind exec              # every child probed the same way
    .venv/bin/python bench/probes.py --mix http=40,tcp=40,grpc=20

Two phases, each with a fresh supd (store and socket in a temporary directory):
first **off**, N children without probes, then **on**, the same N children,
each with one probe (liveness by default, ``--probe-type``) every
``--period`` s (default 1), timeout 1 s, failure threshold 3.

The children are cheap real servers: each is one ``python -I -S -c`` process
(about 10 MB, a few tens of ms of CPU to start) serving HTTP (``GET`` answers
200 ``ok``) on one port and accepting and closing TCP connections on another,
one thread each; its http and tcp probes target its own ports, as a real
child's would. An exec probe runs ``true``. A grpc probe calls
``grpc.health.v1`` Check on one grpc server started by this benchmark outside
supd (``tests/probe_servers.py grpc``): grpcio in every child would cost
about 40 MB and half a second of CPU each.

Once every child runs, accepts connections and (phase on) is READY with a
first run of its probe, each phase measures:

1. a quiet window (``--quiet``, default 10 s; nobody calls supd): supd's CPU
   seconds per wall second, from utime + stime of ``/proc/PID/stat``;
2. the main window (``--window``, default 30 s), during which one thread of
   this process calls, in turn, Health of all children, Health of one child and
   ``grpc.health.v1`` Check of that child's name, ``--poll-rate`` rounds per
   second (default 10) on a fixed schedule, so both phases are asked as often:
   their latency p50/p99/max, and again supd's CPU per wall second (the calls
   included), its resident set and open file descriptors (sampled every 0.5 s),
   its threads; the CPU of supd's reaped children (cutime + cstime: the exec
   probes' processes);
3. probe runs done in both windows (``ChildInfo.probes[].runs``, before and
   after) against those expected (one per period per probe), by kind, the
   fewest runs done by one probe, and the mean time between the ends of two
   runs (``ProbeStatus.time``): whether probes are starved or late.

The table gives each measure off and on and their ratio; ``--json OUT`` writes every figure.
The exit status is 1 when something failed (a child not ready, supd exited, a probe failing
during the windows); a starved probe is printed as ``STARVED``, not a failure.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import pathlib
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from supervisor.testing import SupervisorProcess, accepting, running_supervisor, wait_until
from supervisor.v1 import supervisor_pb2 as pb
from supervisor.v1 import supervisor_pb2_grpc as pb_grpc

REPO = pathlib.Path(__file__).resolve().parent.parent
SERVERS = str(REPO / "tests" / "probe_servers.py")
KINDS = ("http", "tcp", "exec", "grpc")
CLK_TCK = os.sysconf("SC_CLK_TCK")

# One child: an HTTP server and a TCP server on the two ports of argv, one thread each, standard library only.
CHILD = r"""
import socket, sys, threading
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
def http(ls):
    while True:
        c, _ = ls.accept()
        try:
            c.settimeout(5)
            buf = b""
            while b"\r\n\r\n" not in buf:
                d = c.recv(4096)
                if not d:
                    break
                buf += d
            c.sendall(ANSWER)
        except OSError:
            pass
        finally:
            c.close()
def tcp(ls):
    while True:
        c, _ = ls.accept()
        c.close()
def listen(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(64)
    return s
h, t = listen(int(sys.argv[1])), listen(int(sys.argv[2]))
threading.Thread(target=tcp, args=(t,), daemon=True).start()
http(h)
"""


# --- helpers -----------------------------------------------------------------------------------------------------


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (0..100), linear between the closest ranks; nan when empty."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def free_ports(n: int) -> list[int]:
    """n distinct free ports (bound together, then released: the kernel will not hand them out at once again)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()



def proc_stat(pid: int) -> dict[str, float]:
    """utime + stime, cutime + cstime (seconds) and threads of a live process, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is field 3 (state): utime is field 14, stime 15, cutime 16, cstime 17, num_threads 20.
    return {
        "cpu_s": (int(fields[11]) + int(fields[12])) / CLK_TCK,
        "children_cpu_s": (int(fields[13]) + int(fields[14])) / CLK_TCK,
        "threads": int(fields[17]),
    }


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def parse_mix(text: str) -> dict[str, float]:
    mix: dict[str, float] = {}
    for part in text.split(","):
        kind, _, weight = part.partition("=")
        kind = kind.strip()
        if kind not in KINDS or not weight:
            raise SystemExit(f"--mix: {part!r} is not KIND=WEIGHT with KIND one of {', '.join(KINDS)}")
        mix[kind] = float(weight)
    if sum(mix.values()) <= 0:
        raise SystemExit("--mix: the weights must add up to more than 0")
    return mix


def assign_kinds(n: int, mix: dict[str, float]) -> list[str]:
    """n kinds in the mix's proportions (largest remainder), interleaved so that every kind is spread out."""
    total = sum(mix.values())
    exact = {k: n * w / total for k, w in mix.items()}
    counts = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: exact[k] - counts[k], reverse=True)[: n - sum(counts.values())]:
        counts[k] += 1
    out: list[str] = []
    done = dict.fromkeys(counts, 0)
    for i in range(n):  # the kind furthest behind its share goes next
        k = max(counts, key=lambda k: (counts[k] * (i + 1) / n - done[k]) if done[k] < counts[k] else -1e9)
        out.append(k)
        done[k] += 1
    return out


# --- the phases ----------------------------------------------------------------------------------------------------


class Poller:
    """Health (all), Health (one) and grpc.health.v1 Check (one) in turn, a round every ``interval`` s, in a thread.

    Rounds are on a fixed schedule (not a pause after each round), so a slower supd is asked as often: its CPU
    figures stay comparable. A round that would begin more than one interval late is skipped and counted.
    """

    def __init__(self, address: str, one: str, interval: float) -> None:
        self._channel = grpc.insecure_channel(address, options=[("grpc.max_receive_message_length", 64 << 20)])
        self._stub = pb_grpc.SupervisorStub(self._channel)
        self._check = health_pb2_grpc.HealthStub(self._channel)
        self._all = pb.HealthRequest()
        self._one = pb.HealthRequest(name=one)
        self._hreq = health_pb2.HealthCheckRequest(service=one)
        self._interval = interval
        self.samples: dict[str, list[float]] = {"health_all": [], "health_one": [], "check_one": []}
        self.when: dict[str, list[float]] = {k: [] for k in self.samples}
        self.errors: list[str] = []
        self.not_serving = 0
        self.skipped = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        calls = (
            ("health_all", lambda: self._stub.Health(self._all, timeout=10)),
            ("health_one", lambda: self._stub.Health(self._one, timeout=10)),
            ("check_one", lambda: self._check.Check(self._hreq, timeout=10)),
        )
        due = time.monotonic()
        while not self._stop.is_set():
            for key, call in calls:
                t0 = time.perf_counter()
                try:
                    answer = call()
                except grpc.RpcError as exc:
                    self.errors.append(f"{key}: {exc.code().name}")
                    continue
                self.samples[key].append((time.perf_counter() - t0) * 1000)
                self.when[key].append(t0)
                if key == "check_one" and answer.status != health_pb2.HealthCheckResponse.SERVING:
                    self.not_serving += 1
            due += self._interval
            late = time.monotonic() - due
            if late > self._interval:
                skip = int(late / self._interval)
                self.skipped += skip
                due += skip * self._interval
            self._stop.wait(max(0.0, due - time.monotonic()))

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        self._channel.close()

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"errors": len(self.errors), "first_errors": self.errors[:5],
                               "check_not_serving": self.not_serving, "rounds_skipped": self.skipped}
        for key, xs in self.samples.items():
            out[key] = {"n": len(xs), "p50": pct(xs, 50), "p99": pct(xs, 99), "max": max(xs, default=float("nan"))}
            if xs:  # when the worst call began, seconds into the window
                worst = max(range(len(xs)), key=xs.__getitem__)
                out[key]["max_at_s"] = self.when[key][worst] - self.when[key][0]
        return out


Runs = dict[str, tuple[str, int, bool, float]]


def probe_runs(stub: pb_grpc.SupervisorStub) -> Runs:
    """Per child: (kind, runs, last success, when the last run ended: wall s) of its probe; absent when none."""
    out = {}
    for c in stub.Health(pb.HealthRequest(), timeout=30).children:
        for p in c.probes:
            out[c.spec.name] = (p.kind, p.runs, p.success, p.time.seconds + p.time.nanos / 1e9)
    return out


def runs_summary(before: Runs, after: Runs, seconds: float, period: float) -> dict[str, Any]:
    """Runs done against expected, by kind; and the mean time between two runs' ends (the actual period)."""
    per_kind: dict[str, dict[str, Any]] = {}
    for name, (kind, runs, _, ended) in after.items():
        done = runs - before[name][1]
        k = per_kind.setdefault(kind, {"probes": 0, "done": 0, "fewest": None, "span_s": 0.0, "intervals": 0})
        k["probes"] += 1
        k["done"] += done
        k["fewest"] = done if k["fewest"] is None else min(k["fewest"], done)
        k["span_s"] += ended - before[name][3]
        k["intervals"] += done
    expected_each = seconds / period
    for k in per_kind.values():
        k["expected"] = k["probes"] * expected_each
        k["ratio"] = k["done"] / k["expected"] if k["expected"] else float("nan")
        k["mean_period_s"] = k["span_s"] / k["intervals"] if k["intervals"] else float("nan")
    done = sum(k["done"] for k in per_kind.values())
    expected = sum(k["expected"] for k in per_kind.values())
    failing = sorted(n for n, (_, _, ok, _) in after.items() if not ok)
    return {
        "expected_each": expected_each, "done": done, "expected": expected,
        "ratio": done / expected if expected else float("nan"),
        "fewest": min((k["fewest"] for k in per_kind.values()), default=None),
        "mean_period_s": sum(k["span_s"] for k in per_kind.values()) / max(1, done),
        "by_kind": per_kind, "failing_at_end": failing,
    }


@contextlib.contextmanager
def grpc_server(needed: bool) -> Iterator[int]:
    """A grpc.health.v1 server (tests/probe_servers.py grpc) outside supd, when some probe is grpc; yields its port."""
    if not needed:
        yield 0
        return
    proc = subprocess.Popen([sys.executable, SERVERS, "grpc", "--port", "0"], stdout=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        if not line.startswith("listening "):
            raise SystemExit(f"FAILED: the grpc server did not start: {line!r}")
        yield int(line.split()[1])
    finally:
        proc.terminate()
        proc.wait(10)


def make_probe(kind: str, http_port: int, tcp_port: int, grpc_port: int, period: float, timeout: float) -> pb.Probe:
    probe = pb.Probe(period_seconds=period, timeout_seconds=timeout, failure_threshold=3)
    if kind == "http":
        probe.http.CopyFrom(pb.HttpAction(url=f"http://127.0.0.1:{http_port}/healthz"))
    elif kind == "tcp":
        probe.tcp.CopyFrom(pb.TcpAction(port=tcp_port))
    elif kind == "exec":
        probe.exec.CopyFrom(pb.ExecAction(argv=["true"]))
    else:
        probe.grpc.CopyFrom(pb.GrpcAction(port=grpc_port))
    return probe


def run_phase(args: argparse.Namespace, kinds: list[str] | None, grpc_port: int) -> dict[str, Any]:
    """One supd with the children; probes when ``kinds`` is given (one per child). Every figure of the phase."""
    n = args.children
    label = "on" if kinds is not None else "off"
    ports = free_ports(2 * n)
    names = [f"c{i:03d}" for i in range(n)]
    res: dict[str, Any] = {"phase": label}
    with (
        tempfile.TemporaryDirectory(prefix=f"supd-bench-probes-{label}-") as tmp,
        running_supervisor(pathlib.Path(tmp), start_timeout=60) as sup,
        sup.channel() as channel,
    ):
        stub = pb_grpc.SupervisorStub(channel)
        launched = time.monotonic()
        for i, name in enumerate(names):
            hp, tp = ports[2 * i], ports[2 * i + 1]
            spec = pb.ChildSpec(
                name=name, argv=[sys.executable, "-I", "-S", "-c", CHILD, str(hp), str(tp)],
                restart=pb.RESTART_POLICY_ALWAYS, stop_grace_seconds=5,
            )
            if kinds is not None:
                probe = make_probe(kinds[i], hp, tp, grpc_port, args.period, args.timeout)
                getattr(spec, f"{args.probe_type}_probe").CopyFrom(probe)
            stub.Spawn(pb.SpawnRequest(spec=spec), timeout=30)
        for i in range(n):
            wait_until(lambda i=i: accepting(ports[2 * i]) and accepting(ports[2 * i + 1]), 120,
                       interval=0.05, what=f"child {names[i]} accepting")

        def all_ready() -> bool:
            infos = stub.Health(pb.HealthRequest(), timeout=30).children
            return len(infos) == n and all(
                c.state == pb.CHILD_STATE_RUNNING and c.health == pb.CHILD_HEALTH_READY
                and all(p.runs > 0 for p in c.probes) for c in infos)

        wait_until(all_ready, 120, interval=0.2, what="every child READY")
        res["ready_s"] = time.monotonic() - launched
        time.sleep(args.settle)
        res.update(measure(args, sup, stub, names[0], kinds is not None))
        infos = stub.Health(pb.HealthRequest(), timeout=30).children
        res["restarts"] = sum(c.restart_count for c in infos)
        res["supd_exited"] = sup.proc.poll()
        res["probe_failures"] = failures_logged(sup.stderr_text(), res["measured_from"])
    return res


def failures_logged(stderr: str, since: float) -> dict[str, Any]:
    """supd's ``probe.<name>.failure`` log lines (every failed run, JSON on stderr) from ``since`` (wall s) on.

    How many, and why (ports replaced by PORT, so that one reason is counted once).
    """
    why: dict[str, int] = {}
    for line in stderr.splitlines():
        if ".failure" not in line:
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if not isinstance(event, dict):
            continue
        if str(event.get("event", "")).startswith("probe.") and str(event["event"]).endswith(".failure"):
            text = str(event.get("timestamp") or "1970-01-01T00:00:00Z")
            stamp = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
            if stamp.timestamp() < since:
                continue
            key = re.sub(r":\d+\b", ":PORT", f"{event.get('kind')}: {event.get('message')}")
            why[key] = why.get(key, 0) + 1
    return {"total": sum(why.values()), "by_message": dict(sorted(why.items(), key=lambda kv: -kv[1]))}


def measure(args: argparse.Namespace, sup: SupervisorProcess, stub: pb_grpc.SupervisorStub, one: str,
            probed: bool) -> dict[str, Any]:
    pid = sup.proc.pid
    out: dict[str, Any] = {"measured_from": time.time()}
    runs0 = probe_runs(stub) if probed else {}
    # 1. quiet window: nobody calls supd
    s0, t0 = proc_stat(pid), time.monotonic()
    time.sleep(args.quiet)
    s1, t1 = proc_stat(pid), time.monotonic()
    out["quiet"] = {"seconds": t1 - t0, "cpu_per_s": (s1["cpu_s"] - s0["cpu_s"]) / (t1 - t0),
                    "children_cpu_per_s": (s1["children_cpu_s"] - s0["children_cpu_s"]) / (t1 - t0)}
    runs1 = probe_runs(stub) if probed else {}
    # 2. main window: the poller runs
    peak = [rss_mb(pid)]
    fds = [open_fds(pid)]
    stop = threading.Event()

    def sample_rss() -> None:
        while not stop.wait(0.5):
            with contextlib.suppress(OSError):
                peak.append(rss_mb(pid))
                fds.append(open_fds(pid))

    sampler = threading.Thread(target=sample_rss, daemon=True)
    w: dict[str, Any] = {"rss_mb_start": peak[0], "fds_start": fds[0]}
    s0 = proc_stat(pid)
    w["threads_start"] = s0["threads"]
    t0 = time.monotonic()
    sampler.start()
    with Poller(sup.address, one, 1 / args.poll_rate) as poller:
        time.sleep(args.window)
    s1, t1 = proc_stat(pid), time.monotonic()
    stop.set()
    sampler.join()
    w.update({
        "seconds": t1 - t0, "cpu_per_s": (s1["cpu_s"] - s0["cpu_s"]) / (t1 - t0),
        "children_cpu_per_s": (s1["children_cpu_s"] - s0["children_cpu_s"]) / (t1 - t0),
        "rss_mb_end": rss_mb(pid), "rss_mb_peak": max(peak), "threads_end": s1["threads"],
        "fds_end": open_fds(pid), "fds_min": min(fds), "fds_max": max(fds), **poller.summary(),
    })
    out["window"] = w
    if probed:
        runs2 = probe_runs(stub)
        out["runs_quiet"] = runs_summary(runs0, runs1, out["quiet"]["seconds"], args.period)
        out["runs_window"] = runs_summary(runs1, runs2, w["seconds"], args.period)
    return out


# --- report ----------------------------------------------------------------------------------------------------------


def print_report(res: dict[str, Any]) -> None:
    off, on = res["off"], res["on"]
    a = res["args"]
    print()
    print(f"probes benchmark: {a['children']} children, {res['mix_text']}, {a['probe_type']} probe every "
          f"{a['period']:g} s (timeout {a['timeout']:g} s); quiet {a['quiet']:g} s, window {a['window']:g} s, "
          f"{a['poll_rate']:g} rounds/s of Health/Check; {res['cpus']} CPUs, "
          f"load average at start {res['load_start']}, at end {res['load_end']}")
    print(f"{'measure':<46}{'probes off':>12}{'probes on':>12}{'on/off':>9}")

    def row(label: str, x: float, y: float, fmt: str = "{:>12.3f}", ratio: bool = True) -> None:
        r = f"{y / x:>9.2f}" if ratio and x else f"{'':>9}"
        print(f"{label:<46}{fmt.format(x)}{fmt.format(y)}{r}")

    row("supd CPU s per s, quiet (no RPCs)", off["quiet"]["cpu_per_s"], on["quiet"]["cpu_per_s"])
    row("supd CPU s per s, window (with the polling)", off["window"]["cpu_per_s"], on["window"]["cpu_per_s"])
    for key, label in (("quiet", "quiet"), ("window", "window")):
        per_run = (on[key]["cpu_per_s"] - off[key]["cpu_per_s"]) / (on[f"runs_{key}"]["done"] / on[key]["seconds"])
        print(f"{f'  supd CPU ms per probe run, {label} (on - off)':<46}{'':>12}{per_run * 1000:>12.2f}")
    row("  reaped children's CPU s per s (exec probes)", off["window"]["children_cpu_per_s"],
        on["window"]["children_cpu_per_s"], ratio=False)
    for key, label in (("rss_mb_start", "supd RSS MB, window start"), ("rss_mb_end", "supd RSS MB, window end"),
                       ("rss_mb_peak", "supd RSS MB, peak (0.5 s samples)")):
        row(label, off["window"][key], on["window"][key], "{:>12.1f}")
    for key, label in (("threads_end", "supd threads"), ("fds_min", "supd open fds, fewest (0.5 s samples)"),
                       ("fds_max", "supd open fds, most (0.5 s samples)")):
        row(label, off["window"][key], on["window"][key], "{:>12.0f}")
    for key, label in (("health_all", "Health (all children)"), ("health_one", "Health (one child)"),
                       ("check_one", "grpc.health.v1 Check (one child)")):
        for stat in ("p50", "p99", "max"):
            row(f"{label} {stat} ms", off["window"][key][stat], on["window"][key][stat], "{:>12.2f}")
        row(f"{label} calls", off["window"][key]["n"], on["window"][key]["n"], "{:>12.0f}")
    for ph in (off, on):
        w = ph["window"]
        if w["rounds_skipped"]:
            print(f"  {ph['phase']}: {w['rounds_skipped']} polling rounds skipped (the previous one ran late)")
        if w["errors"] or w["check_not_serving"]:
            print(f"  {ph['phase']}: {w['errors']} errors {w['first_errors']}, {w['check_not_serving']} Check"
                  " answers not SERVING")
    for key, label in (("runs_quiet", "quiet"), ("runs_window", "window")):
        r = on[key]
        verdict = "ok" if r["ratio"] >= 0.95 else "STARVED"
        print(f"probe runs, {label}: {r['done']:,} done / {r['expected']:,.0f} expected = {r['ratio']:.3f}"
              f" ({verdict}); fewest by one probe {r['fewest']} of {r['expected_each']:.1f};"
              f" mean period {r['mean_period_s']:.3f} s")
        for kind, k in sorted(r["by_kind"].items()):
            print(f"    {kind:<5} {k['probes']:>4} probes: {k['done']:>7,} / {k['expected']:>9,.0f} = {k['ratio']:.3f},"
                  f" fewest {k['fewest']}, mean period {k['mean_period_s']:.3f} s")
    f = on["probe_failures"]
    if f["total"]:
        print(f"failed probe runs during the quiet window and the window (supd's log): {f['total']}")
        for msg, count in list(f["by_message"].items())[:6]:
            print(f"    {count:>6}  {msg}")
    print(f"all children ready after {off['ready_s']:.1f} s (off), {on['ready_s']:.1f} s (on); "
          f"restarts during the phase: {off['restarts']} (off), {on['restarts']} (on)")
    for ph in (off, on):
        w = ph["window"]
        print(f"  {ph['phase']}: slowest Health (all) began {w['health_all'].get('max_at_s', float('nan')):.1f} s"
              f" into the window; threads {w['threads_start']}->{w['threads_end']}, fds {w['fds_start']}->"
              f"{w['fds_end']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--children", type=int, default=100)
    ap.add_argument("--mix", default="http=50,tcp=30,exec=20", help="KIND=WEIGHT,... (kinds: http, tcp, exec, grpc)")
    ap.add_argument("--kind", choices=KINDS, help="every child's probe of this kind (instead of --mix)")
    ap.add_argument("--probe-type", choices=("liveness", "readiness", "startup"), default="liveness")
    ap.add_argument("--period", type=float, default=1.0, help="probe period_seconds")
    ap.add_argument("--timeout", type=float, default=1.0, help="probe timeout_seconds")
    ap.add_argument("--quiet", type=float, default=10.0, help="seconds of the quiet window (no RPCs)")
    ap.add_argument("--window", type=float, default=30.0, help="seconds of the polled window")
    ap.add_argument("--settle", type=float, default=2.0, help="seconds between all ready and the quiet window")
    ap.add_argument("--poll-rate", type=float, default=10.0, help="rounds of the 3 calls per second, fixed schedule")
    ap.add_argument("--json", type=pathlib.Path)
    args = ap.parse_args()
    if args.probe_type == "startup":
        ap.error("a startup probe stops at its first success: use liveness or readiness")
    mix = {args.kind: 1.0} if args.kind else parse_mix(args.mix)
    kinds = assign_kinds(args.children, mix)
    counts = {k: kinds.count(k) for k in KINDS if kinds.count(k)}
    res: dict[str, Any] = {
        "args": {k: (str(v) if isinstance(v, pathlib.Path) else v) for k, v in vars(args).items()},
        "cpus": os.cpu_count(), "python": sys.version.split()[0], "grpcio": grpc.__version__,
        "kinds": counts, "mix_text": " ".join(f"{c} {k}" for k, c in counts.items()),
        "load_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    print(f"probes benchmark: {args.children} children ({res['mix_text']}), {os.cpu_count()} CPUs, "
          f"load average {res['load_start']}", flush=True)
    with grpc_server("grpc" in counts) as grpc_port:
        res["off"] = run_phase(args, None, grpc_port)
        print(f"off: {json.dumps({k: res['off'][k] for k in ('quiet', 'ready_s')})}", flush=True)
        res["on"] = run_phase(args, kinds, grpc_port)
        print(f"on: {json.dumps({k: res['on'][k] for k in ('quiet', 'ready_s')})}", flush=True)
    res["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print_report(res)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=1))
        print(f"wrote {args.json}")
    failed = [f"supd exited ({ph['supd_exited']}) in phase {ph['phase']}" for ph in (res["off"], res["on"])
              if ph["supd_exited"] is not None]
    failing = res["on"]["runs_window"]["failing_at_end"]
    if failing:
        failed.append(f"probes failing at the end of the window: {failing[:10]}")
    if res["on"]["restarts"] or res["off"]["restarts"]:
        failed.append(f"children restarted: {res['off']['restarts']} (off), {res['on']['restarts']} (on)")
    for msg in failed:
        print(f"FAILED: {msg}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
