#!/usr/bin/env python3
"""A recorded-shape ECS trace of a given size, for whole-process benchmarks of `cutover replay`:

    python3 scripts/make-trace.py OUT.jsonl SIZE_MB [GREEN_EVERY]

Events are the fixture trace's (tests/fixtures/two-revisions-trace.jsonl), each with a fresh
id: noise (other services, clusters, lifecycles) and one green RUNNING event of
catsndogsECScluster in GREEN_EVERY (default 1000, so 99.9% of the events are unrelated), in
JSON Lines of ~2 KB each. The same arguments always write the same file.
"""
import json
import os
import sys


def is_green(e):
    d = e.get("detail", {})
    return (d.get("clusterArn", "").endswith("/catsndogsECScluster")
            and any(c.get("name") == "cats-green" for c in d.get("containers", [])))


def main():
    out, size_mb = sys.argv[1], float(sys.argv[2])
    green_every = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    here = os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(here, "..", "tests", "fixtures", "two-revisions-trace.jsonl")) as f:
        events = [json.loads(line) for line in f if line.strip()]
    green = [e for e in events if is_green(e) and e["detail"].get("lastStatus") == "RUNNING"]
    noise = [e for e in events if not is_green(e)]
    limit = int(size_mb * 1024 * 1024)
    written = 0
    i = 0
    with open(out, "w") as f:
        while written < limit:
            base = green[i % len(green)] if i % green_every == 0 else noise[i % len(noise)]
            event = dict(base, id=f"{i:08x}-trace")
            line = json.dumps(event, separators=(",", ":")) + "\n"
            f.write(line)
            written += len(line)
            i += 1
    print(json.dumps({"events": i, "bytes": written}))


if __name__ == "__main__":
    main()
