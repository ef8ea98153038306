#!/usr/bin/env bash
# The reference as a book (docs/book.toml, docs/src): mdBook from crates.io, installed once
# into $TOOLS_HOME (default ~/.cache/clerk-sync/tools) for every clone, then run:
#   scripts/docs.sh build      the book into target/book, then its links checked
#   scripts/docs.sh install    (only install mdBook)
#   scripts/docs.sh ARGS…      mdbook ARGS… (e.g. `scripts/docs.sh build --open docs`)
# The links (README.md, ARCHITECTURE.md, deploy/README.md and every page: files and
# #anchors) are checked by crates/test-support/tests/docs.rs, which `cargo test` runs too.
set -euo pipefail
MDBOOK_VERSION=0.5.4 # needs Rust 1.88
TOOLS_HOME=${TOOLS_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/clerk-sync/tools}
root=$TOOLS_HOME/mdbook-$MDBOOK_VERSION
if [[ ! -x $root/bin/mdbook ]]; then
  echo "[docs] installing mdBook $MDBOOK_VERSION into $root (crates.io)" >&2
  # Without `serve` and `watch` (an HTTP server and a file watcher): a third of the build.
  cargo install --quiet --locked --root "$root" --version "$MDBOOK_VERSION" \
    --no-default-features --features search mdbook >&2
fi
[[ ${1:-} == install ]] && exit 0
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ $* == build ]]; then
  "$root/bin/mdbook" build docs # into target/book (docs/book.toml's build-dir)
  # Only the test target named docs (test-support's), with the workspace's features, so
  # it reuses what `cargo build --workspace --all-targets` made.
  exec cargo test --workspace --locked --quiet --test docs
fi
exec "$root/bin/mdbook" "$@"
