#!/usr/bin/env bash
# Prometheus's promtool, built from the Go module proxy once and cached, then run:
#   scripts/promtool.sh check rules deploy/monitoring/alerts.yaml
#   scripts/promtool.sh install      (only build it)
# The first build takes a few minutes (Prometheus's module graph); the binary is kept in
# $TOOLS_HOME (default ~/.cache/clerk-sync/tools) for every clone.
set -euo pipefail
PROMETHEUS_MODULE_VERSION=v0.316.0 # Prometheus 3.x, as the Go module proxy versions it
TOOLS_HOME=${TOOLS_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/clerk-sync/tools}
bin=$TOOLS_HOME/promtool-$PROMETHEUS_MODULE_VERSION/promtool
if [[ ! -x $bin ]]; then
  command -v go >/dev/null || { echo "[promtool] go is needed to build promtool" >&2; exit 1; }
  echo "[promtool] building promtool ($PROMETHEUS_MODULE_VERSION) into ${bin%/promtool}" >&2
  mkdir -p "${bin%/promtool}"
  GOBIN="${bin%/promtool}" GOFLAGS=-mod=mod \
    go install "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_MODULE_VERSION" >&2
fi
[[ ${1:-} == install ]] && exit 0
exec "$bin" "$@"
