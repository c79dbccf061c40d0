# Shared settings of the test node's scripts; sourced, not run.
#
# The node is a real kubelet, containerd (with runc and the CNI plugins) and kube-proxy, plus
# CoreDNS for cluster.local. It lives in a network namespace of its own, so every address,
# bridge, veth and nftables rule it makes is gone with that namespace, and in a private mount
# namespace, so its mounts (and the kernel settings kubelet insists on) never reach the host.
#
# Addresses: 198.18.0.0/15 is reserved for benchmarking (RFC 2544) and routed nowhere else on
# this machine. The host blackholes the whole range, so a packet for an address the node does
# not serve dies here instead of following the default route out.

source "$(dirname "${BASH_SOURCE[0]}")/../controlplane/env.sh"
NODE_SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

NODE_NETNS=modelship-node
# The veth between the host and the node: the host end (named here) and the node end.
NODE_HOST_LINK=modelship0
NODE_HOST_ADDR=198.18.128.1      # the API server listens here, so pods can reach it
NODE_UPLINK_ADDR=198.18.128.2
NODE_LINK_PREFIX=30
# The node's bridge: its address is the node's name, kubelet's address and the cluster DNS.
NODE_BRIDGE=modelship-br
NODE_IP=198.18.0.1
NODE_POD_CIDR=198.18.0.0/24
CLUSTER_POD_CIDR=198.18.0.0/17
OWN_RANGE=198.18.0.0/15
CLUSTER_DOMAIN=cluster.local

# Images the node runs; none is ever pulled. The project's images carry the names the chart
# and the operator use by default, so both run unchanged.
PAUSE_IMAGE=localhost/modelship/pause:1
MODELSTORE_IMAGE=localhost/modelship/modelstore:1
# A webhook receiver for tests (images/hookrecorder), built by build-tool.sh.
HOOKRECORDER_IMAGE=localhost/modelship/hookrecorder:1
RELEASE_VERSION=$(awk -F'"' '/^version = /{print $2; exit}' "$REPO_ROOT/Cargo.toml")
OPERATOR_IMAGE=ghcr.io/modelship/operator:$RELEASE_VERSION
SERVING_IMAGE=ghcr.io/modelship/serving:$RELEASE_VERSION

# The binaries are keyed by every module file, program and the build script.
node_key() {
  cat "$CONTROLPLANE_DIR/go.mod" "$CONTROLPLANE_DIR/go.sum" \
    "$NODE_SCRIPTS"/containerd/go.{mod,sum} "$NODE_SCRIPTS"/coredns/{go.mod,go.sum,main.go} \
    "$NODE_SCRIPTS"/images/go.mod "$NODE_SCRIPTS"/images/{modelstore,pause}/main.go \
    "$NODE_SCRIPTS/build.sh" |
    sha256sum | cut -c1-12
}
NODE_BIN=$MODELSHIP_CACHE/node/$KUBERNETES_VERSION-$(node_key)/bin

# Runs a command in the node's network namespace (not its mount namespace).
in_node_netns() { ip netns exec "$NODE_NETNS" "$@"; }

# The cgroup (in every hierarchy) under which containerd puts the pods' containers.
NODE_CGROUP=k8s.io

# One node per machine (its namespace, addresses and cgroup are fixed): whatever runs a
# cluster from up to down holds this lock, so a second run waits instead of taking the node
# from under the first.
NODE_LOCK=${MODELSHIP_NODE_LOCK:-/tmp/modelship-node.lock}
hold_node_lock() {
  exec 8>>"$NODE_LOCK"
  if ! flock -n 8; then
    log "Another cluster runs on this machine (a kept demo? tests/cluster.sh down STATE_DIR stops it); waiting up to an hour for $NODE_LOCK"
    flock -w 3600 8 || { echo "the node lock $NODE_LOCK is still held after an hour" >&2; exit 1; }
  fi
}
