"""Drain benchmark: how much does running a flooding child under supd cost it?

One run of this script:

1. compiles ``flood.c`` and ``check_lines.c`` into ``bench/bin/`` when stale;
2. checks that the checker keeps up (``flood | check_lines``, once);
3. starts one real supd on a Unix socket and then, ``--runs`` times, in turn:

   * baseline: ``flood | cat > /dev/null`` (real pipe), flood's own wall time
     and longest write() stall;
   * under supd: ``supctl spawn NAME --restart never -- flood --wait-for F``,
     then ``supctl logs -f NAME | check_lines``; flood writes a ``#`` heartbeat
     line every 20 ms while it waits, and the start file is created only once
     check_lines has seen a heartbeat, so the follower is known to be attached
     and live before the first numbered line is written. Flood's wall time and
     stall, the follower's lines/s and order, and supd's CPU time
     (utime + stime from /proc/PID/stat) are recorded;
   * drain only (unless ``--no-drain-only``): the same child with no follower,
     supd's line count checked through Health;

4. prints medians, spreads and ratios, marks missed targets with MISSED, and
   exits non-zero only when something failed (lines missing or out of order,
   supd died, a step timed out), never because a target was missed.

Run: ``/work/venv/bin/python bench/drain.py [--lines N] [--runs R] [--json OUT]``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

BENCH = pathlib.Path(__file__).resolve().parent
REPO = BENCH.parent
BIN = BENCH / "bin"
PROGRAMS = ("flood", "check_lines")
LINE_BYTES = 100

TARGET_RATIO = 1.25  # supd wall / cat wall
TARGET_FOLLOWER_LPS = 1_000_000

CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """Something failed: the benchmark's figures cannot be trusted."""


class BenchErrorWithResult(BenchError):
    def __init__(self, message: str, result: dict[str, Any]):
        super().__init__(message)
        self.result = result


# --------------------------------------------------------------------------- build


def build(cc: str) -> None:
    BIN.mkdir(exist_ok=True)
    for name in PROGRAMS:
        src, exe = BENCH / f"{name}.c", BIN / name
        if exe.exists() and exe.stat().st_mtime >= src.stat().st_mtime:
            continue
        cmd = [cc, "-O2", "-Wall", "-Wextra", "-o", str(exe), str(src)]
        print("build:", shlex.join(cmd), flush=True)
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            raise BenchError(f"compiling {src.name} failed:\n{res.stdout}{res.stderr}")


# --------------------------------------------------------------------------- helpers


