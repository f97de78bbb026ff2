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

   all of that twice, side by side: once under a supd without OTEL_* variables
   (export off) and once under a supd exporting every child line as an OTLP
   LogRecord to ``otlp_sink.py``, a receiver in its own process (export on);

4. two export scenarios meant to keep the exporter within its means: a burst
   of ``--burst-lines`` lines that supd's export queue (``--burst-queue-lines``)
   holds whole, and a child paced at ``--paced-rate`` lines/s; both with export
   off and on. For every export-on run the accounting must be exact: the sink's
   count of child records == supd's ``export_exported_lines``, and exported +
   dropped == the lines the child wrote, with nothing queued;

5. prints medians, spreads and ratios side by side (export off, export on),
   marks missed targets with MISSED, and exits non-zero only when something
   failed (lines missing or out of order, export accounting not exact, supd
   died, a step timed out), never because a target was missed.

Run: ``/work/venv/bin/python bench/drain.py [--lines N] [--runs R] [--json OUT] [--export both|off|on]
[--protocol grpc|http/protobuf]``.
"""

from __future__ import annotations

import argparse
import contextlib
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
TARGET_STALL_MS = 20.0  # flood's longest single write()
TARGET_EXPORT_LPS = 100_000  # lines/s delivered to the OTLP receiver, with zero drops when it keeps up
SINK_MIN_LPS = 300_000  # the receiver alone must take at least this, or it would be the bottleneck
SIDES = ("off", "on")

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


def flood_cmd(lines: int, report: pathlib.Path, wait: pathlib.Path | None = None, rate: float = 0) -> list[str]:
    cmd = [str(BIN / "flood"), "--lines", str(lines), "--report", str(report)]
    if wait is not None:
        cmd += ["--wait-for", str(wait), "--wait-timeout", "120"]
    if rate:
        cmd += ["--rate", str(rate)]
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


def run_baseline(lines: int, tmp: pathlib.Path, tag: str, timeout: float) -> dict[str, Any]:
    cat = shutil.which("cat") or "/bin/cat"
    flood = run_pipe(lines, tmp, tag, [cat], timeout)
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

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        address: str,
        stderr_path: pathlib.Path,
        handle: Any,
        label: str = "off",
        sink: Any = None,
    ):
        self.proc = proc
        self.address = address
        self.stderr_path = stderr_path
        self.handle = handle  # supervisor.testing.SupervisorProcess, or None
        self.ring_bytes: int | None = None
        self.label = label  # "off", "on", "burst": which supd this is, for tags and file names
        self.sink = sink  # otlp_sink.Sink this supd exports to, or None (export off)

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


def supd_env(otel: dict[str, str] | None = None) -> dict[str, str]:
    """supd's environment on top of ours: every OTEL_* variable of ours blanked (empty means unset), plus ``otel``."""
    env = {k: "" for k in os.environ if k.startswith("OTEL_")}
    env["PYTHONPATH"] = child_env()["PYTHONPATH"]
    env.update(otel or {})
    return env


@contextmanager
def running_supd(
    tmp: pathlib.Path, label: str = "off", sink: Any = None, protocol: str = "grpc", args: list[str] | None = None
) -> Iterator[Supd]:
    """A supd of its own below ``tmp/label``; exporting to ``sink`` (over ``protocol``) if given, else not at all."""
    sys.path.insert(0, str(REPO))
    try:
        from supervisor.testing import running_supervisor
    except Exception as exc:
        raise BenchError(f"cannot import supervisor.testing from {REPO}: {exc!r}") from exc
    home = tmp / label
    home.mkdir(parents=True, exist_ok=True)
    env = supd_env(sink.env(protocol) if sink is not None else None)
    cm: AbstractContextManager[Any] = running_supervisor(home, list(args or []), env=env)
    try:
        handle = cm.__enter__()
    except Exception as exc:
        raise BenchError(f"supd ({label}) did not start: {exc}") from exc
    try:
        yield Supd(handle.proc, handle.address, handle.stderr_path, handle, label=label, sink=sink)
    finally:
        cm.__exit__(None, None, None)


# --------------------------------------------------------------------------- export accounting


def health_summary(info: Any) -> dict[str, int] | None:
    if info is None:
        return None
    return {
        "stdout_lines": int(info.stdout_lines),
        "stderr_lines": int(info.stderr_lines),
        "offered": int(info.export_offered_lines),
        "exported": int(info.export_exported_lines),
        "dropped": int(info.export_dropped_lines),
        "queued": int(info.export_queued_lines),
    }


def wait_drained(supd: Supd, name: str, written: int, tag: str, timeout: float = 120.0) -> dict[str, int] | None:
    """Poll Health (every 50 ms) until supd counted ``written`` stdout lines and, with export on,
    offered them all to the exporter and nothing is queued any more. Health's figures, or None
    without the testing helpers."""
    if supd.handle is None:
        return None
    last: dict[str, int] | None = None

    def done() -> bool:
        nonlocal last
        supd.assert_alive(tag)
        last = health_summary(supd.health(name))
        if last is None or last["stdout_lines"] != written:
            return False
        return supd.sink is None or (last["offered"] == written and last["queued"] == 0)

    what = f"{tag}: supd to count {written} stdout lines" + (" and export them" if supd.sink else "")
    try:
        wait_for(done, timeout, what, interval=0.05)
    except BenchError as exc:
        raise BenchError(f"{exc} (Health: {last})") from exc
    return last


