#!/usr/bin/env bash
# A fault run (not a test: it takes minutes): N users' events (default 300), shuffled with
# duplicates, through the user-sync binary on the store of scripts/services.sh, while
# user-sync is SIGKILLed and restarted, the store is paused for 10 s, and a second
# consumer joins and leaves. Prints the faults' times, then how many documents are missing
# or wrong once it converged, and how long after the last fault (exit 1 if it didn't,
# within 15 minutes).
#
#   scripts/fault-run.sh [N]            (MONGO_ENGINE=memory for mongo-java-server)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/deps.sh
n=${1:-300}
cargo build --release --locked -p user-sync --bin user-sync --example faults
exports=$(scripts/services.sh up)
eval "$exports"
port=${MONGODB_URI##*:}
port=${port%%/*}
pid=$(ss -Hltnp "sport = :$port" | grep -o 'pid=[0-9]*' | head -1 | cut -d= -f2)
export KAFKA_BROKERS MONGODB_URI FAULT_STORE_PID=$pid USER_SYNC_BIN=target/release/user-sync
echo "store: ${MONGO_ENGINE:-ferretdb} at $MONGODB_URI (pid $pid), $(git rev-parse --short HEAD)"
target/release/examples/faults "$n"
