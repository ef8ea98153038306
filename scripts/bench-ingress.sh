#!/usr/bin/env bash
# Benchmark (not a test): signed webhooks at clerk-sync → the local Kafka; prints req/s,
# p50/p99 latency and clerk-sync's CPU time per request (from /proc), for this tree and,
# side by side in the same run, for a baseline revision.
#
#   scripts/bench-ingress.sh [BASELINE_REV]   (e.g. e87e927; none: this tree only)
#
# Environment: BENCH_REQUESTS (20000), BENCH_CONCURRENCY (16), BENCH_BODY (a webhook body),
# BENCH_ROUNDS (2: each binary runs this many times, alternating).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/deps.sh
root=$PWD
baseline=${1:-}
rounds=${BENCH_ROUNDS:-2}
secret=whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw

export CARGO_TARGET_DIR=$root/target/bench
cargo build --release --locked -p clerk-sync --bin clerk-sync --example ingress_bench
mkdir -p target/bench/bin
cp target/bench/release/clerk-sync target/bench/bin/clerk-sync-this
if [[ -n $baseline ]]; then
  tree=$root/target/bench/baseline-src
  rm -rf "$tree"
  git worktree prune
  git worktree add --detach "$tree" "$baseline" >/dev/null
  (cd "$tree" && cargo build --release --locked -p clerk-sync --bin clerk-sync)
  cp target/bench/release/clerk-sync "target/bench/bin/clerk-sync-$baseline"
  git worktree remove --force "$tree"
fi

eval "$(scripts/services.sh up kafka)"
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "broker: Apache Kafka 3.9.1 from scripts/services.sh at $KAFKA_BROKERS; log level info (JSON)"

run() {
  local name=$1 port=$2 run=bench$RANDOM$RANDOM
  CLERK_WEBHOOK_SECRET=$secret KAFKA_BROKERS=$KAFKA_BROKERS PORT=$port \
    KAFKA_TOPIC_USERS=$run-users KAFKA_TOPIC_ORGANIZATIONS=$run-orgs \
    KAFKA_TOPIC_SESSIONS=$run-sessions KAFKA_TOPIC_OTHER=$run-other \
    KAFKA_REPLICATION_FACTOR=1 LOG_FORMAT=json RUST_LOG=info \
    "target/bench/bin/clerk-sync-$name" >/dev/null 2>"target/bench/$name.log" &
  local pid=$!
  for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$port/health" >/dev/null && break
    sleep 0.2
  done
  printf '%-10s ' "$name"
  BENCH_URL=http://127.0.0.1:$port/webhook BENCH_PID=$pid BENCH_SECRET=$secret \
    target/bench/release/examples/ingress_bench || { kill "$pid"; return 1; }
  kill -TERM "$pid"
  wait "$pid" || true
}

for ((i = 1; i <= rounds; i++)); do
  run this 18788
  [[ -z $baseline ]] || run "$baseline" 18789
done