def export_outcome(
    supd: Supd, health: dict[str, int] | None, sink0: dict[str, Any], flood: dict[str, Any], written: int
) -> dict[str, Any]:
    """The export figures of one run, from Health (after the queue drained) and the sink's epoch.

    ``ok``: written == offered == exported + dropped (queued 0), the sink received exactly the
    exported lines, no sequence number twice, none missing.
    """
    st = supd.sink.stats()
    out: dict[str, Any] = {"written": written, "health": health, "sink": st}
    received = st["records"]
    first, last = st["first_mono_s"], st["last_mono_s"]
    h = health or {}
    dropped = h.get("dropped")
    out.update(
        received=received,
        exported=h.get("exported"),
        dropped=dropped,
        dropped_pct=dropped / written * 100 if dropped is not None and written else None,
        accounting_ok=(
            health is not None
            and h["offered"] == written
            and h["queued"] == 0
            and h["exported"] + h["dropped"] == written
            and received == h["exported"]
            and received + h["dropped"] == written
            and st["seq_duplicates"] == 0
            and st["seq_missing"] == 0
            and st["bad_requests"] == 0
        ),
        # first to last request that brought child records, at the sink
        receiver_lines_per_s=(received / (last - first)) if received and last is not None and last > first else None,
        # the child's first numbered write to the sink's last record: lines/s end to end
        lines_per_s_from_child_start=(
            received / (last - flood["start_mono_s"]) if received and last is not None else None
        ),
        # how long after the child's last write the sink had the last record
        export_lag_s=(last - flood["end_mono_s"]) if last is not None else None,
        sink_cpu_s=st["cpu_s"] - sink0["cpu_s"],
    )
    return out


def export_failure(tag: str, e: dict[str, Any]) -> str:
    h = e.get("health") or {}
    st = e["sink"]
    return (
        f"{tag}: export accounting is not exact: written {e['written']}, Health offered {h.get('offered')} "
        f"exported {h.get('exported')} dropped {h.get('dropped')} queued {h.get('queued')}; the sink received "
        f"{e['received']} (sequence numbers seen twice {st['seq_duplicates']}, missing {st['seq_missing']}, "
        f"bad requests {st['bad_requests']})"
    )


def run_under_supd(supd: Supd, lines: int, tmp: pathlib.Path, i: int, timeout: float) -> dict[str, Any]:
    name = f"flood-{i}"
    tag = f"{supd.label}-supd-{i}"
    freport = tmp / f"{tag}.flood.json"
    creport = tmp / f"{tag}.check.json"
    start = tmp / f"{tag}.start"
    ready = tmp / f"{tag}.ready"
    follower_err = tmp / f"{tag}.supctl.stderr"

    supd.assert_alive(tag)
    sink0 = supd.sink.reset() if supd.sink is not None else None
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
        health = None
        if supd.sink is not None:
            # The CPU window goes on until the exporter is done with this child's lines too.
            health = wait_drained(supd, name, lines + int(flood.get("heartbeats", 0)), tag)
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
    problems = []
    if supd.sink is not None and sink0 is not None:
        # Heartbeat lines are child lines too: exported like the numbered ones.
        result["export"] = export_outcome(supd, health, sink0, flood, lines + int(flood.get("heartbeats", 0)))
        if not result["export"]["accounting_ok"]:
            problems.append(export_failure(tag, result["export"]))
    if not result["ok"]:
        short = {k: check.get(k) for k in ("lines", "expected", "in_order", "complete", "first_bad", "bad_reason")}
        problems.insert(
            0,
            f"{tag}: not every line reached check_lines in order through supctl logs -f: {json.dumps(short)}; "
            f"supctl reported {fsum['gaps']} gaps losing {fsum['records_lost']} records"
            + ("" if caught_up or fsum["gaps"] else f" (still missing {tail_timeout:.0f}s after flood ended)")
            + f"\nsupctl logs -f stderr (last lines):\n{result['follower_stderr'][-800:]}",
        )
    if problems:
        raise BenchErrorWithResult("\n".join(problems), result)
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


