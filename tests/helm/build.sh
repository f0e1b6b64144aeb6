#!/usr/bin/env bash
# Builds the helm CLI from the Go module proxy (pinned in go.mod next to this
# file) and caches it outside the repo, like tests/controlplane/build.sh:
#
#   ${AUTOPILOT_TESTENV_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/autopilot-testenv}/<key>/bin/helm
#
# <key> names the helm version plus a hash of go.mod/go.sum, so changing the pin
# builds a fresh binary and never reuses a stale one. Re-running is cheap. Prints
# the bin directory on the last line of stdout; progress goes to stderr.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# go.mod may list the pin on its require line or in a require block.
helm_version=$(awk '{for (i = 1; i < NF; i++) if ($i == "helm.sh/helm/v3") {print $(i + 1); exit}}' "$here/go.mod")
sum=$(cat "$here/go.mod" "$here/go.sum" | sha256sum | cut -c1-12)
key="helm-${helm_version}-${sum}"
root="${AUTOPILOT_TESTENV_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/autopilot-testenv}"
dest="$root/$key"

log() { printf '[helm] %s\n' "$*" >&2; }

if [ -x "$dest/bin/helm" ]; then
  log "using cached binary in $dest/bin"
  echo "$dest/bin"
  exit 0
fi

# helm v3.22 needs Go >= 1.26 (go.mod's `go` line); an older go fetches that
# toolchain from the module proxy itself (GOTOOLCHAIN=auto, Go's default).
command -v go >/dev/null || { log "error: the Go toolchain is needed to build helm (apt-get install golang, or see go.dev)"; exit 1; }
mkdir -p "$root"
# A lock of its own: the control plane's build may run at the same time and
# the two do not share outputs.
exec 9>"$root/.helm-build.lock"
log "waiting for the build lock ($root/.helm-build.lock)"
flock 9
if [ -x "$dest/bin/helm" ]; then
  log "another process built $key meanwhile"
  echo "$dest/bin"
  exit 0
fi

tmp=$(mktemp -d "$root/.build-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
start=$(date +%s)
log "building $key (cold build: a few minutes on 2 cores; cached afterwards)"
cd "$here"
log "downloading modules"
go mod download
# What helm's Makefile stamps: its version, and the Kubernetes version that
# `helm lint` and `helm template` assume without a cluster (client-go's minor).
k8s_minor=$(go list -f '{{.Version}}' -m k8s.io/client-go | cut -d. -f2)
ldflags="-s -w \
 -X helm.sh/helm/v3/internal/version.version=${helm_version} \
 -X helm.sh/helm/v3/internal/version.gitTreeState=clean \
 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 \
 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=${k8s_minor} \
 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 \
 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=${k8s_minor}"
export CGO_ENABLED=0
log "compiling helm"
go build -trimpath -ldflags "$ldflags" -o "$tmp/bin/helm" helm.sh/helm/v3/cmd/helm
mkdir -p "$dest"
rm -rf "$dest/bin"
mv "$tmp/bin" "$dest/bin"
log "built $key in $(( $(date +%s) - start ))s"
echo "$dest/bin"
