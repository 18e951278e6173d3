#!/usr/bin/env python3
"""The seed's way of filtering, as a baseline: json.loads every event, then dictionary checks
(cluster, green container, RUNNING). Reads the trace the Rust bench writes:

    cargo bench -p cutover-stages --bench filter
    python3 scripts/bench-python-filter.py target/bench/filter-trace.jsonl [ROUNDS]

Prints the best of ROUNDS passes (default 5); the Rust bench itself runs one pass at a time,
alternating with its own, to compare both at the same moment.
"""
import json
import sys
import time


def is_green(event):
    if event.get("source") != "aws.ecs" or event.get("detail-type") != "ECS Task State Change":
        return False
    detail = event.get("detail", {})
    if not detail.get("clusterArn", "").endswith(":cluster/catsndogsECScluster"):
        return False
    if detail.get("lastStatus") != "RUNNING" or detail.get("desiredStatus") != "RUNNING":
        return False
    return any(c.get("name") == "cats-green" for c in detail.get("containers", []))


def main():
    with open(sys.argv[1], "rb") as f:
        lines = f.read().splitlines()
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        passed = sum(1 for line in lines if is_green(json.loads(line)))
        rate = len(lines) / (time.perf_counter() - start)
        best = max(best, rate)
    print(json.dumps({"events": len(lines), "passed": passed, "events_per_second": round(best)}))


if __name__ == "__main__":
    main()
