#!/usr/bin/env bash
# Builds one small test program of images/ (standard library only, static) into a cache keyed
# by its source, and prints the binary's path:
#   build-tool.sh hookrecorder
# The node's own programs (build.sh) are keyed apart, so a new tool never rebuilds them.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
name=${1:?usage: build-tool.sh PROGRAM}
source_dir=$NODE_SCRIPTS/images/$name
[[ -f $source_dir/main.go ]] || { echo "build-tool.sh: no images/$name/main.go" >&2; exit 2; }
key=$(cat "$NODE_SCRIPTS/images/go.mod" "$source_dir/main.go" "$0" | sha256sum | cut -c1-12)
out=$MODELSHIP_CACHE/node/tools/$name-$key/$name
if [[ ! -x $out ]]; then
  command -v go >/dev/null || { echo "go is required to build $name" >&2; exit 1; }
  mkdir -p "$(dirname "$out")"
  exec 9>"$(dirname "$out")/.lock"
  flock 9
  if [[ ! -x $out ]]; then
    (cd "$NODE_SCRIPTS/images" &&
     GOTOOLCHAIN=local GOFLAGS=-mod=readonly CGO_ENABLED=0 \
       go build -trimpath -ldflags "-s -w" -o "$out.partial" "./$name")
    mv "$out.partial" "$out"
  fi
fi
echo "$out"
