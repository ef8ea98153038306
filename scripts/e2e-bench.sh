#!/usr/bin/env bash
# Benchmark (not a test): the whole pipeline end to end. Signed user.updated webhooks with
# Clerk-sized (~3 KB) user objects for 2,000 users, at a fixed offered rate, into clerk-sync
# → Kafka → user-sync → the store; prints the offered and applied rates, the latency from
# each send to the event's processedAt (p50/p99/max), and CPU time per event of both
# services (from /proc).
#
#   scripts/e2e-bench.sh [RATE] [SECONDS]          (default 500 events/s for 60 s)
#   MONGO_ENGINE=memory scripts/e2e-bench.sh 1500   the index-backed store (see services.sh)
#
# Environment: BENCH_USERS (2000), SYNC_BATCH_SIZE (user-sync's default).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/deps.sh
rate=${1:-500}
seconds=${2:-60}
secret=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw

cargo build --release --locked -p clerk-sync -p user-sync --bins --example e2e_bench
eval "$(scripts/services.sh up)"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "store: ${MONGO_ENGINE:-ferretdb} at $MONGODB_URI; broker at $KAFKA_BROKERS; everything on this machine"

run=e2e$RANDOM$RANDOM
port=$((20000 + RANDOM % 10000))
health=$((port + 1))
mkdir -p target/bench
common=(KAFKA_BROKERS="$KAFKA_BROKERS" KAFKA_REPLICATION_FACTOR=1 KAFKA_TOPIC_PARTITIONS=6
  KAFKA_TOPIC_USERS=$run-users KAFKA_TOPIC_ORGANIZATIONS=$run-orgs KAFKA_TOPIC_SESSIONS=$run-sessions
  LOG_FORMAT=json RUST_LOG=warn)
env "${common[@]}" CLERK_WEBHOOK_SECRET=$secret KAFKA_TOPIC_OTHER=$run-other PORT=$port \
  target/release/clerk-sync >target/bench/e2e-clerk-sync.log 2>&1 &
clerk=$!
env "${common[@]}" MONGODB_URI="$MONGODB_URI" MONGODB_DATABASE=$run HEALTH_PORT=$health \
  KAFKA_GROUP_ID=$run ${SYNC_BATCH_SIZE:+SYNC_BATCH_SIZE=$SYNC_BATCH_SIZE} \
  target/release/user-sync >target/bench/e2e-user-sync.log 2>&1 &
sync=$!
trap 'kill $clerk $sync 2>/dev/null || true' EXIT
for url in "http://127.0.0.1:$port/ready" "http://127.0.0.1:$health/ready"; do
  for _ in $(seq 1 150); do
    curl -fs "$url" >/dev/null && break
    sleep 0.2
  done
  curl -fs "$url" >/dev/null || { echo "not ready: $url" >&2; exit 1; }
done
BENCH_URL=http://127.0.0.1:$port/webhook BENCH_SECRET=$secret BENCH_RATE=$rate BENCH_SECONDS=$seconds \
  BENCH_DATABASE=$run BENCH_CLERK_PID=$clerk BENCH_USER_SYNC_PID=$sync \
  target/release/examples/e2e_bench
