"""Summarise py-spy raw (collapsed) stacks: where the samples go, by thread, by function, by file:function.

Usage: ``/work/venv/bin/python bench/stacks.py STACKS [--thread SUBSTR] [--top N] [--self]``

A raw py-spy line is ``frame;frame;...;leaf COUNT`` (with ``--threads`` the first
frame names the thread). Shares are of all samples (or of the thread's, with
``--thread``). ``--self`` ranks leaf frames (self time) instead of inclusive time.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys


def parse(path: str) -> list[tuple[list[str], int]]:
    out = []
    with open(path) as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not line:
                continue
            stack, _, count = line.rpartition(" ")
            out.append((stack.split(";"), int(count)))
    return out


def short(frame: str) -> str:
    """'func (path/to/file.py:123)' -> 'file.py:func'."""
    m = re.match(r"(.*) \((.*?):?(\d+)?\)$", frame)
    if not m:
        return frame
    func, path = m.group(1), m.group(2)
    return f"{path.rsplit('/', 1)[-1]}:{func}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("stacks")
    ap.add_argument("--thread", help="only stacks whose first frame (the thread, with py-spy --threads) has this")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--self", action="store_true", help="rank leaf frames (self time)")
    args = ap.parse_args(argv)
    stacks = parse(args.stacks)
    threads: collections.Counter[str] = collections.Counter()
    for frames, n in stacks:
        threads[frames[0] if frames[0].startswith("thread") or "process" in frames[0] else "?"] += n
    total_all = sum(n for _, n in stacks)
    print(f"{total_all} samples")
    for t, n in threads.most_common(10):
        print(f"  {n / total_all * 100:5.1f}%  {t}")
    if args.thread:
        stacks = [(f, n) for f, n in stacks if args.thread in f[0]]
    total = sum(n for _, n in stacks) or 1
    ranked: collections.Counter[str] = collections.Counter()
    for frames, n in stacks:
        names = [short(fr) for fr in frames[1:]] if frames and frames[0].startswith("thread") else map(short, frames)
        names = list(names)
        if args.self:
            if names:
                ranked[names[-1]] += n
        else:
            for name in set(names):
                ranked[name] += n
    print(
        f"{'self' if args.self else 'inclusive'} share of {total} samples"
        + (f" in {args.thread}" if args.thread else "")
    )
    for name, n in ranked.most_common(args.top):
        print(f"  {n / total * 100:5.1f}%  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
