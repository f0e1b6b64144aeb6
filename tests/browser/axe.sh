#!/usr/bin/env bash
# Installs axe-core (the accessibility engine tests/review.rs runs in
# headless Chromium) from the npm registry, pinned below, and caches it
# outside the repo like tests/helm/build.sh:
#
#   ${AUTOPILOT_TESTENV_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/autopilot-testenv}/axe-core-<version>/axe.min.js
#
# Prints the path of axe.min.js on the last line of stdout; progress goes
# to stderr. Re-running is cheap.
set -euo pipefail

version=4.14.1
root="${AUTOPILOT_TESTENV_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/autopilot-testenv}"
dest="$root/axe-core-$version"

log() { printf '[axe-core] %s\n' "$*" >&2; }

if [ -f "$dest/axe.min.js" ]; then
  log "using cached $dest/axe.min.js"
  echo "$dest/axe.min.js"
  exit 0
fi
command -v npm >/dev/null || { log "error: npm is needed to install axe-core (apt-get install npm)"; exit 1; }
mkdir -p "$root"
tmp=$(mktemp -d "$root/.axe-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
log "installing axe-core@$version"
npm install --prefix "$tmp" --no-audit --no-fund --silent "axe-core@$version" >&2
mkdir -p "$dest"
cp "$tmp/node_modules/axe-core/axe.min.js" "$tmp/node_modules/axe-core/LICENSE" "$dest/"
echo "$dest/axe.min.js"
