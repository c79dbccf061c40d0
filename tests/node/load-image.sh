#!/usr/bin/env bash
# Puts an image into the test node's containerd (namespace k8s.io, where kubelet looks), so
# pods that name it start without a pull.
#   load-image.sh STATE_DIR build BINARY NAME     an image of one static binary (FROM scratch,
#                                                 a non-root user), built with podman
#   load-image.sh STATE_DIR archive TAR NAME...   a docker-archive (tests/images.sh --save),
#                                                 tagged with every NAME given
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
state=${1:?usage: load-image.sh STATE_DIR build|archive SOURCE NAME...}
mode=${2:?usage: load-image.sh STATE_DIR build|archive SOURCE NAME...}
source_path=${3:?usage: load-image.sh STATE_DIR build|archive SOURCE NAME...}
shift 3
(( $# > 0 )) || { echo "load-image.sh: no image name given" >&2; exit 2; }
node=$state/node
bin=$("$NODE_SCRIPTS/build.sh")
ctr() { "$bin/ctr" --address "$node/containerd.sock" --namespace k8s.io "$@"; }
mkdir -p "$node/images"

case $mode in
  build)
    name=$1
    program=$(basename "$source_path")
    context=$(mktemp -d "$node/images/context.XXXX")
    trap 'rm -rf "$context"' EXIT
    cp "$source_path" "$context/$program"
    # The sandbox runs as nobody; other programs as the images' usual non-root user.
    user=65532:65532
    [[ $program == pause ]] && user=65535:65535
    printf 'FROM scratch\nCOPY %s /%s\nUSER %s\nENTRYPOINT ["/%s"]\n' \
      "$program" "$program" "$user" "$program" >"$context/Containerfile"
    podman rmi --ignore "$name" >/dev/null
    podman build --quiet --format docker --pull=never --layers=false \
      -f "$context/Containerfile" -t "$name" "$context" >/dev/null
    archive=$node/images/$program.tar
    rm -f "$archive"
    podman save --quiet --format docker-archive -o "$archive" "$name"
    ;;
  archive) archive=$source_path ;;
  *) echo "load-image.sh: unknown mode $mode (build or archive)" >&2; exit 2 ;;
esac

if ! output=$(ctr images import "$archive" 2>&1); then
  echo "load-image.sh: importing $archive failed: $output" >&2
  exit 1
fi
imported=$(tar -xOf "$archive" manifest.json |
  python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["RepoTags"][0])')
for name in "$@"; do
  [[ $name == "$imported" ]] && continue
  if ! output=$(ctr images tag --force "$imported" "$name" 2>&1); then
    echo "load-image.sh: tagging $imported as $name failed: $output" >&2
    exit 1
  fi
done
log "Loaded $* into the node"
