#!/usr/bin/env bash
# Keeps the README's first command from rotting: runs scripts/quickstart.sh --stop in a
# scratch copy of the repository (its own ports and data, the build cache shared) and
# checks that it printed the sample user's MongoDB document.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# shellcheck source=scripts/quickstart-lib.sh
source "$ROOT/scripts/quickstart-lib.sh"
copy_checkout "$ROOT" "$scratch"

out=$scratch/quickstart.out
status=0
(
  cd "$scratch"
  CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target} \
    SERVICES_DATA=$scratch/target/services \
    KAFKA_PORT=${QUICKSTART_KAFKA_PORT:-19092} MONGO_PORT=${QUICKSTART_MONGO_PORT:-19017} \
    PORT=${QUICKSTART_PORT:-18788} HEALTH_PORT=${QUICKSTART_HEALTH_PORT:-18789} \
    scripts/quickstart.sh --stop
) >"$out" 2>"$scratch/quickstart.err" || status=$?

if [[ $status -ne 0 ]]; then
  cat "$scratch/quickstart.err" "$out" >&2
  echo "quickstart check: scripts/quickstart.sh failed ($status)" >&2
  exit 1
fi
expect_sample_document "$out" || { echo "quickstart check: failed" >&2; exit 1; }
echo "quickstart check: passed (the sample user's document was printed)" >&2
