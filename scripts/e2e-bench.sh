#!/usr/bin/env bash
# Benchmark (not a test): the whole pipeline end to end. Signed user.updated webhooks with
# Clerk-sized (~2.3 KB) user objects for 2,000 users, at a fixed offered rate, into
# clerk-sync → Kafka → user-sync → the store; prints the offered and applied rates, the
# latency from each send to the event's processedAt (p50/p99/max), and CPU time per event
# of both services (from /proc).
#
#   scripts/e2e-bench.sh [RATE] [SECONDS] [BASELINE_REV]   (default 500 events/s for 60 s)
#   MONGO_ENGINE=memory scripts/e2e-bench.sh 1500          the index-backed store (services.sh)
#
# With BASELINE_REV, user-sync built at that revision runs the same load right after this
# tree's (same clerk-sync, same servers, fresh topics and database each), for a side-by-side
# figure. Environment: BENCH_USERS (2000), SYNC_BATCH_SIZE (user-sync's default),
# MAX_IN_FLIGHT (clerk-sync's, 256 here).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/deps.sh
rate=${1:-500}
seconds=${2:-60}
baseline=${3:-}
secret=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw
root=$PWD

cargo build --release --locked -p clerk-sync -p user-sync --bins --example e2e_bench
mkdir -p target/bench/bin
cp target/release/user-sync target/bench/bin/user-sync-this
if [[ -n $baseline ]]; then
  tree=$root/target/bench/baseline-src
  rm -rf "$tree"
  git worktree prune
  git worktree add --detach "$tree" "$baseline" >/dev/null
  (cd "$tree" && CARGO_TARGET_DIR=$root/target/bench/baseline-target cargo build --release --locked -p user-sync --bin user-sync)
  cp target/bench/baseline-target/release/user-sync "target/bench/bin/user-sync-$baseline"
  git worktree remove --force "$tree"
fi
exports=$(scripts/services.sh up)
eval "$exports"
data=${SERVICES_DATA:-$root/target/services}
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "store: ${MONGO_ENGINE:-ferretdb} at $MONGODB_URI; broker at $KAFKA_BROKERS; everything on this machine"

run() {
  local name=$1 run=e2e$RANDOM$RANDOM port=$((20000 + RANDOM % 10000))
  local health=$((port + 1)) clerk sync
  local common=(KAFKA_BROKERS="$KAFKA_BROKERS" KAFKA_REPLICATION_FACTOR=1 KAFKA_TOPIC_PARTITIONS=6
    KAFKA_TOPIC_USERS=$run-users KAFKA_TOPIC_ORGANIZATIONS=$run-orgs KAFKA_TOPIC_SESSIONS=$run-sessions
    LOG_FORMAT=json RUST_LOG=${BENCH_LOG:-warn})
  # MAX_IN_FLIGHT above the default 32: the load is legitimate, and 503s would measure the
  # cap rather than the pipeline (the sender still retries 503s as Svix does).
  env "${common[@]}" CLERK_WEBHOOK_SECRET=$secret KAFKA_TOPIC_OTHER=$run-other PORT=$port \
    MAX_IN_FLIGHT="${MAX_IN_FLIGHT:-256}" \
    target/release/clerk-sync >"target/bench/e2e-clerk-sync-$name.log" 2>&1 &
  clerk=$!
  env "${common[@]}" MONGODB_URI="$MONGODB_URI" MONGODB_DATABASE="$run" HEALTH_PORT=$health \
    KAFKA_GROUP_ID="$run" ${SYNC_BATCH_SIZE:+SYNC_BATCH_SIZE=$SYNC_BATCH_SIZE} \
    "target/bench/bin/user-sync-$name" >"target/bench/e2e-user-sync-$name.log" 2>&1 &
  sync=$!
  for url in "http://127.0.0.1:$port/ready" "http://127.0.0.1:$health/ready"; do
    for _ in $(seq 1 150); do
      curl -fs "$url" >/dev/null && break
      sleep 0.2
    done
    curl -fs "$url" >/dev/null || { echo "not ready: $url" >&2; kill $clerk $sync; return 1; }
  done
  sleep 3 # the consumer group's first assignment
  printf '%-12s ' "$name"
  local rc=0
  BENCH_URL=http://127.0.0.1:$port/webhook BENCH_SECRET=$secret BENCH_RATE=$rate \
    BENCH_SECONDS=$seconds BENCH_DATABASE=$run BENCH_CLERK_PID=$clerk BENCH_USER_SYNC_PID=$sync \
    BENCH_STORE_PID="$(cat "$data/mongo/${MONGO_ENGINE:-ferretdb}.pid" 2>/dev/null || echo 0)" \
    BENCH_BROKER_PID="$(cat "$data/kafka/kafka.pid" 2>/dev/null || echo 0)" \
    target/release/examples/e2e_bench || rc=$?
  kill $clerk $sync 2>/dev/null || true
  wait $clerk $sync 2>/dev/null || true
  return $rc
}

run this
[[ -z $baseline ]] || run "$baseline"
