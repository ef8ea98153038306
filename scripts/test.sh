#!/usr/bin/env bash
# The test command (README, and what .ci/run calls): installs what is missing, builds once,
# checks formatting and lints, starts the test servers, runs every test, stops the servers.
#
# Environment: KAFKA_PORT, MONGO_PORT (default 9092, 27017) move the servers;
# KEEP_SERVICES=1 leaves them running afterwards; FRESH_CHECK=0 skips the fresh-machine
# check (it needs root) for the quick start in a scratch copy.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

started=$SECONDS
step() { printf '\n==> [%4d s] %s\n' "$((SECONDS - started))" "$*" >&2; }
# Waits for background job $1; when it failed, shows its log $2 and stops with message $3.
await() {
  wait "$1" && return 0
  cat "$2" >&2
  echo "$3" >&2
  exit 1
}

# The fresh-machine check (below) needs root and namespaces; say so now, not after the build.
if [[ ${FRESH_CHECK:-1} != 0 ]] && ! { [[ $(id -u) -eq 0 ]] && unshare --mount --pid --fork true; }; then
  echo "scripts/test.sh: the fresh-machine check needs root and mount/PID namespaces;" \
    "run as root, or FRESH_CHECK=0 scripts/test.sh for the quick start in a scratch copy" >&2
  exit 2
fi

# shellcheck source=scripts/deps.sh
source scripts/deps.sh

step "cargo fmt --check"
cargo fmt --all --check

# The servers install and start while the workspace builds (both take minutes on a fresh
# machine); their output goes to target/services/up.log.
mkdir -p target/services
step "starting Kafka and FerretDB in the background (log: target/services/up.log)"
scripts/services.sh up >target/services/exports 2>target/services/up.log &
services_pid=$!
# The index-backed MongoDB-wire server (mongo-java-server), on its own port and data dir.
memory=(env SERVICES_DATA="$PWD/target/services-memory" MONGO_ENGINE=memory
  MONGO_PORT=$((${MONGO_PORT:-27017} + 100)))
fresh_pid= fresh_rootfs_pid= deny_pid= mdbook_pid=
stop_services() {
  # What runs in the background runs in sessions of its own: stop all of each.
  for pid in $fresh_rootfs_pid $fresh_pid $deny_pid $mdbook_pid; do kill -- "-$pid" 2>/dev/null || true; done
  if [[ ${KEEP_SERVICES:-0} != 1 ]]; then
    scripts/services.sh down || true
    "${memory[@]}" scripts/services.sh down mongo 2>/dev/null || true
  fi
}
trap stop_services EXIT

# The README's first command on a machine that has only the README's prerequisites (a
# debootstrapped Debian rootfs, scripts/fresh-machine-check.sh), so that what this machine
# installed earlier can't hide a missing system package. Its rootfs (downloads and dpkg,
# made once) is prepared now; the check itself starts after clippy, beside the tests, which
# leave most of the CPU idle while they wait on the servers (warm, it takes under a minute;
# cold, its build would otherwise slow this one's). Needs root; FRESH_CHECK=0 runs the
# quick start in a scratch copy at the end instead (which proves the command, not its
# install steps).
if [[ ${FRESH_CHECK:-1} != 0 ]]; then
  setsid scripts/fresh-machine-check.sh rootfs >target/services/fresh-rootfs.log 2>&1 &
  fresh_rootfs_pid=$!
fi

# promtool (for the alert rules) builds from the Go module proxy the first time, meanwhile too.
scripts/promtool.sh install >target/services/promtool.log 2>&1 &
promtool_pid=$!
# So does Helm (for the chart; the repository tests render it too).
scripts/helm.sh install >target/services/helm.log 2>&1 &
helm_pid=$!
# And the OpenTelemetry Collector, the OTLP receiver of the tracing test.
scripts/otelcol.sh install >target/services/otelcol.log 2>&1 &
otelcol_pid=$!
# And the AsyncAPI parser (for schema/asyncapi.yaml), from the npm registry the first time.
scripts/asyncapi.sh install >target/services/asyncapi.log 2>&1 &
asyncapi_pid=$!

step "cargo build --workspace --all-targets"
cargo build --workspace --all-targets --locked

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

