#!/usr/bin/env bash
# Helm, built from the Go module proxy once and cached, then run:
#   scripts/helm.sh lint --strict deploy/helm/clerk-sync
#   scripts/helm.sh install      (only build it)
# The first build takes several minutes (Kubernetes' client libraries); the binary is kept
# in $TOOLS_HOME (default ~/.cache/clerk-sync/tools) for every clone. TOOLS_NO_BUILD=1
# exits 3 instead of building (the repository test, which must not build for minutes).
set -euo pipefail
HELM_VERSION=v4.3.2
TOOLS_HOME=${TOOLS_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/clerk-sync/tools}
bin=$TOOLS_HOME/helm-$HELM_VERSION/helm
if [[ ! -x $bin ]]; then
  if [[ ${TOOLS_NO_BUILD:-0} == 1 ]]; then
    echo "[helm] not built: run scripts/helm.sh install" >&2
    exit 3
  fi
  command -v go >/dev/null || { echo "[helm] go is needed to build helm" >&2; exit 1; }
  echo "[helm] building helm ($HELM_VERSION) into ${bin%/helm}" >&2
  mkdir -p "${bin%/helm}"
  GOBIN="${bin%/helm}" GOFLAGS=-mod=mod \
    go install "helm.sh/helm/v4/cmd/helm@$HELM_VERSION" >&2
fi
[[ ${1:-} == install ]] && exit 0
exec "$bin" "$@"
