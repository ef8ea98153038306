#!/usr/bin/env bash
# Installs the system packages the build needs when they are missing (Debian/Ubuntu):
# rdkafka builds its bundled librdkafka with cmake and links OpenSSL (zlib is built from
# source and linked statically; libcurl isn't used).
# Sourced by scripts/test.sh and scripts/quickstart.sh.
missing=()
command -v cmake >/dev/null || missing+=(cmake)
[[ -f /usr/include/openssl/ssl.h ]] || missing+=(libssl-dev)
command -v pkg-config >/dev/null || missing+=(pkg-config)
command -v make >/dev/null || missing+=(make)
command -v cc >/dev/null || missing+=(gcc g++)
command -v curl >/dev/null || missing+=(curl)
command -v openssl >/dev/null || missing+=(openssl)
if ((${#missing[@]})); then
  printf '==> installing build dependencies: %s\n' "${missing[*]}" >&2
  sudo=()
  [[ $(id -u) -eq 0 ]] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "cargo is needed: https://rustup.rs" >&2; exit 1; }
