#!/usr/bin/env bash
# Sends a payload file to clerk-sync as a correctly signed Svix webhook, like Clerk does.
#
#   scripts/send-webhook.sh <payload.json> [--id msg_…] [--url http://localhost:8788/webhook]
#
# The secret is CLERK_WEBHOOK_SECRET (its first entry), or the local sample secret.
# Samples: scripts/samples/user.created.json, user.updated.json, user.deleted.json.
# Signing uses `clerk-sync sign` (the svix crate): from target/ or PATH, else inside the
# running compose stack (`docker compose exec clerk-sync clerk-sync sign`), so the compose
# path needs no Rust on the host; else it is built with cargo.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

payload=""
id=""
url=${WEBHOOK_URL:-http://localhost:${PORT:-8788}/webhook}
while (($#)); do
  case $1 in
    --id) id=$2; shift 2 ;;
    --url) url=$2; shift 2 ;;
    -h | --help) sed -n '2,10p' "$0"; exit 0 ;;
    *) payload=$1; shift ;;
  esac
done
[[ -n $payload && -f $payload ]] || { sed -n '2,10p' "$0" >&2; exit 2; }
secret=${CLERK_WEBHOOK_SECRET:-whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw}
secret=${secret%%[, ]*}

target=${CARGO_TARGET_DIR:-$ROOT/target}
if [[ -x $target/debug/clerk-sync ]]; then
  sign=("$target/debug/clerk-sync" sign)
elif [[ -x $target/release/clerk-sync ]]; then
  sign=("$target/release/clerk-sync" sign)
elif command -v clerk-sync >/dev/null; then
  sign=(clerk-sync sign)
elif command -v docker >/dev/null && [[ -n $(cd "$ROOT" && docker compose ps -q clerk-sync 2>/dev/null) ]]; then
  sign=(docker compose --project-directory "$ROOT" exec -T -e CLERK_WEBHOOK_SECRET clerk-sync clerk-sync sign)
else
  sign=(cargo run -q --manifest-path "$ROOT/Cargo.toml" -p clerk-sync -- sign)
fi

# The secret goes by environment, not argv (visible in ps).
export CLERK_WEBHOOK_SECRET=$secret
args=()
[[ -n $id ]] && args+=(--id "$id")
headers=()
while IFS= read -r line; do
  headers+=(-H "$line")
done < <("${sign[@]}" ${args[@]+"${args[@]}"} <"$payload")

curl -sS --fail-with-body -X POST "$url" -H 'content-type: application/json' "${headers[@]}" \
  --data-binary "@$payload" -w '\n'
