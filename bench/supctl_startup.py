"""supctl's start-up time against a baseline commit: ``python bench/supctl_startup.py [--runs 40] [--baseline REF]``.

Runs ``python -m supervisor.cli --help`` from this checkout and from REF
(checked out in a temporary git worktree) in turn, with the same interpreter,
and prints the median and minimum CPU time (user+sys, less disturbed by other
load than wall time) and the median wall time of each.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def run_once(tree: pathlib.Path) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "supervisor.cli", "--help"],
        stdout=subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": str(tree)},
        cwd=tempfile.gettempdir(),
        check=True,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--baseline", default="HEAD~1", help="git ref to compare with (default HEAD~1)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = pathlib.Path(tmp) / "baseline"
        git = ["git", "-C", str(ROOT), "worktree"]
        subprocess.run([*git, "add", "-q", "--detach", str(base), args.baseline], check=True)
        try:
            trees = {"baseline": base, "this checkout": ROOT}
            cpu: dict[str, list[float]] = {k: [] for k in trees}
            wall: dict[str, list[float]] = {k: [] for k in trees}
            for tree in trees.values():
                run_once(tree)  # compile and cache the bytecode first
            for _ in range(args.runs):
                for name, tree in trees.items():
                    c, w = run_once(tree)
                    cpu[name].append(c)
                    wall[name].append(w)
        finally:
            subprocess.run([*git, "remove", "--force", str(base)], check=True)
    for name in trees:
        print(
            f"{name}: CPU median {statistics.median(cpu[name]) * 1000:.0f} ms, min {min(cpu[name]) * 1000:.0f} ms; "
            f"wall median {statistics.median(wall[name]) * 1000:.0f} ms ({args.runs} runs)"
        )


if __name__ == "__main__":
    main()
