#!/usr/bin/env bash
# Property tests at scale (not part of the test command, which runs ~100,000 cases):
# every property of crates/events/tests/properties.rs and clerk-sync's verify module with
# CASES cases each, in release mode.
#
#   scripts/fuzz.sh [CASES]     (default 1000000)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/deps.sh
export PROPTEST_CASES=${1:-1000000}
echo "running every property with $PROPTEST_CASES cases" >&2
cargo test --release --locked -p events --test properties
cargo test --release --locked -p clerk-sync --lib properties