def run_drain_only(
    supd: Supd, lines: int, tmp: pathlib.Path, tag: str, timeout: float, rate: float = 0
) -> dict[str, Any]:
    """The child under supd with nobody following: the cost of the drain and ring (and export) alone.

    ``rate``: flood's ``--rate`` (0: full speed). supd's CPU window runs from
    just before the spawn until supd counted every line and, with export on,
    the exporter's queue is empty again.
    """
    name = tag
    freport = tmp / f"{tag}.flood.json"
    supd.assert_alive(tag)
    sink0 = supd.sink.reset() if supd.sink is not None else None
    times0 = proc_times_s(supd.pid)
    cpu0 = sum(times0)
    supd.spawn(name, flood_cmd(lines, freport, rate=rate))

    def flood_done() -> dict[str, Any] | None:
        supd.assert_alive(tag)
        return read_json(freport)

    flood = supd.check_flood(wait_for(flood_done, timeout, f"{tag}: flood's report"), lines, tag)
    health = wait_drained(supd, name, lines, tag)
    times1 = proc_times_s(supd.pid)
    cpu1 = sum(times1)
    result: dict[str, Any] = {
        "wall_s": flood["wall_s"],
        "max_write_stall_ms": flood["max_write_stall_ms"],
        "supd_stdout_lines": health["stdout_lines"] if health else None,
        "supd_user_s": times1[0] - times0[0],
        "supd_sys_s": times1[1] - times0[1],
        "supd_cpu_s": cpu1 - cpu0,
        "supd_cpu_s_per_100mb": (cpu1 - cpu0) / (flood["bytes"] / 1e8),
        "flood": flood,
    }
    if supd.sink is not None and sink0 is not None:
        result["export"] = export_outcome(supd, health, sink0, flood, lines)
    supd.supctl("rm", name)
    if "export" in result and not result["export"]["accounting_ok"]:
        raise BenchErrorWithResult(export_failure(tag, result["export"]), result)
    return result


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
        # e.g. PY_SPY_ARGS="--threads --gil": stacks per thread, only the thread holding the GIL
        *shlex.split(os.environ.get("PY_SPY_ARGS", "")),
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
    xs = [x for x in xs if x is not None]
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


def ratio_of_medians(runs: list[dict[str, Any]], base: list[dict[str, Any]]) -> float | None:
    if not runs or not base:
        return None
    return median([r["wall_s"] for r in runs]) / median([b["wall_s"] for b in base])


def export_summary(runs: list[dict[str, Any]], mb: float) -> dict[str, Any]:
    """Export figures over runs that exported (empty when none did)."""
    ex = [r["export"] for r in runs if r.get("export")]
    if not ex:
        return {}
    return {
        "export_runs": len(ex),
        "export_runs_exact": sum(1 for e in ex if e["accounting_ok"]),
        "export_dropped_lines": spread([e["dropped"] for e in ex]),
        "export_dropped_pct": spread([e["dropped_pct"] for e in ex]),
        "export_received_lines": spread([e["received"] for e in ex]),
        "export_receiver_lines_per_s": spread([e["receiver_lines_per_s"] for e in ex]),
        "export_lines_per_s_from_child_start": spread([e["lines_per_s_from_child_start"] for e in ex]),
        "export_lag_s": spread([e["export_lag_s"] for e in ex]),
        "sink_cpu_s_per_100mb": spread([e["sink_cpu_s"] / (mb / 100) for e in ex]),
    }


def drain_summary(runs: list[dict[str, Any]], base: list[dict[str, Any]]) -> dict[str, Any]:
    """Runs without a follower (drain only, burst, paced), compared with ``base`` (cat) if any."""
    if not runs:
        return {}
    mb = runs[0]["flood"]["bytes"] / 1e6
    out = {
        "runs": len(runs),
        "wall_s": spread([r["wall_s"] for r in runs]),
        "ratio_over_cat": ratio_of_medians(runs, base),
        "ratio_per_run": spread([r["wall_s"] / b["wall_s"] for b, r in zip(base, runs, strict=False)]),
        "stall_ms": spread([r["max_write_stall_ms"] for r in runs]),
        "supd_cpu_s_per_100mb": spread([r["supd_cpu_s_per_100mb"] for r in runs]),
        "supd_sys_share_pct": spread([r["supd_sys_s"] / r["supd_cpu_s"] * 100 for r in runs if r.get("supd_cpu_s")]),
        "supd_rss_mb_peak": spread([r.get("supd_rss_mb_peak") for r in runs]),
    }
    out.update(export_summary(runs, mb))
    return out


def followed_summary(runs: list[dict[str, Any]], base: list[dict[str, Any]], lines: int) -> dict[str, Any]:
    """Runs with a follower (``supctl logs -f | check_lines``)."""
    if not runs:
        return {}
    mb = lines * LINE_BYTES / 1e6
    out = {
        "runs": len(runs),
        "wall_s": spread([r["wall_s"] for r in runs]),
        "ratio_over_cat": ratio_of_medians(runs, base),
        "ratio_per_run": spread([r["wall_s"] / b["wall_s"] for b, r in zip(base, runs, strict=False)]),
        "stall_ms": spread([r["max_write_stall_ms"] for r in runs]),
        "follower_lines_per_s": spread([r["follower_lines_per_s"] for r in runs]),
        "follower_lag_s": spread([r["follower_lag_s"] for r in runs]),
        "delivered_pct": spread([r["check"]["lines"] / lines * 100 for r in runs if r.get("check")]),
        "all_in_order": all(r["ok"] for r in runs),
        "runs_in_order": sum(1 for r in runs if r["ok"]),
        "supd_cpu_s_per_100mb": spread([r["supd_cpu_s_per_100mb"] for r in runs]),
        "supd_sys_share_pct": spread([r["supd_sys_s"] / r["supd_cpu_s"] * 100 for r in runs if r.get("supd_cpu_s")]),
        "supctl_cpu_s_per_100mb": spread(
            [r["supctl_cpu_s"] / (r["flood"]["bytes"] / 1e8) for r in runs if r["supctl_cpu_s"] is not None]
        ),
        "supd_rss_mb_peak": spread([r.get("supd_rss_mb_peak") for r in runs]),
    }
    out.update(export_summary(runs, mb))
    return out


