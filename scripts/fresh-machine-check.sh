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
#   target-<key>/        the build's output, under a key of everything of the system the
#                        build can see: every installed package and its version, read after
#                        scripts/deps.sh ran, and the Rust toolchain. A change to the list,
#                        to deps.sh or to Debian's packages builds from scratch; cargo
#                        rebuilds whatever changed in the sources. FRESH_COLD=1 builds from
#                        scratch anyway.
#
#   scripts/fresh-machine-check.sh          the check
#   scripts/fresh-machine-check.sh rootfs   only make (or find) the prerequisites' rootfs
#
# Needs root and Linux namespaces (debootstrap, unshare, chroot, mounts), and installs
# debootstrap when it is missing. FRESH_TIMEOUT bounds a run (default 2400 s).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=scripts/quickstart-lib.sh
source "$ROOT/scripts/quickstart-lib.sh"
CACHE=${FRESH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/clerk-sync/fresh}
SUITE=bookworm
MIRROR=${FRESH_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${FRESH_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
# The README's prerequisites that come from Debian's packages (Rust and Go are mounted).
PREREQUISITES=(openjdk-17-jdk-headless maven)

log() { printf '[fresh] %s\n' "$*" >&2; }
die() { printf '[fresh] error: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "needs root (debootstrap, chroot, mounts)"
unshare --mount --pid --fork true 2>/dev/null \
  || die "can't make mount and PID namespaces here (unshare): an unprivileged container?"

# This machine's toolchains, mounted read-only into the rootfs.
command -v rustc >/dev/null || die "rustc is needed: https://rustup.rs"
RUST_SYSROOT=$(rustc --print sysroot)
command -v go >/dev/null || die "go is needed: https://go.dev/dl"
GO_ROOT=$(go env GOROOT)

# Runs a command as root inside rootfs $1, in new mount and PID namespaces (every mount and
# process of it ends with it: --kill-child ends the namespace's first process, and with it
# the namespace), with a clean environment. Further mounts: FRESH_BINDS, lines of
# "source target ro|rw" (target inside the rootfs).
in_rootfs() {
  local rootfs=$1
  shift
  unshare --mount --propagation private --pid --fork --kill-child \
    bash -euo pipefail -c '
      r=$1; shift
      mount -t proc proc "$r/proc"
      mount -t sysfs -o ro sysfs "$r/sys"
      # A /dev of its own: the few character devices programs open, not the host disks.
      mount -t tmpfs -o mode=755,nosuid dev "$r/dev"
      for d in null zero full random urandom tty; do
        touch "$r/dev/$d"
        mount --bind "/dev/$d" "$r/dev/$d"
      done
      mkdir "$r/dev/pts" "$r/dev/shm"
      mount -t devpts -o newinstance,ptmxmode=0666 devpts "$r/dev/pts"
      ln -s pts/ptmx "$r/dev/ptmx"
      mount -t tmpfs -o nosuid,nodev shm "$r/dev/shm"
      ln -s /proc/self/fd "$r/dev/fd"
      ln -s /proc/self/fd/0 "$r/dev/stdin"
      ln -s /proc/self/fd/1 "$r/dev/stdout"
      ln -s /proc/self/fd/2 "$r/dev/stderr"
      while read -r src dst mode; do
        [[ -n $src ]] || continue
        mkdir -p "$r$dst"
        mount --bind "$src" "$r$dst"
        [[ $mode == ro ]] && mount -o remount,bind,ro "$r$dst"
      done <<<"${FRESH_BINDS:-}"
      cp /etc/resolv.conf "$r/etc/resolv.conf"
      # The network'"'"'s proxy settings, if any, like its resolv.conf.
      proxies=$(env | grep -iE "^(https?|no)_proxy=" || true)
      exec chroot "$r" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb $proxies \
        PATH=/opt/rust/bin:/usr/local/go/bin:/root/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        ${FRESH_ENV:-} "$@"' fresh "$rootfs" "$@"
}

# --- the prerequisites' rootfs, made once ------------------------------------------------------
mkdir -p "$CACHE"
# This machine's own CA certificates (/usr/local/share/ca-certificates: here, the network's
# TLS-inspecting proxy's) go in before anything is installed, like its resolv.conf: they are
# the network's, not the project's, and without them no registry answers over HTTPS.
local_cas=(/usr/local/share/ca-certificates/*.crt)
[[ -e ${local_cas[0]} ]] || local_cas=()
recipe="debootstrap --variant=minbase $SUITE, updates, security; local CAs $(cat "${local_cas[@]}" /dev/null | sha256sum | cut -c1-12); apt-get install --no-install-recommends ${PREREQUISITES[*]}"
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
  # As a Debian installer leaves it: the release, its updates and its security fixes.
  printf 'deb %s %s main\ndeb %s %s-updates main\ndeb %s %s-security main\n' \
    "$MIRROR" "$SUITE" "$MIRROR" "$SUITE" "$SECURITY_MIRROR" "$SUITE" >"$build/etc/apt/sources.list"
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
# Every mount of an earlier run was made in that run's own mount namespace with private
# propagation, so none of them is visible here and rm -rf can't reach through one into the
# host's toolchains or caches. (A run still alive would hold its own copy: one run at a time.)
rm -rf "$run"
mkdir -p "$run/rootfs"
tar -C "$run/rootfs" -xf "$tarball"
src=/root/clerk-sync
mkdir -p "$run/rootfs$src"
copy_checkout "$ROOT" "$run/rootfs$src"

mkdir -p "$CACHE/downloads"/{cargo-registry,cargo-git,m2,gomod,gobuild}
export FRESH_BINDS="
$RUST_SYSROOT /opt/rust ro
$GO_ROOT /usr/local/go ro
$CACHE/downloads/cargo-registry /root/.cargo/registry rw
$CACHE/downloads/cargo-git /root/.cargo/git rw
$CACHE/downloads/m2 /root/.m2 rw
$CACHE/downloads/gomod /root/go/pkg/mod rw
$CACHE/downloads/gobuild /root/.cache/go-build rw"
# Its own ports, so that it can run beside the test servers.
export FRESH_ENV="PORT=${FRESH_PORT:-28788} HEALTH_PORT=${FRESH_HEALTH_PORT:-28789}
  KAFKA_PORT=${FRESH_KAFKA_PORT:-29092} MONGO_PORT=${FRESH_MONGO_PORT:-29017}"

# Runs a shell command in $src in the rootfs, bounded in time. --foreground keeps timeout
# in this process group, so a signal to the group (Ctrl-C, or scripts/test.sh stopping
# the check) reaches it, and through unshare the whole namespace.
deadline=$((SECONDS + ${FRESH_TIMEOUT:-2400}))
in_src() {
  local left=$((deadline - SECONDS))
  ((left > 0)) || left=1
  timeout --foreground --kill-after=30 "$left" \
    bash -c "$(declare -f in_rootfs); in_rootfs \"\$@\"" fresh "$run/rootfs" bash -c "cd $src && $1"
}

started=$SECONDS
# deps.sh first, on its own, so that the build's cache can be keyed on what is installed.
log "in the rootfs: scripts/deps.sh"
in_src ". scripts/deps.sh" >"$run/deps.out" 2>&1 \
  || { cat "$run/deps.out" >&2; die "scripts/deps.sh failed on the fresh machine"; }
sed 's/^/[fresh] deps: /' "$run/deps.out" | grep -v debconf >&2 || true

# The build's output is reused only by a machine with the same packages at the same versions
# and the same Rust: it is everything of the system a build can see. (cargo rebuilds what
# changed in the sources itself.)
key=$(
  {
    dpkg-query --admindir="$run/rootfs/var/lib/dpkg" -W -f '${Package} ${Version} ${Status}\n' | sort
    rustc -vV
  } | sha256sum | cut -c1-12
)
target=$CACHE/target-$key
[[ ${FRESH_COLD:-} == 1 ]] && rm -rf "$target"
if [[ -d $target ]]; then
  log "reusing the build output of an earlier run on the same packages ($target)"
else
  log "building from scratch (no earlier build on these packages: key $key)"
fi
find "$CACHE" -maxdepth 1 -name 'target-*' ! -path "$target" -exec rm -rf {} +
mkdir -p "$target"
FRESH_BINDS+="
$target $src/target/debug rw"

log "in the rootfs: scripts/quickstart.sh --stop"
status=0
in_src "scripts/quickstart.sh --stop" >"$run/out" 2>"$run/err" || status=$?
elapsed=$((SECONDS - started))

if [[ $status -ne 0 ]]; then
  tail -n 40 "$run/err" >&2
  die "scripts/quickstart.sh --stop failed on the fresh machine (exit $status after ${elapsed}s; log: $run/err)"
fi
expect_sample_document "$run/out" || die "scripts/quickstart.sh --stop did not print the sample user's document"
cat "$run/out"
log "passed in ${elapsed}s: scripts/quickstart.sh --stop printed the sample user's document on a fresh Debian $SUITE"
rm -rf "$run"
