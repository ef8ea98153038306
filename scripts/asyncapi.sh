#!/usr/bin/env bash
# The AsyncAPI document checked by the official parser (@asyncapi/parser, from the npm
# registry), installed once and cached, then run:
#   scripts/asyncapi.sh check [schema/asyncapi.yaml]   parse it: fails on any error
#   scripts/asyncapi.sh install                         (only install the parser)
# The check parses the document as AsyncAPI tools do (the spec's JSON Schema, its rules,
# every $ref resolved, the message JSON Schema included) and fails, listing them, on any
# diagnostic of error severity; warnings are printed and pass. Needs Node.js 18+ and npm.
# scripts/asyncapi/package-lock.json pins the parser's whole tree (`npm ci`); the install
# is kept in $TOOLS_HOME (default ~/.cache/clerk-sync/tools), under a name that changes
# with that lock, for every clone.
set -euo pipefail
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/asyncapi" && pwd)
TOOLS_HOME=${TOOLS_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/clerk-sync/tools}
stamp=$(cat "$src/package.json" "$src/package-lock.json" | sha256sum | cut -c1-12)
root=$TOOLS_HOME/asyncapi-parser-$stamp
if [[ ! -f $root/node_modules/@asyncapi/parser/package.json ]]; then
  for tool in node npm; do
    command -v $tool >/dev/null || { echo "[asyncapi] $tool is needed (Node.js 18+)" >&2; exit 1; }
  done
  echo "[asyncapi] installing @asyncapi/parser (scripts/asyncapi/package-lock.json) into $root" >&2
  # Into a scratch folder first, so an interrupted install is never taken for a done one.
  rm -rf "$root.partial"
  mkdir -p "$root.partial"
  cp "$src/package.json" "$src/package-lock.json" "$root.partial/"
  (cd "$root.partial" && npm ci --no-audit --no-fund --loglevel=error) >&2
  rm -rf "$root"
  mv "$root.partial" "$root"
fi
case ${1:-} in
  install) exit 0 ;;
  check) doc=${2:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/schema/asyncapi.yaml} ;;
  *) echo "usage: scripts/asyncapi.sh check [document] | install" >&2; exit 2 ;;
esac
[[ -f $doc ]] || { echo "[asyncapi] no such document: $doc" >&2; exit 2; }
NODE_PATH=$root/node_modules exec node - "$doc" <<'EOF'
const path = require('path');
const { Parser, fromFile } = require('@asyncapi/parser');
const SEVERITY = ['error', 'warning', 'info', 'hint'];

(async () => {
  const file = path.resolve(process.argv[2]);
  const shown = path.relative(process.cwd(), file);
  // fromFile gives the parser the document's own path, so relative $refs (the message's
  // JSON Schema) resolve beside it.
  const { document, diagnostics } = await fromFile(new Parser(), file).parse();
  for (const d of diagnostics) {
    const at = d.path && d.path.length ? ` at /${d.path.join('/')}` : '';
    const line = d.range ? `:${d.range.start.line + 1}` : '';
    console.error(`${SEVERITY[d.severity] ?? d.severity}: ${d.message} (${d.code})${at} ` +
      `[${path.relative(process.cwd(), d.source || file)}${line}]`);
  }
  const errors = diagnostics.filter((d) => d.severity === 0).length;
  if (!document || errors > 0) {
    console.error(`[asyncapi] ${shown}: ${errors} error(s); not a valid AsyncAPI document`);
    process.exit(1);
  }
  const channels = document.channels().all().map((c) => c.address()).join(', ');
  console.error(`[asyncapi] ${shown}: valid AsyncAPI ${document.version()} ` +
    `(channels: ${channels})`);
})().catch((e) => {
  console.error(`[asyncapi] ${process.argv[2]}: ${e.stack || e}`);
  process.exit(1);
});
EOF
