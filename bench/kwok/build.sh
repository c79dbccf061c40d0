#!/usr/bin/env bash
# Builds kwok from its Go module (go.mod here) into the cache and prints the bin directory.
# A cached build returns at once.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

if [[ -x $KWOK_BIN/kwok ]]; then
  echo "$KWOK_BIN"
  exit 0
fi

command -v go >/dev/null || { echo "go is required to build kwok" >&2; exit 1; }
export GOTOOLCHAIN=local GOFLAGS=-mod=readonly CGO_ENABLED=0
# One build at a time: scripts may call this concurrently.
mkdir -p "$MODELSHIP_CACHE/kwok"
exec 9>"$MODELSHIP_CACHE/kwok/.lock"
flock 9
if [[ -x $KWOK_BIN/kwok ]]; then echo "$KWOK_BIN"; exit 0; fi

started=$(date +%s)
tmp=$(mktemp -d "${KWOK_BIN%/bin}.partial.XXXX")
trap 'rm -rf "$tmp"' EXIT
cd "$KWOK_DIR"
log "Downloading Go modules for kwok $KWOK_VERSION (first run only)"
go mod download -x 2>&1 | awk '/^# get .*\.zip$/ { n++; if (n % 25 == 0) printf "    %d modules fetched\n", n > "/dev/stderr" }'
log "Building kwok $KWOK_VERSION (about a minute on 2 idle cores)"
go build -trimpath -ldflags "-s -w" -o "$tmp/kwok" sigs.k8s.io/kwok/cmd/kwok
mkdir -p "$(dirname "$KWOK_BIN")"
rm -rf "$KWOK_BIN"
mv "$tmp" "$KWOK_BIN"
trap - EXIT
log "kwok built in $(( $(date +%s) - started ))s: $KWOK_BIN"
echo "$KWOK_BIN"
