#!/usr/bin/env python3
"""Whole-process `cutover replay` against the whole-process Python filter, alternating:

    python3 scripts/bench-replay.py target/release/cutover [ROUNDS] [SIZE_MB]

Writes a SIZE_MB (default 30) trace of the recorded shape with scripts/make-trace.py, then
runs each command once per round, in turn (so all see the same machine load), and prints
the median wall time and the largest peak RSS of each:

- python: scripts/bench-python-filter.py TRACE 1 (json.loads + the seed's checks, one pass);
- filter-only: replay scripts/bench/filter-only.toml --summary (default --jobs);
- filter-only --jobs 1 / --jobs 2;
- catsndogs: replay pipelines/catsndogs.toml --summary (filter, dedup, state machine, notify).

`--rss-only` with a larger SIZE_MB measures only peak memory (one round of filter-only).
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def measure(cmd, cwd):
    """Wall seconds and peak RSS (MB) of one process, its output checked and returned."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{cmd} failed with {proc.returncode}")
    return wall, usage.ru_maxrss / 1024, out.decode().strip().splitlines()[-1]


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    rss_only = "--rss-only" in sys.argv
    binary = os.path.abspath(args[0]) if args else os.path.join(ROOT, "target/release/cutover")
    rounds = int(args[1]) if len(args) > 1 else 7
    size = args[2] if len(args) > 2 else "30"
    with tempfile.TemporaryDirectory(prefix="cutover-bench-") as tmp:
        trace = os.path.join(tmp, "trace.jsonl")
        made = subprocess.run(["python3", os.path.join(HERE, "make-trace.py"), trace, size],
                              check=True, capture_output=True, text=True).stdout
        print("trace:", made.strip())
        filter_only = [binary, "replay", "scripts/bench/filter-only.toml", "--summary"]
        commands = {
            "filter-only": filter_only + [trace],
        }
        if not rss_only:
            commands = {
                "python": ["python3", os.path.join(HERE, "bench-python-filter.py"), trace, "1"],
                "filter-only": filter_only + [trace],
                "filter-only --jobs 1": filter_only + ["--jobs", "1", trace],
                "filter-only --jobs 2": filter_only + ["--jobs", "2", trace],
                "catsndogs": [binary, "replay", "pipelines/catsndogs.toml", "--summary", trace],
            }
        results = {name: [] for name in commands}
        last = {}
        for _ in range(1 if rss_only else rounds):
            for name, cmd in commands.items():
                wall, rss, line = measure(cmd, ROOT)
                results[name].append((wall, rss))
                last[name] = line
        base = statistics.median(w for w, _ in results.get("python", [(0, 0)]))
        for name, runs in results.items():
            walls = sorted(w for w, _ in runs)
            median = statistics.median(walls)
            ratio = f"  {base / median:5.1f}x python" if base else ""
            print(f"{name:22} median {median * 1000:8.1f} ms (min {walls[0] * 1000:.1f}, "
                  f"max {walls[-1] * 1000:.1f})  peak RSS {max(r for _, r in runs):6.1f} MB{ratio}")
            print(f"{'':22} {last[name]}")


if __name__ == "__main__":
    main()
