#!/usr/bin/env bash
# cargo-deny (crates.io), installed once into $TOOLS_HOME and run with deny.toml:
#   scripts/cargo-deny.sh check bans licenses sources
#   scripts/cargo-deny.sh install      (only install it)
set -euo pipefail
CARGO_DENY_VERSION=0.20.2
TOOLS_HOME=${TOOLS_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/clerk-sync/tools}
root=$TOOLS_HOME/cargo-deny-$CARGO_DENY_VERSION
if [[ ! -x $root/bin/cargo-deny ]]; then
  echo "[cargo-deny] installing cargo-deny $CARGO_DENY_VERSION into $root (crates.io)" >&2
  cargo install --quiet --locked --root "$root" --version "$CARGO_DENY_VERSION" cargo-deny >&2
fi
[[ ${1:-} == install ]] && exit 0
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec "$root/bin/cargo-deny" --all-features --locked "$@"