def summarize(res: dict[str, Any]) -> dict[str, Any]:
    lines = res["params"]["lines"]
    base = res["baseline"]
    summ: dict[str, Any] = {"baseline_wall_s": spread([r["wall_s"] for r in base])}
    summ["stall_ms_cat"] = spread([r["max_write_stall_ms"] for r in base])
    for side, followed, drain in (("off", "supd", "drain_only"), ("on", "supd_export", "drain_only_export")):
        summ[side] = {
            "followed": followed_summary(res[followed], base, lines),
            "drain_only": drain_summary(res[drain], base),
        }
    burst = res["burst"]
    summ["burst"] = {
        "baseline_wall_s": spread([r["wall_s"] for r in burst["baseline"]]),
        "stall_ms_cat": spread([r["max_write_stall_ms"] for r in burst["baseline"]]),
        **{side: drain_summary(burst[side], burst["baseline"]) for side in SIDES},
    }
    summ["paced"] = {side: drain_summary(res["paced"][side], []) for side in SIDES}
    # The child's wall time with export on over the same with export off, same run: what export adds.
    pairs = {
        "followed": (res["supd"], res["supd_export"]),
        "drain_only": (res["drain_only"], res["drain_only_export"]),
        "burst": (burst["off"], burst["on"]),
    }
    summ["on_over_off"] = {k: ratio_of_medians(on, off) for k, (off, on) in pairs.items() if off and on}
    return summ


def fmt(x: float | None, unit: str = "") -> str:
    if x is None or x != x:  # None or NaN
        return "-"
    if unit == "lps":
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.3f}"


LABEL_W, CELL_W = 47, 33


def cell(st: dict[str, float] | float | str | None, unit: str = "") -> str:
    """median [min..max] of a spread, or a plain figure."""
    if st is None or st == {}:
        return "-"
    if isinstance(st, str):
        return st
    if isinstance(st, (int, float)):
        return fmt(st, unit)
    if st.get("n", 0) > 1:
        return f"{fmt(st['median'], unit)} [{fmt(st['min'], unit)}..{fmt(st['max'], unit)}]"
    return fmt(st["median"], unit)


def verdict(values: dict[str, Any], limit: float, at_most: bool, unit: str = "") -> str:
    """'<= 1.25: off ok, on MISSED', judged on the median of each side that has one."""
    marks = []
    for side, v in values.items():
        x = v.get("median") if isinstance(v, dict) else v
        if x is None or x != x:
            continue
        good = x <= limit if at_most else x >= limit
        marks.append(f"{side} {'ok' if good else 'MISSED'}")
    if not marks:
        return ""
    shown = f"{limit:,.0f}" if limit == int(limit) else f"{limit:g}"
    return f"{'<=' if at_most else '>='} {shown}: " + ", ".join(marks)


def row(label: str, off: Any, on: Any, unit: str = "", target: str = "") -> None:
    print(f"{label:{LABEL_W}} {cell(off, unit):>{CELL_W}} {cell(on, unit):>{CELL_W}}  {target}")