def wait_for(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.005) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def read_json(path: pathlib.Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except FileNotFoundError:
        return None


def proc_times_s(pid: int) -> tuple[float, float]:
    """(utime, stime) of a live process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime is field 14, stime field 15.
    return int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a live process (all its threads), in seconds."""
    return sum(proc_times_s(pid))


def proc_hwm_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def proc_rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return None


class RssSampler:
    """Samples a process's resident set every few milliseconds in a thread; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.005):
        self.pid, self.interval = pid, interval
        self.peak_mb = 0.0
        self.start_mb = proc_rss_mb(pid) or 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = proc_rss_mb(self.pid)
            if rss is not None and rss > self.peak_mb:
                self.peak_mb = rss
            time.sleep(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def flood_cmd(lines: int, report: pathlib.Path, wait: pathlib.Path | None = None) -> list[str]:
    cmd = [str(BIN / "flood"), "--lines", str(lines), "--report", str(report)]
    if wait is not None:
        cmd += ["--wait-for", str(wait), "--wait-timeout", "120"]
    return cmd


def check_flood(report: dict[str, Any] | None, lines: int, where: str) -> dict[str, Any]:
    if report is None:
        raise BenchError(f"{where}: flood wrote no report")
    if report.get("error") or report.get("lines") != lines:
        raise BenchError(f"{where}: flood failed: {report}")
    return report


def stop(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


# --------------------------------------------------------------------------- baseline


def run_pipe(lines: int, tmp: pathlib.Path, tag: str, consumer: list[str], timeout: float) -> dict[str, Any]:
    """flood | consumer, with a real pipe; flood's report (and consumer's, if any)."""
    report = tmp / f"{tag}.flood.json"
    with subprocess.Popen(flood_cmd(lines, report), stdout=subprocess.PIPE) as flood:
        assert flood.stdout is not None
        try:
            consumer_proc = subprocess.Popen(consumer, stdin=flood.stdout, stdout=subprocess.DEVNULL)
        finally:
            flood.stdout.close()
        try:
            rc_consumer = consumer_proc.wait(timeout)
            rc_flood = flood.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            stop(consumer_proc)
            stop(flood)
            raise BenchError(f"{tag}: {shlex.join(consumer)} did not finish within {timeout:.0f}s") from exc
    if rc_flood != 0:
        raise BenchError(f"{tag}: flood exited with {rc_flood}: {read_json(report)}")
    if rc_consumer != 0 and consumer[0] != str(BIN / "check_lines"):
        raise BenchError(f"{tag}: {consumer[0]} exited with {rc_consumer}")
    return check_flood(read_json(report), lines, tag)


def run_checker_alone(lines: int, tmp: pathlib.Path, timeout: float) -> dict[str, Any]:
    creport = tmp / "selfcheck.check.json"
    flood = run_pipe(
        lines,
        tmp,
        "selfcheck",
        [str(BIN / "check_lines"), "--report", str(creport), "--expect", str(lines)],
        timeout,
    )
    check = read_json(creport)
    if not check or not check.get("ok"):
        raise BenchError(f"checker self-check (flood | check_lines) failed: {check}")
    return {"flood": flood, "check": check}


def run_baseline(lines: int, tmp: pathlib.Path, i: int, timeout: float) -> dict[str, Any]:
    cat = shutil.which("cat") or "/bin/cat"
    flood = run_pipe(lines, tmp, f"cat-{i}", [cat], timeout)
    return {"wall_s": flood["wall_s"], "max_write_stall_ms": flood["max_write_stall_ms"], "flood": flood}


# --------------------------------------------------------------------------- supd


def supctl_command() -> list[str]:
    env_cmd = os.environ.get("SUPCTL")
    if env_cmd:
        return shlex.split(env_cmd)
    return [sys.executable, "-m", "supervisor.cli"]


def child_env() -> dict[str, str]:
    """Environment for supd/supctl: this repository importable even if not installed."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


class Supd:
    """A running supd and the means to drive it with supctl."""

    def __init__(self, proc: subprocess.Popen[bytes], address: str, stderr_path: pathlib.Path, handle: Any):
        self.proc = proc
        self.address = address
        self.stderr_path = stderr_path
        self.handle = handle  # supervisor.testing.SupervisorProcess, or None
        self.ring_bytes: int | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def assert_alive(self, where: str) -> None:
        if not self.alive():
            raise BenchError(
                f"{where}: supd died with exit status {self.proc.returncode}; its stderr:\n" + self.stderr_tail()
            )

    def check_flood(self, report: dict[str, Any] | None, lines: int, where: str) -> dict[str, Any]:
        """flood's report, checked; a flood that failed because supd died says so."""
        if report is None or report.get("error") or report.get("lines") != lines:
            deadline = time.monotonic() + 2.0
            while self.alive() and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assert_alive(where)
        return check_flood(report, lines, where)

    def stderr_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no stderr file)"

    def supctl(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        cmd = [*supctl_command(), "--addr", self.address, *args]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=child_env(), check=False)
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"{shlex.join(cmd)} did not finish within {timeout:.0f}s") from exc
        if res.returncode != 0:
            raise BenchError(f"{shlex.join(cmd)} exited with {res.returncode}:\n{res.stdout}{res.stderr}")
        return res

    def spawn(self, name: str, argv: list[str]) -> None:
        """``supctl spawn NAME --restart never [--ring-bytes B] -- ARGV``."""
        ring = ["--ring-bytes", str(self.ring_bytes)] if self.ring_bytes is not None else []
        self.supctl("spawn", name, "--restart", "never", *ring, "--", *argv)

    def health(self, name: str) -> Any:
        """ChildInfo through gRPC, or None when the testing helpers are unavailable."""
        if self.handle is None:
            return None
        from supervisor.v1 import supervisor_pb2 as pb

        with self.handle.channel() as channel:
            from supervisor.v1 import supervisor_pb2_grpc as pb_grpc

            resp = pb_grpc.SupervisorStub(channel).Health(pb.HealthRequest(name=name), timeout=10)
        return resp.children[0] if resp.children else None


