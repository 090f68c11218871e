#!/usr/bin/env python
"""Is a change slower? Time ``convvol.convolve`` of two source trees, interleaved.

Run from the repository root, with the other tree checked out somewhere (a worktree):

    git worktree add /tmp/before <commit>
    python benchmarks/compare_trees.py /tmp/before/src src --only W2,W3 --rounds 5

Each round runs every workload once per tree, alternating which tree goes first, each in
a fresh child process (``PYTHONPATH`` set to the tree): one warm-up call, then the
median of ``--repeats`` timed calls. What the machine is doing drifts over minutes, so
alternating keeps both trees under the same conditions; the ratio of medians of rounds
is the answer, and the spread of the per-round ratios says how much to trust it. The
workloads are bench.py's (same sizes, seeds and banks), without the anchors.

On a machine other jobs load, wall times swing by 2× from round to round; ``--cpu`` times
the process's CPU (every thread's, ``time.process_time``) instead, which the load
inflates far less: the work a change adds or saves, rather than how long it took.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

CHILD = """
import json, sys, time, statistics
sys.path.insert(0, {bench!r})
import numpy as np
import bench
import convvol
workload = bench.WORKLOADS[{key!r}]
volume, weights = bench.make_inputs(workload, quick=False)
convvol.convolve(volume, weights)
clock = time.{clock}
times = []
for _ in range({repeats}):
    started = clock()
    convvol.convolve(volume, weights)
    times.append(clock() - started)
print(json.dumps(statistics.median(times)))
"""


def time_tree(tree: str, key: str, repeats: int, cpu: bool = False) -> float:
    """The median seconds (wall, or CPU with ``cpu``) of one workload with the convvol of
    ``tree``, in a fresh child."""
    clock = "process_time" if cpu else "perf_counter"
    code = CHILD.format(bench=str(HERE), key=key, repeats=repeats, clock=clock)
    env = {**os.environ, "PYTHONPATH": os.path.abspath(tree)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, check=True)  # fmt: skip
    return float(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", help="the first tree's src/ directory")
    parser.add_argument("after", help="the second tree's src/ directory")
    parser.add_argument("--only", default="W1,W2,W3,W4,W5", help="workloads, e.g. W2,W3")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cpu", action="store_true", help="CPU seconds instead of wall")
    args = parser.parse_args()
    keys = [key.strip() for key in args.only.split(",") if key.strip()]
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    kind = "CPU s" if args.cpu else "s"
    print(
        f"{'workload':8}  {'before ' + kind:>11}  {'after ' + kind:>11}  {'after/before':>12}  "
        "per-round ratios"
    )
    for key in keys:
        before, after, ratios = [], [], []
        for round_number in range(args.rounds):
            order = [("before", args.before), ("after", args.after)]
            if round_number % 2:
                order.reverse()
            seconds = {name: time_tree(tree, key, args.repeats, args.cpu) for name, tree in order}
            before.append(seconds["before"])
            after.append(seconds["after"])
            ratios.append(seconds["after"] / seconds["before"])
        b, a = statistics.median(before), statistics.median(after)
        shown = " ".join(f"{r:.2f}" for r in ratios)
        print(f"{key:8}  {b:11.4f}  {a:11.4f}  {a / b:12.2f}  {shown}")
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
