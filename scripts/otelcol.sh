#!/usr/bin/env bash
# An OpenTelemetry Collector (the OTLP receiver and the file exporter: scripts/otelcol),
# built from the Go module proxy once and cached, then run:
#   scripts/otelcol.sh --config collector.yaml
#   scripts/otelcol.sh install      (only build it; prints nothing else)
#   scripts/otelcol.sh path         (the binary's path, building it first if needed)
# The tracing tests start it as the OTLP receiver and read the spans back from its file.
# The binary is kept in $TOOLS_HOME (default ~/.cache/clerk-sync/tools) for every clone,
# under a name that changes with scripts/otelcol's go.sum and main.go.
set -euo pipefail
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/otelcol" && pwd)
TOOLS_HOME=${TOOLS_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/clerk-sync/tools}
stamp=$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-12)
bin=$TOOLS_HOME/otelcol-$stamp/otelcol
if [[ ! -x $bin ]]; then
  command -v go >/dev/null || { echo "[otelcol] go is needed to build the collector" >&2; exit 1; }
  echo "[otelcol] building the OpenTelemetry Collector into ${bin%/otelcol} (a few minutes, once)" >&2
  mkdir -p "${bin%/otelcol}"
  # -mod=readonly: go.sum pins every module; a build never resolves anything anew.
  (cd "$src" && GOFLAGS=-mod=readonly go build -trimpath -o "$bin.tmp" .) >&2
  mv "$bin.tmp" "$bin"
fi
case ${1:-} in
  install) exit 0 ;;
  path) echo "$bin"; exit 0 ;;
esac
exec "$bin" "$@"