@contextmanager
def running_supd(tmp: pathlib.Path) -> Iterator[Supd]:
    sys.path.insert(0, str(REPO))
    try:
        from supervisor.testing import running_supervisor
    except Exception as exc:
        raise BenchError(f"cannot import supervisor.testing from {REPO}: {exc!r}") from exc
    cm: AbstractContextManager[Any] = running_supervisor(tmp, env={"PYTHONPATH": child_env()["PYTHONPATH"]})
    try:
        handle = cm.__enter__()
    except Exception as exc:
        raise BenchError(f"supd did not start: {exc}") from exc
    try:
        yield Supd(handle.proc, handle.address, handle.stderr_path, handle)
    finally:
        cm.__exit__(None, None, None)


def run_under_supd(supd: Supd, lines: int, tmp: pathlib.Path, i: int, timeout: float) -> dict[str, Any]:
    name = f"flood-{i}"
    tag = f"supd-{i}"
    freport = tmp / f"{tag}.flood.json"
    creport = tmp / f"{tag}.check.json"
    start = tmp / f"{tag}.start"
    ready = tmp / f"{tag}.ready"
    follower_err = tmp / f"{tag}.supctl.stderr"

    supd.assert_alive(tag)
    supd.spawn(name, flood_cmd(lines, freport, wait=start))
    follower_cmd = [*supctl_command(), "--addr", supd.address, "logs", "-f", name]
    with follower_err.open("wb") as err:
        follower = subprocess.Popen(follower_cmd, stdout=subprocess.PIPE, stderr=err, env=child_env())
    assert follower.stdout is not None
    try:
        checker = subprocess.Popen(
            [
                str(BIN / "check_lines"),
                "--report",
                str(creport),
                "--expect",
                str(lines),
                "--ready-file",
                str(ready),
            ],
            stdin=follower.stdout,
        )
    finally:
        follower.stdout.close()
    try:
        # The follower is live once a heartbeat made it through supd and supctl.
        def is_ready() -> bool:
            if follower.poll() is not None:
                raise BenchError(
                    f"{tag}: {shlex.join(follower_cmd)} exited with {follower.returncode} before "
                    f"any output arrived:\n{follower_err.read_text(errors='replace')}"
                )
            supd.assert_alive(tag)
            return ready.exists()

        wait_for(is_ready, 30, f"{tag}: the first heartbeat line through supctl logs -f")

        times0 = proc_times_s(supd.pid)
        cpu0 = sum(times0)
        follower_cpu0 = proc_cpu_s(follower.pid)
        start.touch()

        def flood_done() -> dict[str, Any] | None:
            supd.assert_alive(tag)
            return read_json(freport)

        flood = supd.check_flood(wait_for(flood_done, timeout, f"{tag}: flood's report"), lines, tag)
        cpu_flood_done = proc_cpu_s(supd.pid)

        # Everything should reach the checker soon after flood is done: done when
        # it has all N lines, or (lines lost) a while after supctl printed the
        # child's exit event, which supd sends after the child's last line.
        end_seen_at: float | None = None

        def check_done() -> dict[str, Any] | None:
            nonlocal end_seen_at
            supd.assert_alive(tag)
            if checker.poll() is not None or follower.poll() is not None:
                return read_json(creport) or {"lines": 0, "ok": False, "final": True}
            report = read_json(creport)
            if report is not None:
                return report
            if end_seen_at is None:
                if follower_summary(follower_err, name)["end_seen"]:
                    end_seen_at = time.monotonic()
            elif time.monotonic() - end_seen_at > 3.0:
                return {"lines": None, "ok": False}
            return None

        tail_timeout = max(30.0, timeout - flood["wall_s"])
        try:
            done = wait_for(check_done, tail_timeout, f"{tag}: all {lines} lines at check_lines")
            caught_up = done.get("lines") == lines
        except BenchError:
            caught_up = False
        times1 = proc_times_s(supd.pid)
        cpu1 = sum(times1)
        follower_cpu = proc_cpu_s(follower.pid) - follower_cpu0 if follower.poll() is None else None

        # Remove the child: the stream ends with REMOVED, supctl exits, the checker sees EOF.
        supd.supctl("rm", name)
        try:
            follower.wait(30)
        except subprocess.TimeoutExpired:
            print(f"warning: {tag}: supctl logs -f did not exit after rm; terminating it", flush=True)
            stop(follower)
        try:
            checker.wait(30)
        except subprocess.TimeoutExpired as exc:
            stop(checker)
            raise BenchError(f"{tag}: check_lines did not see EOF after supctl exited") from exc
    finally:
        stop(follower)
        stop(checker)

    check = read_json(creport)
    if check is None or not check.get("final"):
        raise BenchError(f"{tag}: check_lines wrote no final report ({check})")
    fsum = follower_summary(follower_err, name)
    result = {
        "wall_s": flood["wall_s"],
        "max_write_stall_ms": flood["max_write_stall_ms"],
        "follower_lines_per_s": check["lines_per_s"],
        "in_order": bool(check["in_order"]),
        "complete": bool(check["complete"]),
        "ok": bool(check["ok"]) and caught_up,
        "caught_up": caught_up,
        # how long after flood's last write the last byte reached the checker
        "follower_lag_s": check["last_byte_mono_s"] - flood["end_mono_s"] if check["lines"] else None,
        "supd_cpu_s": cpu1 - cpu0,
        "supd_cpu_s_while_flooding": cpu_flood_done - cpu0,
        "supd_user_s": times1[0] - times0[0],
        "supd_sys_s": times1[1] - times0[1],
        "supd_cpu_s_per_100mb": (cpu1 - cpu0) / (flood["bytes"] / 1e8),
        "supctl_cpu_s": follower_cpu,
        "gaps": fsum["gaps"],
        "records_lost_in_gaps": fsum["records_lost"],
        "flood": flood,
        "check": check,
    }
    result["follower_stderr"] = follower_err.read_text(errors="replace")[-4000:]
    if not result["ok"]:
        short = {k: check.get(k) for k in ("lines", "expected", "in_order", "complete", "first_bad", "bad_reason")}
        raise BenchErrorWithResult(
            f"{tag}: not every line reached check_lines in order through supctl logs -f: {json.dumps(short)}; "
            f"supctl reported {fsum['gaps']} gaps losing {fsum['records_lost']} records"
            + ("" if caught_up or fsum["gaps"] else f" (still missing {tail_timeout:.0f}s after flood ended)")
            + f"\nsupctl logs -f stderr (last lines):\n{result['follower_stderr'][-800:]}",
            result,
        )
    return result


