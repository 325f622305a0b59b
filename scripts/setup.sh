#!/usr/bin/env bash
# One command for a fresh machine: installs the system packages, fetches and verifies the
# pinned models, builds tuningfork, and runs the main job on the bundled default model.
#
#   scripts/setup.sh            # everything
#   SKIP_APT=1 scripts/setup.sh # when the system packages are already there
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi; }

if [[ -z "${SKIP_APT:-}" ]]; then
  need=()
  for pkg in cmake build-essential clang libclang-dev pkg-config; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need+=("$pkg")
  done
  command -v python3 >/dev/null || need+=(python3)
  python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
  if ((${#need[@]})); then
    echo "setup: installing ${need[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi

command -v cargo >/dev/null || {
  echo "setup: cargo is missing; install Rust (https://rustup.rs) and run this again" >&2
  exit 1
}

scripts/fetch-models.sh
cargo build --release
./target/release/tuningfork models verify
./target/release/tuningfork generate --max-tokens 64 \
  --system "You are a concise assistant." "In one sentence, what is a tuning fork?"
# The main job on the bundled classification example: BootstrapFewShot with random search,
# scored on validation, reported on the held-out test split (a few minutes on 2 cores).
./target/release/tuningfork optimize tests/examples/sentiment/task.toml
echo
echo "setup: done. \`tuningfork artifacts list\` shows the programs it made; run the tests with: cargo test --release"
