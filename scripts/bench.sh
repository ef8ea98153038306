#!/usr/bin/env bash
# Benchmark (not a test): N user events through Kafka into user-sync, and a plain driver
# loop on the same store for comparison. Uses the servers of scripts/services.sh.
#
#   scripts/bench.sh [N]                  (default 5000; N/10 users, or BENCH_USERS)
#   BENCH_HISTORY=1 scripts/bench.sh N    does history cost? the first 2,000 events
#                                         against the last 2,000, each sent to a caught-up
#                                         user-sync and timed until applied (N >= 4000)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/deps.sh
n=${1:-5000}
cargo build --release --locked -p user-sync --example bench
exports=$(scripts/services.sh up)
eval "$exports"
export KAFKA_BROKERS MONGODB_URI RUST_LOG=${RUST_LOG:-warn}
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/ {print $2}') GiB"
echo "store: ${MONGO_ENGINE:-ferretdb} (scripts/services.sh) at $MONGODB_URI"
target/release/examples/bench "$n"
