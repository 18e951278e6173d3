#!/usr/bin/env bash
# The daemon with many services: one pipeline file with SERVICES services (a [services] table
# generated from pipelines/catsndogs.toml), ROLLOUTS of them deploying at once on the embedded
# engine, on real time. Prints, as `key value` lines:
#   rss_idle_kib        the daemon's resident memory before any event
#   rss_running_kib     with ROLLOUTS rollouts running (all in their first 60 s bake)
#   per_rollout_kib     the difference per running rollout
#   cpu_bake_pct        the daemon's CPU (user + system, % of one core) over CPU_WINDOW seconds
#                       while every rollout bakes
#   list_ms / status_ms `cutover rollouts list` / `status` of one rollout, while they run
#   list_all_ms         `cutover rollouts list --all` after FINISHED more rollouts have ended
#
# Usage: scripts/bench-services.sh [BIN]   (BIN: the cutover binary; default target/debug/cutover)
# Environment: SERVICES (200), ROLLOUTS (50), CPU_WINDOW (20), FINISHED (0), SHAPE (services):
# SHAPE=one runs the same rollouts from a file without [services] (one filter listing every
# green container, one record and health URL), which a binary from before [services] runs too:
# the baseline.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN="${1:-${CARGO_TARGET_DIR:-target}/debug/cutover}"
SERVICES="${SERVICES:-200}"
ROLLOUTS="${ROLLOUTS:-50}"
CPU_WINDOW="${CPU_WINDOW:-20}"
FINISHED="${FINISHED:-0}"
SHAPE="${SHAPE:-services}"
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  exec 3>&- 2>/dev/null || true
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# Every green answers "ok" from one loopback web server.
mkdir -p "$WORK/www" "$WORK/pipelines"
echo ok >"$WORK/www/index.html"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
python3 -m http.server --bind 127.0.0.1 --directory "$WORK/www" "$PORT" >/dev/null 2>&1 &
PIDS+=($!)

python3 - "$SERVICES" "$ROLLOUTS" "$FINISHED" "$PORT" "$WORK" "$SHAPE" <<'EOF'
import json, sys
services, rollouts, finished, port, work = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
text = open("pipelines/catsndogs.toml").read()
head, rest = text.split("[services.cats]", 1)
rest = rest[rest.index("[pipelines."):]
if sys.argv[6] == "one":
    containers = ", ".join(f'"svc{i}-green"' for i in range(1, services + 1))
    rest = (rest.replace('"{service.green_container}"', f"[{containers}]")
            .replace('"{service.record}"', '"www.catsndogs.lol"')
            .replace('"{service.blue}"', '"127.0.0.1"').replace('"{service.green}"', '"127.0.0.2"')
            .replace('"{service.health_url}"', f'"http://127.0.0.1:{port}/"')
            .replace('"{service.expect_body}"', '"ok"'))
    tables = ""
else:
    tables = "".join(
        f'[services.svc{i}]\ngreen_container = "svc{i}-green"\nrecord = "svc{i}.catsndogs.lol"\n'
        f'blue = "127.0.0.1"\ngreen = "127.0.0.2"\nhealth_url = "http://127.0.0.1:{port}/"\nexpect_body = "ok"\n\n'
        for i in range(1, services + 1)
    )
open(f"{work}/pipelines/many.toml", "w").write(head + tables + rest)
open(f"{work}/pipelines/canary.strategy.toml", "w").write(open("pipelines/canary.strategy.toml").read())
seed = next(
    l for l in open("tests/fixtures/deployment-trace.jsonl")
    if "cats-green" in l and ':cluster/catsndogsECScluster"' in l
    and '"lastStatus":"RUNNING"' in l and '"desiredStatus":"RUNNING"' in l
)
def event(i, rev):
    e = json.loads(seed.replace("cats-green", f"svc{i}-green").replace("cats-green:2", f"svc{i}-green:{rev}"))
    e["id"] = f"bench-{i}-{rev}"
    e["detail"]["taskDefinitionArn"] = e["detail"]["taskDefinitionArn"].replace(":2", f":{rev}")
    return json.dumps(e)
with open(f"{work}/events.jsonl", "w") as f:
    for i in range(1, rollouts + 1):
        f.write(event(i, 2) + "\n")
with open(f"{work}/finished.jsonl", "w") as f:
    for i in range(1, finished + 1):
        f.write(event(rollouts + 1 + (i - 1) % max(1, services - rollouts), 100 + i) + "\n")
EOF

FILE="$WORK/pipelines/many.toml"
STATE="$WORK/state"
"$BIN" validate "$FILE" >/dev/null

if [ "$FINISHED" -gt 0 ]; then
  # Ended rollouts in the state directory first: replay runs them to their end on virtual time.
  "$BIN" replay "$FILE" --summary --state "$STATE" "$WORK/finished.jsonl" >/dev/null
fi

mkfifo "$WORK/in"
"$BIN" serve "$FILE" --source stdin --state "$STATE" --concurrency 64 <"$WORK/in" >"$WORK/serve.out" 2>"$WORK/serve.err" &
SERVE=$!
PIDS+=("$SERVE")
exec 3>"$WORK/in"
sleep 3
rss() { awk '/^VmRSS/ {print $2}' "/proc/$SERVE/status"; }
ticks() { awk '{print $14 + $15}' "/proc/$SERVE/stat"; }
RSS_IDLE="$(rss)"

cat "$WORK/events.jsonl" >&3
running() { "$BIN" rollouts list "$FILE" --state "$STATE" --json 2>/dev/null | grep -c '"phase"' || true; }
for _ in $(seq 1 60); do
  [ "$(running)" -ge "$ROLLOUTS" ] && break
  sleep 1
done
sleep 2
RSS_RUNNING="$(rss)"
HZ="$(getconf CLK_TCK)"
T0="$(ticks)"
sleep "$CPU_WINDOW"
T1="$(ticks)"

ms() { local s e; s=$(date +%s%N); "$@" >/dev/null; e=$(date +%s%N); echo $(((e - s) / 1000000)); }
LIST_MS="$(ms "$BIN" rollouts list "$FILE" --state "$STATE")"
STATUS_MS="$(ms "$BIN" rollouts status "$FILE" --state "$STATE" svc7-green-)"
LIST_ALL_MS="$(ms "$BIN" rollouts list "$FILE" --state "$STATE" --all)"

echo "shape $SHAPE"
echo "services $SERVICES"
echo "rollouts_running $(running)"
echo "finished_before $FINISHED"
echo "rss_idle_kib $RSS_IDLE"
echo "rss_running_kib $RSS_RUNNING"
echo "per_rollout_kib $(((RSS_RUNNING - RSS_IDLE) / ROLLOUTS))"
echo "cpu_bake_pct $(awk -v t="$((T1 - T0))" -v hz="$HZ" -v w="$CPU_WINDOW" 'BEGIN {printf "%.1f", 100 * t / hz / w}')"
echo "list_ms $LIST_MS"
echo "status_ms $STATUS_MS"
echo "list_all_ms $LIST_ALL_MS"
exec 3>&-
