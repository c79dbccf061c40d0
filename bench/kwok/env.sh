# Shared settings of the KWOK scripts; sourced, not run.
#
# KWOK (sigs.k8s.io/kwok) plays the kubelet of fake nodes: it marks a node Ready and every pod
# scheduled there Running and Ready, without running anything. The operator benchmark gets its
# thousands of pods from it. Its pod IPs are labels only: nothing listens there.

source "$(dirname "${BASH_SOURCE[0]}")/../../tests/controlplane/env.sh"
KWOK_DIR=$REPO_ROOT/bench/kwok
KWOK_VERSION=$(awk '$1 == "sigs.k8s.io/kwok" { print $2; exit }' "$KWOK_DIR/go.mod")

# The binary is keyed by the module files and the build script, so any change rebuilds.
kwok_key() {
  cat "$KWOK_DIR/go.mod" "$KWOK_DIR/go.sum" "$KWOK_DIR/build.sh" | sha256sum | cut -c1-12
}
KWOK_BIN=$MODELSHIP_CACHE/kwok/$KWOK_VERSION-$(kwok_key)/bin

# kwok_stage_dir: the kustomize/stage directory of the KWOK module in the Go module cache
# (downloaded, and checked against go.sum, when missing).
kwok_stage_dir() {
  local dir
  dir=$(cd "$KWOK_DIR" && GOTOOLCHAIN=local GOFLAGS=-mod=readonly \
    go mod download -json sigs.k8s.io/kwok | awk -F'"' '$2 == "Dir" { print $4 }')
  if [[ -z $dir || ! -d $dir/kustomize/stage ]]; then
    echo "no kustomize/stage in the KWOK module ($KWOK_VERSION) in the Go module cache" >&2
    return 1
  fi
  echo "$dir/kustomize/stage"
}
