"""How long supd takes to start and to stop N idle children, against its --shutdown-timeout.

    python bench/shutdown.py --children 400 --shutdown-timeout 2 --runs 3

Each run writes a config of N ``sleep`` children, starts supd on a private
socket, waits until every child runs, sends SIGTERM and measures until supd has
exited; it also checks that no child survived. Printed: start time (supd
launch to N children RUNNING, polling List every 50 ms as a client watching
would; and, from supd's log, to its last ``child.spawned``, which the polling
does not delay beyond its share of the loop), the median latency of a List of all N once they run, and exit time
(SIGTERM to exit) per run, and the medians.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import signal
import statistics
import sys
import tempfile
import time

from supervisor._daemon.children.sessions import read_stat
from supervisor.testing import running_supervisor, wait_until
from supervisor.v1 import supervisor_pb2 as pb
from supervisor.v1 import supervisor_pb2_grpc as pb_grpc


def alive(pid: int) -> bool:
    member = read_stat(pid)
    return member is not None and not member.zombie


LIST_CALLS = 20


def last_spawn(log: str) -> float:
    """Wall-clock time (s since the epoch) of the last ``child.spawned`` in supd's JSON log."""
    stamps = [
        datetime.datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp()
        for e in (json.loads(line) for line in log.splitlines() if line.startswith("{"))
        if e.get("event") == "child.spawned"
    ]
    return max(stamps)


def one_run(children: int, timeout: float) -> tuple[float, float, float, int, float]:
    with tempfile.TemporaryDirectory(prefix="supd-bench-") as tmp:
        tmp_path = pathlib.Path(tmp)
        config = tmp_path / "children.toml"
        config.write_text(
            "".join(f'[children.s{i}]\nargv = ["sleep", "100000"]\nstop_grace_seconds = 5\n' for i in range(children))
        )
        launched, launched_wall = time.monotonic(), time.time()
        args = ["--config", str(config), "--shutdown-timeout", str(timeout)]
        with running_supervisor(tmp_path, args, start_timeout=120) as handle, handle.channel() as channel:
            stub = pb_grpc.SupervisorStub(channel)

            def all_running() -> list[pb.ChildInfo] | None:
                infos = list(stub.List(pb.ListRequest(), timeout=30).children)
                ok = len(infos) == children and all(c.state == pb.CHILD_STATE_RUNNING for c in infos)
                return infos if ok else None

            infos = wait_until(all_running, 120, interval=0.05, what=f"{children} children running")
            started = time.monotonic() - launched
            spawned = last_spawn(handle.stderr_text()) - launched_wall
            pids = [c.pid for c in infos]
            took = []
            for _ in range(LIST_CALLS):  # what a List of every child costs once they all run
                t0 = time.perf_counter()
                stub.List(pb.ListRequest(), timeout=30)
                took.append(time.perf_counter() - t0)
            list_ms = statistics.median(took) * 1000
            begun = time.monotonic()
            handle.proc.send_signal(signal.SIGTERM)
            code = handle.proc.wait(120)
            stopped = time.monotonic() - begun
            if code != 0:
                raise SystemExit(f"supd exited with {code}: {handle.stderr_text()[-3000:]}")
        survivors = sum(alive(p) for p in pids)
        return started, spawned, stopped, survivors, list_ms


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--children", type=int, default=400)
    parser.add_argument("--shutdown-timeout", type=float, default=2.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"{args.children} idle children, --shutdown-timeout {args.shutdown_timeout:g}, {os.cpu_count()} CPUs")
    starts, spawns, stops, lists = [], [], [], []
    for run in range(args.runs):
        started, spawned, stopped, survivors, list_ms = one_run(args.children, args.shutdown_timeout)
        starts.append(started)
        spawns.append(spawned)
        stops.append(stopped)
        lists.append(list_ms)
        print(
            f"run {run + 1}: start {started:.2f}s (last spawn {spawned:.2f}s)  exit {stopped:.2f}s"
            f"  survivors {survivors}  List {list_ms:.1f} ms"
        )
        if survivors:
            return 1
    print(
        f"median: start {statistics.median(starts):.2f}s (last spawn {statistics.median(spawns):.2f}s)"
        f"  exit {statistics.median(stops):.2f}s  List p50 {statistics.median(lists):.1f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