def print_table(res: dict[str, Any]) -> None:
    s = res["summary"]
    p = res["params"]
    mb = p["lines"] * LINE_BYTES / 1e6
    print()
    exporting = p["export"] in ("both", "on")
    print(
        f"drain benchmark: {p['runs']} runs, {res['host']['cpus']} CPUs; "
        + (
            f"export on = every child line as an OTLP LogRecord over {p['protocol']} to bench/otlp_sink.py "
            f"(a separate process), supd --export-queue-lines {p['export_queue_lines'] or 'default (131072)'}"
            if exporting
            else "export off only"
        )
    )
    print("cells: median [min..max] over the runs")
    head = f"{'figure':{LABEL_W}} {'export off':>{CELL_W}} {'export on':>{CELL_W}}  target"

    def section(title: str) -> None:
        print()
        print(title)
        print(head)
        print("-" * (len(head) + 30))

    def both(sub: str, key: str) -> tuple[Any, Any]:
        return s["off"][sub].get(key), s["on"][sub].get(key)

    def runs_ok(d: dict[str, Any], key: str, total: str) -> str | None:
        return f"{d[key]}/{d[total]}" if d.get(total) else None

    def target_row(label: str, off: Any, on: Any, limit: float, at_most: bool, unit: str = "") -> None:
        row(label, off, on, unit, verdict({"off": off or {}, "on": on or {}}, limit, at_most, unit))

    def export_rows(prefix: str, off: dict[str, Any], on: dict[str, Any], zero_drops: bool, lps_target: bool) -> None:
        if not on.get("export_runs"):
            return
        exact = runs_ok(on, "export_runs_exact", "export_runs")
        row(f"{prefix}received + dropped == written, exact (runs)", None, exact)
        dropped = on.get("export_dropped_lines")
        tgt = verdict({"on": dropped}, 0, True) if zero_drops else ""
        row(f"{prefix}lines dropped by the exporter", None, dropped, "lps", tgt)
        row(f"{prefix}  dropped, % of written", None, on.get("export_dropped_pct"))
        row(f"{prefix}lines received by the sink", None, on.get("export_received_lines"), "lps")
        lps = on.get("export_lines_per_s_from_child_start")
        tgt = verdict({"on": lps}, TARGET_EXPORT_LPS, False, "lps") if lps_target else ""
        row(f"{prefix}lines/s, child start..last record at sink", None, lps, "lps", tgt)
        row(f"{prefix}lines/s at the sink (first..last record)", None, on.get("export_receiver_lines_per_s"), "lps")
        row(f"{prefix}lag after the child's last write s", None, on.get("export_lag_s"))
        row(f"{prefix}otlp_sink CPU s per 100 MB", None, on.get("sink_cpu_s_per_100mb"))

    if "flood" in p["scenarios"] and s.get("baseline_wall_s"):
        section(
            f"scenario 1, full-speed flood: {p['lines']:,} lines x {LINE_BYTES} B = {mb:.0f} MB per run"
            + (f", ring {p['ring_bytes']} B" if p["ring_bytes"] else "")
        )
        base = s["baseline_wall_s"]
        row("baseline wall s (flood | cat, one for both)", base, base)
        row("longest write() stall ms, cat", s["stall_ms_cat"], s["stall_ms_cat"])
        f_off, f_on = s["off"]["followed"], s["on"]["followed"]
        if f_off or f_on:
            print("followed (supctl logs -f | check_lines):")
            row("  supd wall s", *both("followed", "wall_s"))
            target_row("  ratio supd/cat (median/median)", *both("followed", "ratio_over_cat"), TARGET_RATIO, True)
            row("  ratio supd/cat (per interleaved run)", *both("followed", "ratio_per_run"))
            row("  ratio export on/off (median/median)", None, s["on_over_off"].get("followed"))
            target_row("  longest write() stall ms", *both("followed", "stall_ms"), TARGET_STALL_MS, True)
            target_row(
                "  follower lines/s",
                *both("followed", "follower_lines_per_s"),
                TARGET_FOLLOWER_LPS,
                False,
                "lps",
            )
            row("  follower lag after flood's last write s", *both("followed", "follower_lag_s"))
            row(
                "  every line arrived, in order (runs)",
                runs_ok(f_off, "runs_in_order", "runs"),
                runs_ok(f_on, "runs_in_order", "runs"),
            )
            if not (f_off.get("all_in_order", True) and f_on.get("all_in_order", True)):
                row("    lines that reached the follower, %", *both("followed", "delivered_pct"), "", "(rest: GAPs)")
            row("  supd CPU s per 100 MB", *both("followed", "supd_cpu_s_per_100mb"))
            row("    of which in the kernel (stime), %", *both("followed", "supd_sys_share_pct"))
            row("  supctl logs -f CPU s per 100 MB", *both("followed", "supctl_cpu_s_per_100mb"))
            row("  supd peak RSS MB during a run", *both("followed", "supd_rss_mb_peak"))
            export_rows("  export: ", f_off, f_on, False, False)
        d_off, d_on = s["off"]["drain_only"], s["on"]["drain_only"]
        if d_off or d_on:
            print("drain only (no follower):")
            row("  supd wall s", *both("drain_only", "wall_s"))
            target_row("  ratio supd/cat (median/median)", *both("drain_only", "ratio_over_cat"), TARGET_RATIO, True)
            row("  ratio supd/cat (per interleaved run)", *both("drain_only", "ratio_per_run"))
            row("  ratio export on/off (median/median)", None, s["on_over_off"].get("drain_only"))
            target_row("  longest write() stall ms", *both("drain_only", "stall_ms"), TARGET_STALL_MS, True)
            row("  supd CPU s per 100 MB", *both("drain_only", "supd_cpu_s_per_100mb"))
            row("    of which in the kernel (stime), %", *both("drain_only", "supd_sys_share_pct"))
            row("  supd peak RSS MB during a run", *both("drain_only", "supd_rss_mb_peak"))
            export_rows("  export: ", d_off, d_on, False, False)

    b = s["burst"]
    if "burst" in p["scenarios"] and (b["off"] or b["on"]):
        section(
            f"scenario 2, burst the export queue holds: {p['burst_lines']:,} lines ({p['burst_lines'] / 1e4:.0f} MB)"
            f" at full speed, no follower; export on: supd --export-queue-lines {p['burst_queue_lines']:,}"
        )
        row("baseline wall s (flood | cat, one for both)", b["baseline_wall_s"], b["baseline_wall_s"])
        row("supd wall s", b["off"].get("wall_s"), b["on"].get("wall_s"))
        row("ratio supd/cat (median/median)", b["off"].get("ratio_over_cat"), b["on"].get("ratio_over_cat"))
        row("ratio export on/off (median/median)", None, s["on_over_off"].get("burst"))
        target_row("longest write() stall ms", b["off"].get("stall_ms"), b["on"].get("stall_ms"), TARGET_STALL_MS, True)
        row("supd CPU s per 100 MB", b["off"].get("supd_cpu_s_per_100mb"), b["on"].get("supd_cpu_s_per_100mb"))
        row(
            "  of which in the kernel (stime), %", b["off"].get("supd_sys_share_pct"), b["on"].get("supd_sys_share_pct")
        )
        export_rows("export: ", b["off"], b["on"], True, True)

    pc = s["paced"]
    if "paced" in p["scenarios"] and (pc["off"] or pc["on"]):
        section(
            f"scenario 3, paced child: {p['paced_lines']:,} lines at {p['paced_rate']:,.0f} lines/s "
            f"({p['paced_lines'] / p['paced_rate']:.1f} s), no follower, export queue as in scenario 1"
        )
        row("supd wall s (the pace sets it)", pc["off"].get("wall_s"), pc["on"].get("wall_s"))
        target_row(
            "longest write() stall ms", pc["off"].get("stall_ms"), pc["on"].get("stall_ms"), TARGET_STALL_MS, True
        )
        row("supd CPU s per 100 MB", pc["off"].get("supd_cpu_s_per_100mb"), pc["on"].get("supd_cpu_s_per_100mb"))
        row(
            "  of which in the kernel (stime), %",
            pc["off"].get("supd_sys_share_pct"),
            pc["on"].get("supd_sys_share_pct"),
        )
        export_rows("export: ", pc["off"], pc["on"], True, False)

    print()
    sc = res.get("selfcheck")
    if sc:
        print(
            f"(checker alone, flood | check_lines: {sc['check']['lines_per_s']:,.0f} lines/s; "
            f"flood wall {sc['flood']['wall_s']:.3f} s)"
        )
    sk = res.get("sink_selfcheck")
    if sk:
        best = max(r["records_per_s"] for r in sk)
        note = "" if best >= SINK_MIN_LPS else f"  BELOW {SINK_MIN_LPS:,}: the sink may be the bottleneck"
        print(
            f"(otlp_sink alone, fed by one {sk[0]['protocol']} client with supd-encoded requests of 4,096 records: "
            + ", ".join(f"{r['records_per_s']:,.0f}" for r in sk)
            + f" records/s{note})"
        )
    for label, hwm in res.get("supd_peak_rss_mb", {}).items():
        if hwm:
            print(f"(supd {label}: peak RSS {hwm:.0f} MB over the whole benchmark)")