if [[ ${FRESH_CHECK:-1} != 0 ]]; then
  await "$fresh_rootfs_pid" target/services/fresh-rootfs.log \
    "scripts/fresh-machine-check.sh could not make its rootfs"
  fresh_rootfs_pid=
  step "README quick start on a fresh Debian machine, in the background (log: target/services/fresh.log)"
  setsid scripts/fresh-machine-check.sh >target/services/fresh.out 2>target/services/fresh.log &
  fresh_pid=$!
fi
# cargo-deny compiles for minutes the first time: beside the tests too.
setsid scripts/cargo-deny.sh install >target/services/cargo-deny.log 2>&1 &
deny_pid=$!
# mdBook (for the book in docs/) too, from crates.io the first time.
setsid scripts/docs.sh install >target/services/mdbook.log 2>&1 &
mdbook_pid=$!

step "promtool: the alert rules, and their unit tests"
await "$promtool_pid" target/services/promtool.log "could not build promtool"
scripts/promtool.sh check rules deploy/monitoring/alerts.yaml
(cd deploy/monitoring && ../../scripts/promtool.sh test rules alerts.test.yaml)

step "asyncapi: schema/asyncapi.yaml, parsed by @asyncapi/parser"
await "$asyncapi_pid" target/services/asyncapi.log "could not install the AsyncAPI parser"
scripts/asyncapi.sh check schema/asyncapi.yaml

step "helm: lint and render the chart, with its defaults and with every option on"
await "$helm_pid" target/services/helm.log "could not build helm"
for values in deploy/helm/clerk-sync/values.yaml deploy/helm/clerk-sync/ci/all-on-values.yaml; do
  scripts/helm.sh lint --strict deploy/helm/clerk-sync --values "$values"
  scripts/helm.sh template clerk-sync deploy/helm/clerk-sync --values "$values" >/dev/null
done

step "waiting for the servers"
await "$services_pid" target/services/up.log "scripts/services.sh up failed"
cat target/services/up.log >&2
# shellcheck disable=SC1091
source target/services/exports
export KAFKA_BROKERS MONGODB_URI
echo "KAFKA_BROKERS=$KAFKA_BROKERS MONGODB_URI=$MONGODB_URI" >&2

await "$otelcol_pid" target/services/otelcol.log "could not build the OpenTelemetry Collector"

step "cargo test (against the servers above)"
cargo test --workspace --locked --no-fail-fast

# FerretDB makes user-sync write one statement at a time (docs/src/test-servers.md); MongoDB and
# mongo-java-server take the batched multi-statement path, which only this run exercises.
# The outage tests are left out: this server keeps nothing across a restart.
step "user-sync against mongo-java-server (the batched write path)"
# The test binary the workspace build made, run as cargo test runs it (from the package's
# folder): `cargo test -p user-sync` would resolve features for user-sync alone and rebuild
# some 60 crates on a cold machine.
it=$(cargo test --workspace --locked --no-run --message-format=json 2>/dev/null |
  grep -F '/bins/user-sync/tests/it/' | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p')
[[ -x $it ]] || { echo "no user-sync integration test binary found" >&2; exit 1; }
memory_exports=$("${memory[@]}" scripts/services.sh up mongo)
(cd bins/user-sync &&
  MONGODB_URI=$(sed -n 's/^export MONGODB_URI=//p' <<<"$memory_exports") "$it" --skip outage)
"${memory[@]}" scripts/services.sh down mongo

step "cargo deny check bans licenses sources (advisories need RustSec's database: not here)"
await "$deny_pid" target/services/cargo-deny.log "could not install cargo-deny"
deny_pid=
scripts/cargo-deny.sh check bans licenses sources

step "docs: mdBook build (into target/book), and its links"
await "$mdbook_pid" target/services/mdbook.log "could not install mdBook"
mdbook_pid=
scripts/docs.sh build

if [[ -n $fresh_pid ]]; then
  step "README quick start on a fresh Debian machine: waiting for it"
  await "$fresh_pid" target/services/fresh.log "scripts/fresh-machine-check.sh failed"
  fresh_pid=
  tail -n 1 target/services/fresh.log >&2
else
  step "README quick start, in a scratch copy (FRESH_CHECK=0)"
  scripts/quickstart-check.sh
fi

step "all checks passed in $((SECONDS - started)) s"
