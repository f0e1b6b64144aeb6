#!/usr/bin/env bash
# Builds etcd, kube-apiserver and kube-controller-manager from the Go module
# proxy (pinned in go.mod next to this file) and caches them outside the repo:
#
#   ${AUTOPILOT_TESTENV_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/autopilot-testenv}/<key>/bin
#
# <key> names the versions plus a hash of go.mod/go.sum, so changing a pin builds
# a fresh set and never reuses a stale one. Re-running is cheap: an existing,
# complete cache is reused and its bin path printed. Prints the bin directory on
# the last line of stdout; progress goes to stderr.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
k8s_version=$(awk '$1=="k8s.io/kubernetes"{print $2; exit}' "$here/go.mod")
etcd_version=$(awk '$1=="go.etcd.io/etcd/server/v3"{print $2; exit}' "$here/go.mod")
sum=$(cat "$here/go.mod" "$here/go.sum" "$here/etcd/main.go" | sha256sum | cut -c1-12)
key="k8s-${k8s_version}-etcd-${etcd_version}-${sum}"
root="${AUTOPILOT_TESTENV_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/autopilot-testenv}"
dest="$root/$key"
bins=(etcd kube-apiserver kube-controller-manager)

complete() {
  for b in "${bins[@]}"; do [ -x "$dest/bin/$b" ] || return 1; done
}

log() { printf '[controlplane] %s\n' "$*" >&2; }

if complete; then
  log "using cached binaries in $dest/bin"
  echo "$dest/bin"
  exit 0
fi

command -v go >/dev/null || { log "error: the Go toolchain is needed to build the test control plane (apt-get install golang, or see go.dev)"; exit 1; }
mkdir -p "$root"
# One builder at a time: test binaries started in parallel wait here instead of
# building the same thing twice.
exec 9>"$root/.build.lock"
log "waiting for the build lock ($root/.build.lock)"
flock 9
if complete; then
  log "another process built $key meanwhile"
  echo "$dest/bin"
  exit 0
fi

tmp=$(mktemp -d "$root/.build-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
log "building $key (cold build: several minutes on 2 cores; cached afterwards)"
cd "$here"
log "downloading modules"
go mod download
minor=${k8s_version#v1.}; minor=${minor%%.*}
ldflags="-s -w \
 -X k8s.io/component-base/version.gitVersion=${k8s_version} \
 -X k8s.io/component-base/version.gitMajor=1 \
 -X k8s.io/component-base/version.gitMinor=${minor} \
 -X k8s.io/component-base/version.gitTreeState=clean"
export CGO_ENABLED=0
for b in "${bins[@]}"; do
  t0=$(date +%s)
  log "compiling $b"
  case "$b" in
    etcd) pkg=./etcd ;;
    *) pkg="k8s.io/kubernetes/cmd/$b" ;;
  esac
  go build -trimpath -ldflags "$ldflags" -o "$tmp/bin/$b" "$pkg"
  log "compiled $b in $(( $(date +%s) - t0 ))s"
done
mkdir -p "$dest"
rm -rf "$dest/bin"
mv "$tmp/bin" "$dest/bin"
log "built $key in $(( $(date +%s) - start ))s"
echo "$dest/bin"