# --------------------------------------------------------------------------- main


def py_spy_path(out: pathlib.Path, label: str, several: bool) -> pathlib.Path:
    return out.with_name(f"{out.stem}.{label}{out.suffix}") if several else out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=2_000_000, help="lines per run (100 bytes each)")
    ap.add_argument("--runs", type=int, default=3, help="runs of each kind")
    ap.add_argument("--json", type=pathlib.Path, help="write every figure here as JSON")
    ap.add_argument("--timeout", type=float, default=300.0, help="deadline for one flood, seconds")
    ap.add_argument("--no-drain-only", action="store_true", help="skip the supd-without-follower runs")
    ap.add_argument(
        "--no-follower", action="store_true", help="scenario 1: skip the runs with a follower (supctl logs -f)"
    )
    ap.add_argument("--baseline-only", action="store_true", help="do not start supd")
    ap.add_argument(
        "--ring-bytes",
        type=int,
        help="ring size for the flood child (supctl spawn --ring-bytes; default: supd's default ring)",
    )
    ap.add_argument(
        "--export",
        choices=("both", "off", "on"),
        default="both",
        help="measure supd with OTLP export off, on (to bench/otlp_sink.py), or both side by side (default)",
    )
    ap.add_argument("--protocol", choices=("grpc", "http/protobuf"), default="grpc", help="OTLP protocol")
    ap.add_argument(
        "--scenarios",
        default="flood,burst,paced",
        help="comma-separated: flood (full speed, --lines), burst (--burst-lines), paced (--paced-rate)",
    )
    ap.add_argument(
        "--export-queue-lines",
        type=int,
        help="supd --export-queue-lines for the export-on supd of scenarios 1 and 3 (default: supd's, 131072)",
    )
    ap.add_argument("--burst-lines", type=int, default=300_000, help="scenario 2: lines in the burst")
    ap.add_argument(
        "--burst-queue-lines",
        type=int,
        default=400_000,
        help="scenario 2: supd --export-queue-lines (>= --burst-lines, so the queue holds the burst)",
    )
    ap.add_argument("--paced-lines", type=int, default=500_000, help="scenario 3: lines")
    ap.add_argument("--paced-rate", type=float, default=100_000, help="scenario 3: flood --rate, lines/s")
    ap.add_argument(
        "--py-spy",
        type=pathlib.Path,
        metavar="OUT",
        help="profile supd with py-spy for the whole benchmark; collapsed stacks to OUT "
        "(OUT.off, OUT.on, OUT.burst before the suffix when several supds run)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--cc", default=os.environ.get("CC", "cc"))
    args = ap.parse_args(argv)
    if args.lines < 1 or args.runs < 1:
        ap.error("--lines and --runs must be >= 1")
    scenarios = [x.strip() for x in args.scenarios.split(",") if x.strip()]
    if not scenarios or set(scenarios) - {"flood", "burst", "paced"}:
        ap.error("--scenarios: a comma-separated list of flood, burst, paced")
    if args.burst_lines < 1 or args.paced_lines < 1 or args.paced_rate <= 0:
        ap.error("--burst-lines, --paced-lines and --paced-rate must be > 0")
    if args.burst_queue_lines < args.burst_lines:
        print(
            f"warning: --burst-queue-lines {args.burst_queue_lines} < --burst-lines {args.burst_lines}: "
            "the queue cannot hold the burst, expect drops",
            flush=True,
        )
    sides = [side for side in SIDES if args.export in ("both", side)]
    if args.baseline_only:
        scenarios = ["flood"]

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
            "export": args.export,
            "protocol": args.protocol,
            "scenarios": scenarios,
            "export_queue_lines": args.export_queue_lines,
            "burst_lines": args.burst_lines,
            "burst_queue_lines": args.burst_queue_lines,
            "paced_lines": args.paced_lines,
            "paced_rate": args.paced_rate,
        },
        "targets": {
            "ratio_supd_over_cat_max": TARGET_RATIO,
            "follower_lines_per_s_min": TARGET_FOLLOWER_LPS,
            "max_write_stall_ms_max": TARGET_STALL_MS,
            "export_lines_per_s_min": TARGET_EXPORT_LPS,
            "export_dropped_lines_when_keeping_up": 0,
        },
        # scenario 1: cat, then export off (followed, drain only) and export on (followed, drain only)
        "baseline": [],
        "supd": [],
        "drain_only": [],
        "supd_export": [],
        "drain_only_export": [],
        "burst": {"baseline": [], "off": [], "on": []},
        "paced": {"off": [], "on": []},
        "failures": [],
    }
    # A short path: Unix socket paths are limited to ~107 bytes.
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="supd-bench-"))
    failed = False
    spies: list[tuple[subprocess.Popen[bytes], pathlib.Path]] = []

    def measured(
        where: list[dict[str, Any]], run: Callable[..., dict[str, Any]], supd: Supd, *run_args: Any, **kw: Any
    ) -> dict[str, Any]:
        """``run(supd, *run_args, **kw)`` with supd's RSS sampled; a failed check is recorded, the benchmark goes on."""
        try:
            with RssSampler(supd.pid) as rss:
                r = run(supd, *run_args, **kw)
        except BenchErrorWithResult as exc:
            r = exc.result
            res["failures"].append(str(exc))
            print(f"\nFAILED: {exc}", flush=True)
        r["supd_rss_mb_before"], r["supd_rss_mb_peak"] = rss.start_mb, rss.peak_mb
        where.append(r)
        return r

    def export_note(r: dict[str, Any]) -> str:
        e = r.get("export")
        if not e:
            return ""
        lps = e["lines_per_s_from_child_start"]
        return (
            f" (export: {e['received']:,} received, {e['dropped']:,} dropped"
            + (f", {lps:,.0f} lines/s" if lps and not r["flood"].get("heartbeats") else "")
            + ("" if e["accounting_ok"] else ", ACCOUNTING NOT EXACT")
            + ")"
        )

    try:
        build(args.cc)
        res["selfcheck"] = run_checker_alone(args.lines, tmp, args.timeout)
        if args.baseline_only:
            for i in range(args.runs):
                res["baseline"].append(run_baseline(args.lines, tmp, f"cat-{i}", args.timeout))
        else:
            with contextlib.ExitStack() as stack:
                supds: dict[str, Supd] = {}
                sink = None
                if "on" in sides:
                    sys.path.insert(0, str(BENCH))
                    import otlp_sink

                    sink = stack.enter_context(otlp_sink.Sink(http=args.protocol != "grpc"))
                    bodies = otlp_sink.encoded_batches(163_840)
                    res["sink_selfcheck"] = [
                        otlp_sink.measure_capacity(sink, args.protocol, bodies, 163_840) for _ in range(3)
                    ]
                    del bodies
                    rates = ", ".join(f"{r['records_per_s']:,.0f}" for r in res["sink_selfcheck"])
                    print(f"otlp_sink alone ({args.protocol}): {rates} records/s", flush=True)
                    if not all(r["ok"] for r in res["sink_selfcheck"]):
                        raise BenchError(f"otlp_sink miscounted its self-test: {res['sink_selfcheck']}")
                if "off" in sides:
                    supds["off"] = stack.enter_context(running_supd(tmp, "off"))
                if "on" in sides:
                    queue = ["--export-queue-lines", str(args.export_queue_lines)] if args.export_queue_lines else []
                    if "flood" in scenarios or "paced" in scenarios:
                        supds["on"] = stack.enter_context(running_supd(tmp, "on", sink, args.protocol, queue))
                    if "burst" in scenarios:
                        if args.export_queue_lines == args.burst_queue_lines and "on" in supds:
                            supds["burst"] = supds["on"]
                        else:
                            burst_queue = ["--export-queue-lines", str(args.burst_queue_lines)]
                            supds["burst"] = stack.enter_context(
                                running_supd(tmp, "burst", sink, args.protocol, burst_queue)
                            )
                res["supd_pids"] = {label: supd.pid for label, supd in supds.items()}
                for label, supd in supds.items():
                    supd.ring_bytes = args.ring_bytes
                    if args.py_spy:
                        out = py_spy_path(args.py_spy, label, len(supds) > 1)
                        spies.append((start_py_spy(supd.pid, out), out))

                for i in range(args.runs):
                    # Interleaved, and the order of off and on alternates, so slow phases of a shared
                    # machine hit both sides.
                    order = sides if i % 2 == 0 else sides[::-1]
                    if "flood" in scenarios:
                        res["baseline"].append(run_baseline(args.lines, tmp, f"cat-{i}", args.timeout))
                        print(f"run {i + 1}/{args.runs} flood: cat {res['baseline'][-1]['wall_s']:.3f} s", end="")
                        for side in order:
                            supd = supds[side]
                            print(f" | {side}:", end="")
                            if not args.no_follower:
                                followed = res["supd" if side == "off" else "supd_export"]
                                r = measured(followed, run_under_supd, supd, args.lines, tmp, i, args.timeout)
                                print(
                                    f" supd {r['wall_s']:.3f} s, follower {r['follower_lines_per_s']:,.0f} "
                                    f"lines/s{'' if r['ok'] else ' (LINES LOST)'}, CPU {r['supd_cpu_s']:.2f} s"
                                    + export_note(r),
                                    end="",
                                    flush=True,
                                )
                            if not args.no_drain_only:
                                drains = res["drain_only" if side == "off" else "drain_only_export"]
                                d = measured(
                                    drains, run_drain_only, supd, args.lines, tmp, f"{side}-drain-{i}", args.timeout
                                )
                                print(
                                    f" drain only {d['wall_s']:.3f} s, CPU {d['supd_cpu_s']:.2f} s" + export_note(d),
                                    end="",
                                    flush=True,
                                )
                        print(flush=True)
                    if "burst" in scenarios:
                        burst = res["burst"]
                        burst["baseline"].append(run_baseline(args.burst_lines, tmp, f"burst-cat-{i}", args.timeout))
                        print(f"run {i + 1}/{args.runs} burst: cat {burst['baseline'][-1]['wall_s']:.4f} s", end="")
                        for side in order:
                            supd = supds["off" if side == "off" else "burst"]
                            r = measured(
                                burst[side],
                                run_drain_only,
                                supd,
                                args.burst_lines,
                                tmp,
                                f"{side}-burst-{i}",
                                args.timeout,
                            )
                            print(f" | {side}: supd {r['wall_s']:.4f} s" + export_note(r), end="", flush=True)
                        print(flush=True)
                    if "paced" in scenarios:
                        print(f"run {i + 1}/{args.runs} paced:", end="")
                        for side in order:
                            supd = supds[side]
                            r = measured(
                                res["paced"][side],
                                run_drain_only,
                                supd,
                                args.paced_lines,
                                tmp,
                                f"{side}-paced-{i}",
                                args.timeout,
                                rate=args.paced_rate,
                            )
                            print(
                                f" | {side}: supd {r['wall_s']:.3f} s, CPU {r['supd_cpu_s']:.2f} s" + export_note(r),
                                end="",
                                flush=True,
                            )
                        print(flush=True)
                for label, supd in supds.items():
                    supd.assert_alive(f"supd ({label}) after the last run")
                for spy, out in spies:
                    stop_py_spy(spy, out)
                spies.clear()
                res["supd_peak_rss_mb"] = {label: proc_hwm_mb(supd.pid) for label, supd in supds.items()}
    except BenchError as exc:
        failed = True
        res["failures"].append(str(exc))
        print(f"\nFAILED: {exc}", file=sys.stderr, flush=True)
    finally:
        for spy, out in spies:
            stop_py_spy(spy, out)
        if args.keep:
            print(f"temporary files kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    if res["baseline"] or res["burst"]["baseline"] or res["paced"]["off"] or res["paced"]["on"]:
        res["summary"] = summarize(res)
        print_table(res)
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
