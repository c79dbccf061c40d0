#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kube-scheduler and etcd from their Go
# modules (see go.mod) into the cache. Prints the bin directory. A cached build returns at once.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

if [[ -x $CONTROLPLANE_BIN/kube-apiserver && -x $CONTROLPLANE_BIN/kube-controller-manager &&
      -x $CONTROLPLANE_BIN/kube-scheduler && -x $CONTROLPLANE_BIN/etcd ]]; then
  echo "$CONTROLPLANE_BIN"
  exit 0
fi

command -v go >/dev/null || { echo "go is required to build the control plane" >&2; exit 1; }
export GOFLAGS=-mod=readonly
export GOTOOLCHAIN=local
cd "$CONTROLPLANE_DIR"
started=$(date +%s)
log "Downloading Go modules for Kubernetes $KUBERNETES_VERSION (first run only)"
go mod download -x 2>&1 | awk '/^# get .*\.zip$/ { n++; if (n % 25 == 0) printf "    %d modules fetched\n", n > "/dev/stderr" }'

mkdir -p "$(dirname "$CONTROLPLANE_BIN")"
tmp=$(mktemp -d "${CONTROLPLANE_BIN%/bin}.partial.XXXX")
trap 'rm -rf "$tmp"' EXIT
pkg=k8s.io/component-base/version
minor=$(cut -d. -f2 <<<"$KUBERNETES_VERSION")
ldflags="-s -w -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
targets=(k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager
         k8s.io/kubernetes/cmd/kube-scheduler ./etcd)
for target in "${targets[@]}"; do
  name=$(basename "$target")
  log "Building $name ($(( $(date +%s) - started ))s so far; the first build takes about 10 minutes on 2 cores)"
  go build -trimpath -ldflags "$ldflags" -o "$tmp/$name" "$target"
done
mkdir -p "$(dirname "$CONTROLPLANE_BIN")"
rm -rf "$CONTROLPLANE_BIN"
mv "$tmp" "$CONTROLPLANE_BIN"
trap - EXIT
log "Control plane built in $(( $(date +%s) - started ))s: $CONTROLPLANE_BIN"
echo "$CONTROLPLANE_BIN"
