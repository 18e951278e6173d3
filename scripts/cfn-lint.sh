#!/usr/bin/env bash
# Lints the CloudFormation and SAM templates `cutover template` generates from every shipped pipeline
# file that can be deployed, with cfn-lint (installed into .venv by scripts/test.sh), then scans
# them all with checkov (scripts/checkov.sh: only the findings accepted, with reasons, in
# scripts/checkov-accepted.txt may remain).
# A file refused as embedded-only (exit 1 with a "cannot be templated" message) is skipped;
# pipelines/catsndogs-aws.toml must always template and lint clean.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=".venv"
if [ ! -x "$VENV/bin/cfn-lint" ]; then
  echo "cfn-lint.sh: $VENV/bin/cfn-lint is missing; run ./scripts/test.sh first" >&2
  exit 1
fi
cargo build --quiet --bin cutover
bin="${CARGO_TARGET_DIR:-target}/debug/cutover"
out="${CARGO_TARGET_DIR:-target}/templates"
mkdir -p "$out"

linted=0
templates=()
for file in pipelines/*.toml; do
  # Strategy files compile to a definition (`cutover strategy render`); they deploy nothing.
  case "$file" in *.strategy.toml) continue ;; esac
  name=$(basename "$file" .toml)
  if "$bin" template "$file" --output "$out/$name.yaml" 2>"$out/$name.err"; then
    "$bin" template "$file" --format sam --output "$out/$name.sam.yaml"
    "$VENV/bin/cfn-lint" "$out/$name.yaml" "$out/$name.sam.yaml"
    echo "cfn-lint.sh: $file: CloudFormation and SAM templates lint clean" >&2
    templates+=("$out/$name.yaml" "$out/$name.sam.yaml")
    linted=$((linted + 1))
  elif grep -q "cannot be templated" "$out/$name.err" && [ "$file" != pipelines/catsndogs-aws.toml ]; then
    echo "cfn-lint.sh: $file: embedded-only, not deployable (skipped)" >&2
  else
    cat "$out/$name.err" >&2
    exit 1
  fi
done
echo "cfn-lint.sh: $linted template(s) linted" >&2
./scripts/checkov.sh "${templates[@]}"
