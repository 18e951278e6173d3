#!/usr/bin/env bash
# Runs every test of the workspace on a fresh machine (Rust + Python 3 only):
#   1. installs the AWS emulator moto[server] and cfn-lint from PyPI into .venv (once), and the
#      Debian packages the tests run for real when missing: chromium and chromium-driver (the
#      dashboard's browser test) and prometheus (the metric analysis test),
#   2. starts moto on a free loopback port and points the tests at it (CUTOVER_MOTO_URL),
#   3. runs `cargo test --workspace --features ecs` (extra arguments are passed on),
#   4. stops every moto_server of the run, its own and those the tests started, whatever
#      happened (failure, Ctrl-C, SIGTERM), and fails if one of them is still running.
# No AWS account or network access beyond the package registries is needed.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests run for real, installed when missing (one `apt-get update` first):
# chromium and chromium-driver (the dashboard's browser test, tests/it/dashboard.rs, drives
# Chromium through chromedriver) and prometheus (the metric analysis test, tests/it/prometheus.rs).
apt_packages=()
[ -x /usr/bin/chromedriver ] || apt_packages+=(chromium chromium-driver)
command -v prometheus >/dev/null 2>&1 || apt_packages+=(prometheus)
if [ ${#apt_packages[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null; then
    echo "test.sh: ${apt_packages[*]} missing and this is not a Debian-like system: install" \
      "Chromium with chromedriver (/usr/bin/chromium, /usr/bin/chromedriver) and Prometheus" >&2
    exit 1
  fi
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null; then
      echo "test.sh: installing ${apt_packages[*]} needs root (or sudo)" >&2
      exit 1
    fi
    sudo="sudo"
  fi
  echo "test.sh: installing the Debian packages ${apt_packages[*]} (once)" >&2
  $sudo apt-get update >&2
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y "${apt_packages[@]}" >&2
fi
export CUTOVER_PROMETHEUS="${CUTOVER_PROMETHEUS:-$(command -v prometheus)}"

# Never let the SDK look for instance metadata or real credentials.
export AWS_EC2_METADATA_DISABLED=true
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1

MOTO_VERSION="5.2.5"
CFN_LINT_VERSION="1.58.0"  # lints the generated CloudFormation templates (scripts/cfn-lint.sh)
VENV=".venv"
if ! "$VENV/bin/python" -c "import moto, cfnlint.version, sys; sys.exit(moto.__version__ != '$MOTO_VERSION' or cfnlint.version.__version__ != '$CFN_LINT_VERSION')" 2>/dev/null; then
  echo "test.sh: installing moto[server]==$MOTO_VERSION and cfn-lint==$CFN_LINT_VERSION into $VENV" \
    "(once: a 50 MB download, 320 MB installed; about 30 s on a fast connection)" >&2
  install_started=$SECONDS
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --disable-pip-version-check "moto[server]==$MOTO_VERSION" "cfn-lint==$CFN_LINT_VERSION" >&2
  echo "test.sh: $VENV ready ($(du -sh "$VENV" | cut -f1), $((SECONDS - install_started)) s)" >&2
fi
export CUTOVER_MOTO_SERVER="$PWD/$VENV/bin/moto_server"


# checkov scans the same templates for security findings (scripts/checkov.sh). It pins boto3 and
# botocore to versions older than moto's, so it lives in a venv of its own inside .venv.
CHECKOV_VERSION="3.3.30"
CHECKOV_VENV="$VENV/checkov"
if ! "$CHECKOV_VENV/bin/python" -c "import checkov.version, sys; sys.exit(checkov.version.version != '$CHECKOV_VERSION')" 2>/dev/null; then
  echo "test.sh: installing checkov==$CHECKOV_VERSION into $CHECKOV_VENV (once: about 300 MB installed)" >&2
  python3 -m venv "$CHECKOV_VENV"
  "$CHECKOV_VENV/bin/pip" install --disable-pip-version-check "checkov==$CHECKOV_VERSION" >&2
fi

target="${CARGO_TARGET_DIR:-target}"
mkdir -p "$target"
log="$target/moto.log"

# Every moto_server of this run is in a process group of its own, listed in $pid_dir by group
# id: the one started here, and those the tests start (tests/it/moto.rs writes there).
pid_dir=$(cd "$(mktemp -d "$target/moto-pids.XXXXXX")" && pwd)
export CUTOVER_MOTO_PID_DIR="$pid_dir"
moto_pid=""

# The process groups of $pid_dir that still hold a running (not zombie) moto_server.
running_servers() {
  local file group
  for file in "$pid_dir"/*; do
    [ -e "$file" ] || continue
    group=$(basename "$file")
    if ps -A -o pgid=,stat=,args= | awk -v g="$group" '$1 == g && $2 !~ /^Z/ && /moto_server/ { found = 1 } END { exit !found }'; then
      echo "$group"
    fi
  done
}

cleanup() {
  local status=$? group leaked
  trap '' INT TERM  # a second Ctrl-C must not cut the cleanup short
  if [ -n "$moto_pid" ]; then
    kill -s TERM -- "-$moto_pid" 2>/dev/null || true
    wait "$moto_pid" 2>/dev/null || true
  fi
  # The tests stop their servers on drop, or their watchdog does within a second of the test
  # process's end (killed, interrupted): wait for that, then stop whatever is left, loudly.
  for _ in $(seq 1 50); do
    [ -z "$(running_servers)" ] && break
    sleep 0.1
  done
  leaked=$(running_servers)
  if [ -n "$leaked" ]; then
    echo "test.sh: FAILED: moto_server outlived its owner (process groups ${leaked//$'\n'/ }); stopping it:" >&2
    for group in $leaked; do
      sed 's/^/test.sh:   /' "$pid_dir/$group" >&2
      kill -s KILL -- "-$group" 2>/dev/null || true
    done
    [ "$status" -ne 0 ] || status=1
  fi
  rm -rf "$pid_dir"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# A port free a moment ago may be taken before moto binds it: then moto exits, and another
# port is tried (three times).
ready=""
for attempt in 1 2 3; do
  port=$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  set -m  # job control: the background server gets a process group of its own
  "$CUTOVER_MOTO_SERVER" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
  moto_pid=$!
  set +m
  echo "$CUTOVER_MOTO_SERVER on port $port (scripts/test.sh)" >"$pid_dir/$moto_pid"
  for _ in $(seq 1 150); do
    if "$VENV/bin/python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/')" 2>/dev/null; then
      ready=yes
      break 2
    fi
    if ! kill -0 "$moto_pid" 2>/dev/null; then
      echo "test.sh: moto_server exited (attempt $attempt, port $port):" >&2
      cat "$log" >&2
      moto_pid=""
      break
    fi
    sleep 0.2
  done
  if [ -n "$moto_pid" ]; then  # alive but not answering: stop it before the next attempt
    kill -s TERM -- "-$moto_pid" 2>/dev/null || true
    wait "$moto_pid" 2>/dev/null || true
    moto_pid=""
  fi
done
if [ -z "$ready" ]; then
  echo "test.sh: moto_server did not start; see $log" >&2
  exit 1
fi
export CUTOVER_MOTO_URL="http://127.0.0.1:$port"
echo "test.sh: moto_server $MOTO_VERSION on $CUTOVER_MOTO_URL (log: $log)" >&2

# `--features ecs` adds the filter's DescribeTasks tag source, tested against moto too. With the
# dev-dependencies it is another feature set than `cargo build`'s, so the first run compiles the
# AWS SDK crates and the workspace a second time.
echo "test.sh: cargo test --workspace --features ecs (the first time, a full build of a few minutes comes first)" >&2
cargo test --workspace --features ecs --no-fail-fast "$@"
