#!/usr/bin/env bash
# Scans CloudFormation/SAM templates with checkov (installed into .venv/checkov by
# scripts/test.sh) and fails on any finding not accepted, with its reason, in
# scripts/checkov-accepted.txt — or on an accepted check that no longer fails anywhere.
# scripts/cfn-lint.sh calls it with every template it lints: ./scripts/checkov.sh FILE...
set -euo pipefail
cd "$(dirname "$0")/.."

CHECKOV_VENV=".venv/checkov"
if [ ! -x "$CHECKOV_VENV/bin/checkov" ]; then
  echo "checkov.sh: $CHECKOV_VENV/bin/checkov is missing; run ./scripts/test.sh first" >&2
  exit 1
fi
if [ "$#" -eq 0 ]; then
  echo "usage: scripts/checkov.sh TEMPLATE..." >&2
  exit 2
fi

args=()
for template in "$@"; do
  args+=(-f "$template")
done
report=$(mktemp)
trap 'rm -f "$report"' EXIT
# --skip-download: no network (guidelines, severities); --soft-fail: the verdict is ours, below.
"$CHECKOV_VENV/bin/checkov" --framework cloudformation --skip-download --soft-fail \
  --output json "${args[@]}" >"$report" 2>/dev/null

"$CHECKOV_VENV/bin/python" - scripts/checkov-accepted.txt "$report" <<'PY'
import json
import sys

accepted = {}
for number, line in enumerate(open(sys.argv[1]), 1):
    line = line.strip()
    if not line or line.startswith("#"):
        continue
    check, _, why = line.partition(" ")
    if not why.strip():
        sys.exit(f"checkov.sh: {sys.argv[1]}:{number}: {check} has no reason")
    accepted[check] = why.strip()

report = json.load(open(sys.argv[2]))
# One framework gives one report; several would give a list of them.
reports = report if isinstance(report, list) else [report]
failed = [c for r in reports for c in r["results"]["failed_checks"]]
errors = [e for r in reports for e in r["results"].get("parsing_errors", [])]
passed = sum(r["summary"]["passed"] for r in reports)

unexpected = [c for c in failed if c["check_id"] not in accepted]
seen = {c["check_id"] for c in failed}
stale = sorted(set(accepted) - seen)
for c in unexpected:
    print(f"checkov.sh: FAILED {c['check_id']} ({c['check_name']}): {c['resource']} in {c['file_path']}",
          file=sys.stderr)
for e in errors:
    print(f"checkov.sh: could not parse {e}", file=sys.stderr)
for check in stale:
    print(f"checkov.sh: {check} is accepted in {sys.argv[1]} but no longer fails: remove its line",
          file=sys.stderr)
by_check = {}
for c in failed:
    by_check[c["check_id"]] = by_check.get(c["check_id"], 0) + 1
accepted_counts = ", ".join(f"{k} ×{n}" for k, n in sorted(by_check.items()) if k in accepted)
print(f"checkov.sh: {passed} checks passed, {len(failed) - len(unexpected)} accepted findings "
      f"({accepted_counts or 'none'}), {len(unexpected)} other(s)", file=sys.stderr)
sys.exit(1 if unexpected or errors or stale else 0)
PY
