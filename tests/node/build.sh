#!/usr/bin/env bash
# Builds the test node's programs into the cache and prints their directory: kubelet and
# kube-proxy (from the control plane's k8s.io/kubernetes module), containerd, its runc shim
# and ctr (containerd module), CoreDNS (coredns/), and the pause and model-store programs
# (images/). A cached build returns at once.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

programs=(kubelet kube-proxy containerd containerd-shim-runc-v2 ctr coredns pause modelstore)
cached=1
for program in "${programs[@]}"; do [[ -x $NODE_BIN/$program ]] || cached=0; done
if [[ $cached == 1 ]]; then
  echo "$NODE_BIN"
  exit 0
fi

command -v go >/dev/null || { echo "go is required to build the node" >&2; exit 1; }
export GOTOOLCHAIN=local GOFLAGS=-mod=readonly CGO_ENABLED=0
# One build at a time: tests and scripts may call this concurrently.
mkdir -p "$MODELSHIP_CACHE/node"
exec 9>"$MODELSHIP_CACHE/node/.lock"
flock 9
if [[ -x $NODE_BIN/modelstore && -x $NODE_BIN/kubelet ]]; then echo "$NODE_BIN"; exit 0; fi

started=$(date +%s)
tmp=$(mktemp -d "${NODE_BIN%/bin}.partial.XXXX")
trap 'rm -rf "$tmp"' EXIT
progress() { log "Building $1 ($(( $(date +%s) - started ))s so far; $2)"; }

pkg=k8s.io/component-base/version
minor=$(cut -d. -f2 <<<"$KUBERNETES_VERSION")
k8s_ldflags="-s -w -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
k8s_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
(cd "$CONTROLPLANE_DIR"
 progress kubelet "the first node build takes about 6 minutes on 2 cores"
 go build -trimpath -ldflags "$k8s_ldflags" -o "$tmp/kubelet" k8s.io/kubernetes/cmd/kubelet
 progress kube-proxy "same module"
 go build -trimpath -ldflags "$k8s_ldflags" -o "$tmp/kube-proxy" k8s.io/kubernetes/cmd/kube-proxy)

(cd "$NODE_SCRIPTS/containerd"
 version=$(go list -m -f '{{.Version}}' github.com/containerd/containerd/v2)
 ldflags="-s -w -X github.com/containerd/containerd/v2/version.Version=$version"
 for cmd in containerd containerd-shim-runc-v2 ctr; do
   progress "$cmd" "containerd $version"
   go build -trimpath -ldflags "$ldflags" -o "$tmp/$cmd" "github.com/containerd/containerd/v2/cmd/$cmd"
 done)

(cd "$NODE_SCRIPTS/coredns"
 progress coredns "$(go list -m -f '{{.Version}}' github.com/coredns/coredns)"
 go build -trimpath -ldflags "-s -w" -o "$tmp/coredns" .)

(cd "$NODE_SCRIPTS/images"
 for program in pause modelstore; do
   progress "$program" "static, standard library only"
   go build -trimpath -ldflags "-s -w" -o "$tmp/$program" "./$program"
 done)

mkdir -p "$(dirname "$NODE_BIN")"
rm -rf "$NODE_BIN"
mv "$tmp" "$NODE_BIN"
trap - EXIT
log "Node built in $(( $(date +%s) - started ))s: $NODE_BIN"
echo "$NODE_BIN"