def follower_summary(stderr_path: pathlib.Path, name: str) -> dict[str, Any]:
    """What ``supctl logs -f`` said on stderr: gaps, and whether the child's exit event came."""
    text = stderr_path.read_text(errors="replace")
    prefix = f"supctl: [{name}] "
    gaps = [int(m) for m in re.findall(r"GAP: (\d+) records lost", text)]
    end_seen = any(
        line.startswith(prefix) and "GAP:" not in line and "started with pid" not in line for line in text.splitlines()
    )
    return {"gaps": len(gaps), "records_lost": sum(gaps), "end_seen": end_seen}


def run_drain_only(supd: Supd, lines: int, tmp: pathlib.Path, i: int, timeout: float) -> dict[str, Any]:
    """The child under supd with nobody following: the cost of the drain and ring alone."""
    name = f"drain-{i}"
    tag = f"drain-{i}"
    freport = tmp / f"{tag}.flood.json"
    supd.assert_alive(tag)
    times0 = proc_times_s(supd.pid)
    cpu0 = sum(times0)
    supd.spawn(name, flood_cmd(lines, freport))

    def flood_done() -> dict[str, Any] | None:
        supd.assert_alive(tag)
        return read_json(freport)

    flood = supd.check_flood(wait_for(flood_done, timeout, f"{tag}: flood's report"), lines, tag)
    counted: int | None = None
    if supd.handle is not None:

        def drained() -> bool:
            nonlocal counted
            info = supd.health(name)
            counted = int(info.stdout_lines) if info is not None else None
            return counted == lines

        try:
            wait_for(drained, 30, f"{tag}: supd to count {lines} stdout lines", interval=0.05)
        except BenchError as exc:
            raise BenchError(f"{exc} (it counted {counted})") from exc
    times1 = proc_times_s(supd.pid)
    cpu1 = sum(times1)
    supd.supctl("rm", name)
    return {
        "wall_s": flood["wall_s"],
        "max_write_stall_ms": flood["max_write_stall_ms"],
        "supd_stdout_lines": counted,
        "supd_user_s": times1[0] - times0[0],
        "supd_sys_s": times1[1] - times0[1],
        "supd_cpu_s": cpu1 - cpu0,
        "supd_cpu_s_per_100mb": (cpu1 - cpu0) / (flood["bytes"] / 1e8),
        "flood": flood,
    }


