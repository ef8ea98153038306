#!/usr/bin/env bash
# Keeps the README's first command from rotting: runs scripts/quickstart.sh --stop in a
# scratch copy of the repository (its own ports and data, the build cache shared) and
# checks that it printed the sample user's MongoDB document.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# The tracked files as they are in the working tree (what a clone would hold, plus edits);
# outside git, everything but target/.
if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard | xargs -0 tar -cf - 2>/dev/null) |
    tar -xf - -C "$scratch"
else
  tar -C "$ROOT" --exclude=./target -cf - . | tar -xf - -C "$scratch"
fi

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
for expect in '"clerkId": "user_2pZ6mQ3xYfTgHk8LwNcVbR1aS4d"' '"lastName": "King"' \
  '"email": "ada.lovelace@work.example"' '"isDeleted": false' '"syncStatus": "synced"'; do
  if ! grep -qF "$expect" "$out"; then
    cat "$out" >&2
    echo "quickstart check: the printed document lacks $expect" >&2
    exit 1
  fi
done
echo "quickstart check: passed (the sample user's document was printed)" >&2
