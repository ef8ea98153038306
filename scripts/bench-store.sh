#!/usr/bin/env bash
# Benchmark (not a test): what user-sync asks of the store per event, beside a plain
# batched consumer (upserts by clerkId, one unordered update per batch, no order rule, no
# audit) reading the same topic into the same store, in the same run.
#
#   scripts/bench-store.sh                 mixes of 10, 2 and 1 events per user, 20,000
#                                          events each, then a second pass over each topic
#   MONGODB_URI=… scripts/bench-store.sh   any store (DocumentDB, a real MongoDB); only
#                                          Kafka is started then
#   MONGO_ENGINE=memory scripts/bench-store.sh
#
# Environment (see bins/user-sync/examples/store_cost.rs): BENCH_EVENTS, BENCH_MIXES,
# BENCH_USERS, BENCH_LAYOUT (interleaved | bursts), SYNC_BATCH_SIZE, BENCH_ONLY,
# WEBHOOK_EVENTS_PAYLOAD (user-sync's).
# BENCH_STORE_PIDS: the store's root processes (default: whoever listens on the URI's
# port; for DocumentDB give the gateway's and PostgreSQL's postmaster's).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/deps.sh
cargo build --release --locked -p user-sync --example store_cost
if [[ -n ${MONGODB_URI:-} ]]; then
  eval "$(scripts/services.sh up kafka)"
else
  eval "$(scripts/services.sh up)"
fi
listener() { ss -Hltnp "sport = :$1" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2; }
port=${MONGODB_URI#*://}
port=${port#*@}
port=${port%%/*}
port=${port%%\?*}
port=${port##*:}
broker_port=${KAFKA_BROKERS##*:}
export BENCH_STORE_PIDS=$(echo "${BENCH_STORE_PIDS:-$(listener "$port")}" | tr -s "\n " ",," | sed "s/,$//")
export BENCH_BROKER_PID=${BENCH_BROKER_PID:-$(listener "$broker_port")}
export KAFKA_BROKERS MONGODB_URI RUST_LOG=${RUST_LOG:-warn}
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/ {print $2}') GiB"
echo "store: ${MONGO_ENGINE:-$MONGODB_URI} (processes $BENCH_STORE_PIDS), broker pid $BENCH_BROKER_PID, $(git rev-parse --short HEAD)"
target/release/examples/store_cost
