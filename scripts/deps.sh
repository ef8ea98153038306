#!/usr/bin/env bash
# Installs the system packages the build needs when they are missing (Debian/Ubuntu):
# rdkafka builds its bundled librdkafka with cmake and links OpenSSL, zlib and libcurl.
# Sourced by scripts/test.sh and scripts/quickstart.sh.
missing=()
command -v cmake >/dev/null || missing+=(cmake)
[[ -f /usr/include/openssl/ssl.h ]] || missing+=(libssl-dev)
[[ -f /usr/include/zlib.h ]] || missing+=(zlib1g-dev)
[[ -f /usr/include/x86_64-linux-gnu/curl/curl.h || -f /usr/include/curl/curl.h ]] || missing+=(libcurl4-openssl-dev)
command -v pkg-config >/dev/null || missing+=(pkg-config)
command -v make >/dev/null || missing+=(make)
command -v cc >/dev/null || missing+=(gcc g++)
command -v curl >/dev/null || missing+=(curl)
if ((${#missing[@]})); then
  printf '==> installing build dependencies: %s\n' "${missing[*]}" >&2
  sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "cargo is needed: https://rustup.rs" >&2; exit 1; }