def start_py_spy(pid: int, out: pathlib.Path) -> subprocess.Popen[bytes]:
    exe = shutil.which("py-spy") or str(pathlib.Path(sys.executable).parent / "py-spy")
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [
        exe,
        "record",
        "-p",
        str(pid),
        "-o",
        str(out),
        "-f",
        "raw",
        "-r",
        "200",
        *(["--native"] if os.environ.get("PY_SPY_NATIVE") else ["--nonblocking"]),
    ]
    print("profiling:", shlex.join(cmd), flush=True)
    spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # let it attach
    return spy


def stop_py_spy(spy: subprocess.Popen[bytes], out: pathlib.Path) -> None:
    spy.send_signal(signal.SIGINT)
    try:
        spy.wait(30)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait()
    print(f"py-spy stacks written to {out}" if out.exists() else "py-spy wrote nothing", flush=True)


# --------------------------------------------------------------------------- report


def spread(xs: list[float]) -> dict[str, float]:
    if not xs:
        return {}
    m = median(xs)
    return {
        "median": m,
        "min": min(xs),
        "max": max(xs),
        "spread_pct": (max(xs) - min(xs)) / m * 100 if m else float("nan"),
        "n": len(xs),
    }


def summarize(res: dict[str, Any]) -> dict[str, Any]:
    base = [r["wall_s"] for r in res["baseline"]]
    supd = [r["wall_s"] for r in res["supd"]]
    pairs = [s["wall_s"] / b["wall_s"] for b, s in zip(res["baseline"], res["supd"], strict=False)]
    drain = [r["wall_s"] for r in res["drain_only"]]
    summ: dict[str, Any] = {
        "baseline_wall_s": spread(base),
        "supd_wall_s": spread(supd),
        "ratio_supd_over_cat": (median(supd) / median(base)) if base and supd else None,
        "ratio_per_run": spread(pairs),
        "stall_ms_cat": spread([r["max_write_stall_ms"] for r in res["baseline"]]),
        "stall_ms_supd": spread([r["max_write_stall_ms"] for r in res["supd"]]),
        "follower_lines_per_s": spread([r["follower_lines_per_s"] for r in res["supd"]]),
        "follower_lag_s": spread([r["follower_lag_s"] for r in res["supd"] if r["follower_lag_s"] is not None]),
        "delivered_pct": spread(
            [r["check"]["lines"] / res["params"]["lines"] * 100 for r in res["supd"] if r.get("check")]
        ),
        "all_in_order": bool(res["supd"]) and all(r["ok"] for r in res["supd"]),
        "runs_in_order": sum(1 for r in res["supd"] if r["ok"]),
        "supd_cpu_s_per_100mb": spread([r["supd_cpu_s_per_100mb"] for r in res["supd"]]),
        "supd_sys_share_pct": spread(
            [r["supd_sys_s"] / r["supd_cpu_s"] * 100 for r in res["supd"] if r.get("supd_cpu_s")]
        ),
        "supctl_cpu_s_per_100mb": spread(
            [r["supctl_cpu_s"] / (r["flood"]["bytes"] / 1e8) for r in res["supd"] if r["supctl_cpu_s"] is not None]
        ),
    }
    summ["supd_rss_mb_peak"] = spread([r["supd_rss_mb_peak"] for r in res["supd"]])
    if drain:
        summ["drain_only_supd_rss_mb_peak"] = spread([r["supd_rss_mb_peak"] for r in res["drain_only"]])
        summ["drain_only_wall_s"] = spread(drain)
        summ["ratio_drain_only_over_cat"] = median(drain) / median(base) if base else None
        summ["stall_ms_drain_only"] = spread([r["max_write_stall_ms"] for r in res["drain_only"]])
        summ["drain_only_supd_cpu_s_per_100mb"] = spread([r["supd_cpu_s_per_100mb"] for r in res["drain_only"]])
    return summ


