#!/usr/bin/env bash
# Installs the system packages of scripts/system-packages that are missing (Debian/Ubuntu):
# each row says how to tell it is there (a command, a header the C compiler finds, a file),
# so a machine that has them from elsewhere installs nothing.
# Sourced by scripts/test.sh and scripts/quickstart.sh.
deps_present() {
  case $1 in
    command) command -v "$2" >/dev/null ;;
    header) command -v cc >/dev/null && printf '#include <%s>\n' "$2" | cc -E -x c - >/dev/null 2>&1 ;;
    file) [[ -e $2 ]] ;;
    *) echo "scripts/system-packages: unknown check '$1'" >&2; return 2 ;;
  esac
}
deps_missing=()
while read -r deps_pkg _ deps_kind deps_what _; do
  [[ -n $deps_pkg ]] || continue
  deps_present "$deps_kind" "$deps_what" || deps_missing+=("$deps_pkg")
done < <(sed 's/#.*//' "$(dirname "${BASH_SOURCE[0]}")/system-packages")
if ((${#deps_missing[@]})); then
  printf '==> installing system packages: %s\n' "${deps_missing[*]}" >&2
  deps_sudo=()
  [[ $(id -u) -eq 0 ]] || deps_sudo=(sudo)
  "${deps_sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${deps_sudo[@]}" apt-get install -y -qq --no-install-recommends \
    "${deps_missing[@]}" >/dev/null
fi
unset deps_missing deps_sudo deps_pkg deps_kind deps_what
command -v cargo >/dev/null || { echo "cargo is needed: https://rustup.rs" >&2; exit 1; }
