#!/usr/bin/env bash
# Runs every test of the workspace on a fresh machine (Rust + Python 3 only):
#   1. installs the AWS emulator moto[server] from PyPI into .venv (once),
#   2. starts it on a free loopback port and points the tests at it (CUTOVER_MOTO_URL),
#   3. runs `cargo test --workspace` (extra arguments are passed on),
#   4. stops the emulator, whatever happened.
# No AWS account or network access beyond the package registries is needed.
set -euo pipefail
cd "$(dirname "$0")/.."

# Never let the SDK look for instance metadata or real credentials.
export AWS_EC2_METADATA_DISABLED=true
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1

MOTO_VERSION="5.2.5"
CFN_LINT_VERSION="1.58.0"  # lints the generated CloudFormation templates (scripts/cfn-lint.sh)
VENV=".venv"
if ! "$VENV/bin/python" -c "import moto, cfnlint.version, sys; sys.exit(moto.__version__ != '$MOTO_VERSION' or cfnlint.version.__version__ != '$CFN_LINT_VERSION')" 2>/dev/null; then
  echo "test.sh: installing moto[server]==$MOTO_VERSION and cfn-lint==$CFN_LINT_VERSION into $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION" "cfn-lint==$CFN_LINT_VERSION"
fi
export CUTOVER_MOTO_SERVER="$PWD/$VENV/bin/moto_server"

port=$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p target
"$CUTOVER_MOTO_SERVER" -H 127.0.0.1 -p "$port" >target/moto.log 2>&1 &
moto_pid=$!
trap 'kill "$moto_pid" 2>/dev/null || true; wait "$moto_pid" 2>/dev/null || true' EXIT

for _ in $(seq 1 100); do
  if "$VENV/bin/python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/')" 2>/dev/null; then
    break
  fi
  if ! kill -0 "$moto_pid" 2>/dev/null; then
    echo "test.sh: moto_server exited; see target/moto.log" >&2
    cat target/moto.log >&2
    exit 1
  fi
  sleep 0.2
done
export CUTOVER_MOTO_URL="http://127.0.0.1:$port"
echo "test.sh: moto_server $MOTO_VERSION on $CUTOVER_MOTO_URL" >&2

# `--features ecs` adds the filter's DescribeTasks tag source, tested against moto too.
cargo test --workspace --features ecs --no-fail-fast "$@"
