#!/usr/bin/env bash
# Daemon HTTP ingest of dropped events, as issue 7 measured it (BENCHMARKS.md, "Hosts"):
# `cutover serve` (the binary given, release) with scripts/bench/ingest.toml and an API key,
# and `wrk -t1 -c32 -d8s --latency` posting tests/fixtures/task-ec2-pending.json (dropped by
# the filter) from a second process on loopback.
#
#   cargo build --release && scripts/bench-ingest.sh target/release/cutover [DURATION]
set -euo pipefail
binary=$(realpath "${1:-target/release/cutover}")
duration=${2:-8s}
root=$(cd "$(dirname "$0")/.." && pwd)
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 2; }
tmp=$(mktemp -d)
daemon=
cleanup() {
  [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
CUTOVER_BENCH_KEY=bench CUTOVER_LOG=error "$binary" serve "$root/scripts/bench/ingest.toml" \
  --pipeline ingest --listen "127.0.0.1:$port" --api-key-env CUTOVER_BENCH_KEY >/dev/null 2>"$tmp/serve.err" &
daemon=$!
for _ in $(seq 100); do
  python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$port),0.2)" 2>/dev/null && break
  sleep 0.1
done
python3 - "$root/tests/fixtures/task-ec2-pending.json" > "$tmp/post.lua" <<'PY'
import json, sys
body = json.dumps(json.load(open(sys.argv[1])))
print('wrk.method = "POST"')
print('wrk.headers["Content-Type"] = "application/json"')
print('wrk.headers["x-api-key"] = "bench"')
print("wrk.body = " + json.dumps(body))
PY
out=$(wrk -t1 -c32 -d"$duration" --latency -s "$tmp/post.lua" "http://127.0.0.1:$port/events")
echo "$out"
# Every request must have been answered 2xx: a benchmark of errors measures nothing.
if grep -q "Non-2xx" <<<"$out"; then
  echo "some requests were not answered 2xx" >&2
  cat "$tmp/serve.err" >&2
  exit 1
fi