def fmt(x: float | None, unit: str = "") -> str:
    if x is None:
        return "-"
    if unit == "lps":
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.3f}"


def print_table(res: dict[str, Any]) -> None:
    s = res["summary"]
    p = res["params"]
    mb = p["lines"] * LINE_BYTES / 1e6
    print()
    print(
        f"drain benchmark: {p['lines']:,} lines x {LINE_BYTES} B = {mb:.0f} MB, {p['runs']} runs, "
        f"{res['host']['cpus']} CPUs"
    )
    head = f"{'figure':44} {'median':>12} {'min':>12} {'max':>12} {'spread':>7}  target"
    print(head)
    print("-" * len(head))

    def row(label: str, st: dict[str, float] | None, unit: str = "", target: str = "") -> None:
        if not st:
            print(f"{label:44} {'-':>12}")
            return
        sp = f"{st['spread_pct']:.0f}%" if st.get("n", 0) > 1 else ""
        print(
            f"{label:44} {fmt(st['median'], unit):>12} {fmt(st['min'], unit):>12} "
            f"{fmt(st['max'], unit):>12} {sp:>7}  {target}"
        )

    row("baseline wall s (flood | cat)", s["baseline_wall_s"])
    row("supd wall s (flood under supd, logs -f)", s["supd_wall_s"])
    ratio = s["ratio_supd_over_cat"]
    mark = ""
    if ratio is not None:
        mark = f"<= {TARGET_RATIO}  " + ("ok" if ratio <= TARGET_RATIO else "MISSED")
    print(f"{'ratio supd/cat (median/median)':44} {fmt(ratio):>12} {'':>12} {'':>12} {'':>7}  {mark}")
    row("ratio supd/cat (per interleaved run)", s["ratio_per_run"])
    row("longest write() stall ms, cat", s["stall_ms_cat"])
    row("longest write() stall ms, supd", s["stall_ms_supd"])
    lps = s["follower_lines_per_s"]
    mark = ""
    if lps:
        mark = f">= {TARGET_FOLLOWER_LPS:,}  " + ("ok" if lps["median"] >= TARGET_FOLLOWER_LPS else "MISSED")
    row("follower lines/s (supctl logs -f)", lps, "lps", mark)
    row("follower lag after flood's last write s", s["follower_lag_s"])
    if res["supd"]:
        n_ok = f"{s['runs_in_order']}/{len(res['supd'])}"
        print(f"{'every line arrived, in order (runs)':44} {n_ok:>12}")
        if s["runs_in_order"] < len(res["supd"]):
            row("  lines that reached the follower, %", s["delivered_pct"], "", "(the rest lost in GAPs)")
    row("supd CPU s per 100 MB (with follower)", s["supd_cpu_s_per_100mb"])
    row("  of which in the kernel (stime), %", s["supd_sys_share_pct"])
    row("supctl logs -f CPU s per 100 MB", s["supctl_cpu_s_per_100mb"])
    row("supd peak RSS MB during a run (follower)", s["supd_rss_mb_peak"])
    if "drain_only_wall_s" in s:
        row("drain only: wall s (no follower)", s["drain_only_wall_s"])
        r2 = s["ratio_drain_only_over_cat"]
        print(f"{'drain only: ratio supd/cat':44} {fmt(r2):>12}")
        row("drain only: longest write() stall ms", s["stall_ms_drain_only"])
        row("drain only: supd CPU s per 100 MB", s["drain_only_supd_cpu_s_per_100mb"])
        row("drain only: supd peak RSS MB during a run", s["drain_only_supd_rss_mb_peak"])
    sc = res.get("selfcheck")
    if sc:
        print(
            f"(checker alone, flood | check_lines: {sc['check']['lines_per_s']:,.0f} lines/s; "
            f"flood wall {sc['flood']['wall_s']:.3f} s)"
        )


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=2_000_000, help="lines per run (100 bytes each)")
    ap.add_argument("--runs", type=int, default=3, help="runs of each kind")
    ap.add_argument("--json", type=pathlib.Path, help="write every figure here as JSON")
    ap.add_argument("--timeout", type=float, default=300.0, help="deadline for one flood, seconds")
    ap.add_argument("--no-drain-only", action="store_true", help="skip the supd-without-follower runs")
    ap.add_argument("--baseline-only", action="store_true", help="do not start supd")
    ap.add_argument(
        "--ring-bytes",
        type=int,
        help="ring size for the flood child (supctl spawn --ring-bytes; default: supd's default ring)",
    )
    ap.add_argument(
        "--py-spy",
        type=pathlib.Path,
        metavar="OUT",
        help="profile supd with py-spy for the whole benchmark; collapsed stacks to OUT",
    )
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--cc", default=os.environ.get("CC", "cc"))
    args = ap.parse_args(argv)
    if args.lines < 1 or args.runs < 1:
        ap.error("--lines and --runs must be >= 1")

    res: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": shlex.join([sys.executable, *sys.argv]),
        "host": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "params": {
            "lines": args.lines,
            "runs": args.runs,
            "bytes_per_run": args.lines * LINE_BYTES,
            "ring_bytes": args.ring_bytes,
        },
        "targets": {"ratio_supd_over_cat_max": TARGET_RATIO, "follower_lines_per_s_min": TARGET_FOLLOWER_LPS},
        "baseline": [],
        "supd": [],
        "drain_only": [],
        "failures": [],
    }
    # A short path: Unix socket paths are limited to ~107 bytes.
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="supd-bench-"))
    failed = False
    spy: subprocess.Popen[bytes] | None = None
    try:
        build(args.cc)
        res["selfcheck"] = run_checker_alone(args.lines, tmp, args.timeout)
        if args.baseline_only:
            for i in range(args.runs):
                res["baseline"].append(run_baseline(args.lines, tmp, i, args.timeout))
        else:
            with running_supd(tmp) as supd:
                res["supd_pid"] = supd.pid
                if args.py_spy:
                    spy = start_py_spy(supd.pid, args.py_spy)
                supd.ring_bytes = args.ring_bytes
                for i in range(args.runs):
                    # Interleaved, so slow phases of a shared machine hit both sides.
                    res["baseline"].append(run_baseline(args.lines, tmp, i, args.timeout))
                    print(
                        f"run {i + 1}/{args.runs}: cat {res['baseline'][-1]['wall_s']:.3f} s",
                        end="",
                        flush=True,
                    )
                    try:
                        with RssSampler(supd.pid) as rss:
                            r = run_under_supd(supd, args.lines, tmp, i, args.timeout)
                    except BenchErrorWithResult as exc:
                        r = exc.result
                        res["failures"].append(str(exc))
                        print(f"\nFAILED: {exc}", flush=True)
                    r["supd_rss_mb_before"], r["supd_rss_mb_peak"] = rss.start_mb, rss.peak_mb
                    res["supd"].append(r)
                    print(
                        f", supd {r['wall_s']:.3f} s, follower {r['follower_lines_per_s']:,.0f} lines/s"
                        f"{'' if r['ok'] else ' (LINES LOST)'}, supd CPU {r['supd_cpu_s']:.2f} s",
                        end="",
                        flush=True,
                    )
                    if not args.no_drain_only:
                        with RssSampler(supd.pid) as rss:
                            d = run_drain_only(supd, args.lines, tmp, i, args.timeout)
                        d["supd_rss_mb_before"], d["supd_rss_mb_peak"] = rss.start_mb, rss.peak_mb
                        res["drain_only"].append(d)
                        print(f", drain only {d['wall_s']:.3f} s", end="", flush=True)
                    print(flush=True)
                supd.assert_alive("after the last run")
                if spy is not None:
                    stop_py_spy(spy, args.py_spy)
                res["supd_peak_rss_mb"] = proc_hwm_mb(supd.pid)
    except BenchError as exc:
        failed = True
        res["failures"].append(str(exc))
        print(f"\nFAILED: {exc}", file=sys.stderr, flush=True)
    finally:
        if args.keep:
            print(f"temporary files kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    if res["baseline"]:
        res["summary"] = summarize(res)
        print_table(res)
        if res.get("supd_peak_rss_mb"):
            print(f"(supd peak RSS {res['supd_peak_rss_mb']:.0f} MB)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(res, indent=2) + "\n")
        print(f"figures written to {args.json}")
    if failed or res["failures"]:
        print("\nFAILED:", file=sys.stderr)
        for f in res["failures"]:
            print(f"  - {f.splitlines()[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
