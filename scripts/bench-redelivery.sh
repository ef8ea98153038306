#!/usr/bin/env bash
# Benchmark (not a test): what a redelivered or stale batch costs against a first
# delivery, on the store of scripts/services.sh (MONGO_ENGINE=memory for mongo-java-server).
#
#   scripts/bench-redelivery.sh [N]      (default 500: one batch of N events, N users)
#
# Prints, per phase (first delivery, the same batch redelivered whole, every event stale):
# batches, user-sync's apply time, the store's CPU (from /proc), and the commands and
# documents user-sync sent to the store.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/deps.sh
n=${1:-500}
cargo build --release --locked -p user-sync --example redelivery
exports=$(scripts/services.sh up)
eval "$exports"
port=${MONGODB_URI##*:}
port=${port%%/*}
pid=$(ss -Hltnp "sport = :$port" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
export KAFKA_BROKERS MONGODB_URI RUST_LOG=${RUST_LOG:-warn} BENCH_STORE_PID=$pid
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "store: ${MONGO_ENGINE:-ferretdb} at $MONGODB_URI (pid $pid), $(git rev-parse --short HEAD)"
target/release/examples/redelivery "$n"
