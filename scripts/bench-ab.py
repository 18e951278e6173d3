#!/usr/bin/env python3
"""Whole-process commands side by side, alternating (so all see the same machine load):

    python3 scripts/bench-ab.py ROUNDS -- NAME CMD... -- NAME CMD... [-- ...]

Runs each command once per round, in turn, from the repository root, and prints for each the
median wall time (and the fastest), the median CPU time (user + system, from `wait4`) and the
largest peak RSS. Used to compare two builds of `cutover` (copy each binary aside first), e.g.:

    python3 scripts/bench-ab.py 11 -- before /tmp/cutover-before replay \\
        scripts/bench/filter-only.toml --summary TRACE -- now target/release/cutover replay \\
        scripts/bench/filter-only.toml --summary TRACE

A command that exits non-zero stops the run.
"""
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def commands(args):
    """(name, argv) pairs from `-- NAME CMD... -- NAME CMD...`."""
    out, current = [], []
    for arg in args + ["--"]:
        if arg == "--":
            if current:
                if len(current) < 2:
                    sys.exit(f"a command needs a name and a program: {current}")
                out.append((current[0], current[1:]))
            current = []
        else:
            current.append(arg)
    return out


def run(argv):
    """Wall seconds, CPU seconds and peak RSS (MB) of one run."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"{argv} exited with {code}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main():
    if len(sys.argv) < 3 or sys.argv[2] != "--":
        sys.exit(__doc__)
    rounds = int(sys.argv[1])
    cmds = commands(sys.argv[3:])
    results = {name: [] for name, _ in cmds}
    for _ in range(rounds):
        for name, argv in cmds:
            results[name].append(run(argv))
    for name, runs in results.items():
        walls = [w for w, _, _ in runs]
        print(f"{name:24} wall median {statistics.median(walls) * 1000:8.1f} ms "
              f"(fastest {min(walls) * 1000:7.1f})  cpu median "
              f"{statistics.median(c for _, c, _ in runs) * 1000:8.1f} ms  "
              f"peak RSS {max(r for _, _, r in runs):6.1f} MB")


if __name__ == "__main__":
    main()
