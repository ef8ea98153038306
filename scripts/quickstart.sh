#!/usr/bin/env bash
# The whole pipeline on this machine, no Docker: installs what is missing, builds, starts
# Kafka and FerretDB (scripts/services.sh), clerk-sync and user-sync, sends a signed sample
# user.created then user.updated, and prints the resulting MongoDB document.
#
#   scripts/quickstart.sh          leave everything running (prints how to stop it)
#   scripts/quickstart.sh --stop   stop everything at the end
#   scripts/quickstart.sh down     stop what an earlier run left running
#
# Ports: PORT (clerk-sync, 8788), HEALTH_PORT (user-sync, 8789), KAFKA_PORT (9092),
# MONGO_PORT (27017). Logs: target/quickstart/.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
RUN=$ROOT/target/quickstart
export PORT=${PORT:-8788} HEALTH_PORT=${HEALTH_PORT:-8789}
export CLERK_WEBHOOK_SECRET=${CLERK_WEBHOOK_SECRET:-whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw}
SAMPLE_USER=user_2pZ6mQ3xYfTgHk8LwNcVbR1aS4d

step() { printf '==> %s\n' "$*" >&2; }

stop_all() {
  for name in clerk-sync user-sync; do
    if [[ -f $RUN/$name.pid ]] && kill -0 "$(cat "$RUN/$name.pid")" 2>/dev/null; then
      step "stopping $name"
      kill -TERM "$(cat "$RUN/$name.pid")"
      while kill -0 "$(cat "$RUN/$name.pid")" 2>/dev/null; do sleep 0.2; done
    fi
    rm -f "$RUN/$name.pid"
  done
  scripts/services.sh down
}

wait_ready() {
  local name=$1 url=$2 pidfile=$3
  for _ in $(seq 1 240); do
    curl -fsS "$url" >/dev/null 2>&1 && return 0
    kill -0 "$(cat "$pidfile")" 2>/dev/null || { tail -n 20 "$RUN/$name.log" >&2; exit 1; }
    sleep 0.5
  done
  echo "$name did not become ready (log: $RUN/$name.log)" >&2
  exit 1
}

case ${1:-} in
  down) stop_all; exit 0 ;;
  --stop) trap stop_all EXIT ;;
  "") ;;
  *) sed -n '2,11p' "$0" >&2; exit 2 ;;
esac

source scripts/deps.sh
mkdir -p "$RUN"

step "building clerk-sync and user-sync"
cargo build --locked -p clerk-sync -p user-sync
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug

step "starting Kafka and FerretDB (first run installs them: a few minutes)"
exports=$(scripts/services.sh up)
eval "$exports"
export KAFKA_BROKERS MONGODB_URI
export MONGODB_DATABASE=${MONGODB_DATABASE:-clerk_sync} LOG_FORMAT=${LOG_FORMAT:-json}

for name in clerk-sync user-sync; do
  if [[ -f $RUN/$name.pid ]] && kill -0 "$(cat "$RUN/$name.pid")" 2>/dev/null; then
    kill -TERM "$(cat "$RUN/$name.pid")"
    while kill -0 "$(cat "$RUN/$name.pid")" 2>/dev/null; do sleep 0.2; done
  fi
  step "starting $name (log: target/quickstart/$name.log)"
  nohup "$BIN/$name" >"$RUN/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
done
wait_ready clerk-sync "http://127.0.0.1:$PORT/ready" "$RUN/clerk-sync.pid"
wait_ready user-sync "http://127.0.0.1:$HEALTH_PORT/ready" "$RUN/user-sync.pid"

url=http://127.0.0.1:$PORT/webhook
step "sending a signed user.created"
scripts/send-webhook.sh scripts/samples/user.created.json --url "$url" >&2
step "sending a signed user.updated"
scripts/send-webhook.sh scripts/samples/user.updated.json --url "$url" >&2

step "waiting for user-sync to apply them"
for _ in $(seq 1 120); do
  doc=$("$BIN/user-sync" show-user "$SAMPLE_USER" 2>/dev/null) && grep -q '"lastName": "King"' <<<"$doc" && break
  doc=""
  sleep 0.5
done
[[ -n $doc ]] || { echo "the user document did not appear (logs: $RUN/)" >&2; exit 1; }

step "the MongoDB document of $SAMPLE_USER (database $MONGODB_DATABASE, collection users):"
echo "$doc"
if [[ ${1:-} != --stop ]]; then
  cat >&2 <<MSG
==> the stack is running: clerk-sync on :$PORT (POST /webhook), user-sync health on :$HEALTH_PORT,
    Kafka on $KAFKA_BROKERS, MongoDB (FerretDB) on $MONGODB_URI.
    Send more:  scripts/send-webhook.sh scripts/samples/user.deleted.json
    Stop it:    scripts/quickstart.sh down
MSG
fi
