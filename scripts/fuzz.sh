#!/usr/bin/env bash
# Runs the property-based fuzz tests (tests/fuzz.rs) with many cases per target: task files,
# datasets, model replies, artifacts, DSPy programs, audit bundles, models.toml, GGUF headers
# and generated grammars must never panic, and must name what they refuse.
#
#   scripts/fuzz.sh            # 10000 cases per target
#   scripts/fuzz.sh 500        # a quicker look
#
# The cases are the same on every run with the same count; TUNINGFORK_FUZZ_SEED=N draws
# others. A failure prints the smallest input found and the variables that reproduce it.
# `cargo test --release` runs the same tests with 64 cases per target. The GGUF target reads
# the header of a model in models/ (scripts/fetch-models.sh fetches them).
set -euo pipefail

cases=${1:-10000}
if ! [[ $cases =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: scripts/fuzz.sh [CASES]  (cases per target, a positive whole number; default 10000)" >&2
  exit 2
fi

root=$(cd "$(dirname "$0")/.." && pwd)
log=$(mktemp)
trap 'rm -f "$log"' EXIT

cd "$root"
TUNINGFORK_FUZZ_CASES=$cases cargo test --release --test fuzz -- --nocapture --test-threads 1 2>&1 \
  | tee "$log"

# Each target prints `fuzz <target>: <n> cases, 0 panics` when it passes (the test harness may
# print it after `test <name> ... ` on the same line).
summary=$(grep -oE 'fuzz [a-z_-]+: [0-9]+ cases' "$log" || true)
targets=$(printf '%s\n' "$summary" | grep -c . || true)
total=$(printf '%s\n' "$summary" | awk '{ sum += $3 } END { print sum + 0 }')
echo "fuzz: $total cases over $targets targets, 0 panics"
