#!/usr/bin/env bash
# Proves the README's first command on a machine that has only the README's prerequisites.
#
# The machine: a Debian bookworm rootfs made with debootstrap (variant minbase: no compiler,
# no headers, no curl), given what the README asks for and nothing else: Java 17 + Maven from
# Debian's packages, and this machine's Rust and Go toolchains mounted read-only. Into it goes
# a copy of the repository's tracked (and untracked, not ignored) files, as a clone would
# hold them, and in it runs what the README says, with its own ports:
#
#   scripts/quickstart.sh --stop    scripts/deps.sh, the build, Kafka and FerretDB installed
#                                   and started, both services, a signed webhook, the document
#
# It fails unless the sample user's document is printed. It runs in its own mount and PID
# namespaces (unshare), so its mounts and processes end with it, and with no variable of
# this shell's but the ports. Of this machine it takes what any machine on its network has:
# resolv.conf and the local CA certificates (a TLS-inspecting proxy's, here).
#
# Caches, in FRESH_CACHE (default ~/.cache/clerk-sync/fresh):
#   rootfs-<recipe>.tar  the prerequisites' rootfs, made once (about 2 min); every run unpacks
#                        a new copy of it, so nothing an earlier run installed is there.
#   downloads/           cargo's registry, Maven's repository, Go's module and build caches:
#                        sources and what is compiled from them, never a system package.
#   target-<key>/        the build's output, under a key made of everything of the system the
#                        build can see (the recipe, scripts/system-packages, scripts/deps.sh,
#                        the Rust toolchain): changing any of them builds from scratch, and
#                        cargo rebuilds whatever changed in the sources. FRESH_COLD=1 builds
#                        from scratch anyway.
#
#   scripts/fresh-machine-check.sh          the check
#   scripts/fresh-machine-check.sh rootfs   only make (or find) the prerequisites' rootfs
#
# Needs root (debootstrap, chroot, mounts; re-runs itself with sudo when it can), and
# installs debootstrap when it is missing. FRESH_TIMEOUT bounds a run (default 2400 s).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${FRESH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/clerk-sync/fresh}
SUITE=bookworm
MIRROR=${FRESH_MIRROR:-http://deb.debian.org/debian}
# The README's prerequisites that come from Debian's packages (Rust and Go are mounted).
PREREQUISITES=(openjdk-17-jdk-headless maven)
SAMPLE_USER=user_2pZ6mQ3xYfTgHk8LwNcVbR1aS4d

log() { printf '[fresh] %s\n' "$*" >&2; }
die() { printf '[fresh] error: %s\n' "$*" >&2; exit 1; }

if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null && sudo -n true 2>/dev/null \
    || die "needs root (debootstrap, chroot, mounts): run it as root or with sudo"
  exec sudo -n FRESH_CACHE="$CACHE" FRESH_COLD="${FRESH_COLD:-}" "$0" "$@"
fi
command -v unshare >/dev/null || die "needs util-linux's unshare"

# This machine's toolchains, mounted read-only into the rootfs.
command -v rustc >/dev/null || die "rustc is needed: https://rustup.rs"
RUST_SYSROOT=$(rustc --print sysroot)
command -v go >/dev/null || die "go is needed: https://go.dev/dl"
GO_ROOT=$(go env GOROOT)

# Runs a command as root inside rootfs $1, in new mount and PID namespaces, with a clean
# environment. Further mounts: FRESH_BINDS, lines of "source target ro|rw" (target inside).
in_rootfs() {
  local rootfs=$1
  shift
  unshare --mount --propagation private --pid --fork --kill-child \
    bash -euo pipefail -c '
      r=$1; shift
      mount -t proc proc "$r/proc"
      mount --rbind /dev "$r/dev"
      mount -t sysfs -o ro sysfs "$r/sys"
      while read -r src dst mode; do
        [[ -n $src ]] || continue
        mkdir -p "$r$dst"
        mount --bind "$src" "$r$dst"
        [[ $mode == ro ]] && mount -o remount,bind,ro "$r$dst"
      done <<<"${FRESH_BINDS:-}"
      cp /etc/resolv.conf "$r/etc/resolv.conf"
      exec chroot "$r" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
        PATH=/opt/rust/bin:/usr/local/go/bin:/root/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        ${FRESH_ENV:-} "$@"' fresh "$rootfs" "$@"
}

mkdir -p "$CACHE/downloads"/{cargo,m2,gomod,gobuild}

# --- the prerequisites' rootfs, made once ------------------------------------------------------
# This machine's own CA certificates (/usr/local/share/ca-certificates: here, the network's
# TLS-inspecting proxy's) go in before anything is installed, like its resolv.conf: they are
# the network's, not the project's, and without them no registry answers over HTTPS.
local_cas=(/usr/local/share/ca-certificates/*.crt)
[[ -e ${local_cas[0]} ]] || local_cas=()
recipe="debootstrap --variant=minbase $SUITE; local CAs $(cat "${local_cas[@]}" /dev/null | sha256sum | cut -c1-12); apt-get install --no-install-recommends ${PREREQUISITES[*]}"
tarball=$CACHE/rootfs-$(sha256sum <<<"$recipe" | cut -c1-12).tar
if [[ ! -f $tarball ]]; then
  if ! command -v debootstrap >/dev/null; then
    log "installing debootstrap"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  fi
  build=$CACHE/rootfs-build
  rm -rf "$build"
  log "making a Debian $SUITE rootfs with debootstrap (once; cached as $tarball)"
  debootstrap --variant=minbase "$SUITE" "$build" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 \
    || { tail -n 20 "$CACHE/debootstrap.log" >&2; die "debootstrap failed"; }
  if ((${#local_cas[@]})); then
    mkdir -p "$build/usr/local/share/ca-certificates"
    cp "${local_cas[@]}" "$build/usr/local/share/ca-certificates/"
  fi
  log "installing the README's prerequisites into it: ${PREREQUISITES[*]}"
  FRESH_ENV="DEBIAN_FRONTEND=noninteractive" in_rootfs "$build" sh -c \
    "apt-get update -qq && apt-get install -y -qq --no-install-recommends ${PREREQUISITES[*]} >/dev/null && apt-get clean && rm -rf /var/lib/apt/lists/*"
  tar -C "$build" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
  rm -rf "$build"
  # Older recipes' rootfs.
  find "$CACHE" -maxdepth 1 -name 'rootfs-*.tar' ! -path "$tarball" -delete
fi
[[ ${1:-} == rootfs ]] && { log "rootfs: $tarball"; exit 0; }

# --- this run's machine ------------------------------------------------------------------------
run=$CACHE/run
# The mounts lived in the run's own namespace, so nothing is mounted here; check before rm -rf.
if grep -qF " $run/" /proc/self/mountinfo; then die "something is still mounted under $run"; fi
rm -rf "$run"
mkdir -p "$run/rootfs"
tar -C "$run/rootfs" -xf "$tarball"
src=/root/clerk-sync
mkdir -p "$run/rootfs$src"
if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard |
    xargs -0 tar -cf - --ignore-failed-read 2>/dev/null) | tar -xf - -C "$run/rootfs$src"
else
  tar -C "$ROOT" --exclude=./target -cf - . | tar -xf - -C "$run/rootfs$src"
fi

key=$(
  {
    echo "$recipe"
    cat "$run/rootfs$src/scripts/system-packages" 2>/dev/null || echo "no system-packages"
    cat "$run/rootfs$src/scripts/deps.sh"
    rustc -vV
  } | sha256sum | cut -c1-12
)
target=$CACHE/target-$key
[[ ${FRESH_COLD:-} == 1 ]] && rm -rf "$target"
if [[ -d $target ]]; then
  log "reusing the build output of an earlier run on the same system ($target)"
else
  log "building from scratch (no earlier build under this system's key $key)"
fi
find "$CACHE" -maxdepth 1 -name 'target-*' ! -path "$target" -exec rm -rf {} +
mkdir -p "$target"

export FRESH_BINDS="
$RUST_SYSROOT /opt/rust ro
$GO_ROOT /usr/local/go ro
$CACHE/downloads/cargo /root/.cargo rw
$CACHE/downloads/m2 /root/.m2 rw
$CACHE/downloads/gomod /root/go/pkg/mod rw
$CACHE/downloads/gobuild /root/.cache/go-build rw
$target $src/target/debug rw"
# Its own ports, so that it can run beside the test servers.
export FRESH_ENV="PORT=${FRESH_PORT:-28788} HEALTH_PORT=${FRESH_HEALTH_PORT:-28789}
  KAFKA_PORT=${FRESH_KAFKA_PORT:-29092} MONGO_PORT=${FRESH_MONGO_PORT:-29017}"

log "in the rootfs: cd $src && scripts/quickstart.sh --stop"
started=$SECONDS
status=0
timeout --kill-after=30 "${FRESH_TIMEOUT:-2400}" \
  bash -c "$(declare -f in_rootfs); in_rootfs \"\$@\"" fresh "$run/rootfs" \
  sh -c "cd $src && scripts/quickstart.sh --stop" >"$run/out" 2>"$run/err" || status=$?
elapsed=$((SECONDS - started))

if [[ $status -ne 0 ]]; then
  tail -n 40 "$run/err" >&2
  die "scripts/quickstart.sh --stop failed on the fresh machine (exit $status after ${elapsed}s; log: $run/err)"
fi
for expect in "\"clerkId\": \"$SAMPLE_USER\"" '"lastName": "King"' '"isDeleted": false' \
  '"syncStatus": "synced"'; do
  grep -qF "$expect" "$run/out" || { cat "$run/out" >&2; die "the printed document lacks $expect"; }
done
cat "$run/out"
log "passed in ${elapsed}s: scripts/quickstart.sh --stop printed the sample user's document on a fresh Debian $SUITE"
rm -rf "$run"
