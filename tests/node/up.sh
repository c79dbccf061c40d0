#!/usr/bin/env bash
# Starts the test node for the control plane in STATE_DIR: containerd (runc, CNI bridge),
# kubelet, kube-proxy (nftables) and CoreDNS, inside the node's network namespace (made by
# network.sh up) and a private mount namespace; then loads the pause, model-store and
# hook-recorder images and waits until the Node is Ready and cluster DNS answers.
# Usage: tests/node/up.sh STATE_DIR   (the control plane must run with
#        MODELSHIP_APISERVER_ADDRESS=198.18.128.1; tests/cluster.sh does all of it)
# Stop it with tests/node/down.sh STATE_DIR.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
state=${1:?usage: up.sh STATE_DIR}
state=$(cd "$state" && pwd)
node=$state/node
fail() { echo "node/up.sh: $*" >&2; exit 1; }

[[ $(id -u) == 0 && $(uname -s) == Linux ]] || fail "the node needs root on Linux"
ip netns list | grep -qw "$NODE_NETNS" ||
  fail "no network namespace $NODE_NETNS: run tests/node/network.sh up first"
[[ -f $state/env ]] || fail "$state/env not found: start the control plane first"
# shellcheck disable=SC1091
source "$state/env"
[[ $MODELSHIP_APISERVER == https://$NODE_HOST_ADDR:* ]] ||
  fail "the API server listens at $MODELSHIP_APISERVER; pods need it at $NODE_HOST_ADDR"

"$NODE_SCRIPTS/packages.sh"
bin=$("$NODE_SCRIPTS/build.sh")
started=$(date +%s.%N)

mkdir -p "$node"/{logs,etc,kubelet/pki,containerd/root,containerd/state,cni/net.d,cni/ipam,pod-logs,volume-plugins}
pki=$state/pki

# --- identities -------------------------------------------------------------------------
issue_cert "$pki" kubelet-client "/O=system:nodes/CN=system:node:$NODE_IP"
issue_cert "$pki" kubelet-serving "/CN=$NODE_IP" "IP:$NODE_IP"
issue_cert "$pki" kube-proxy "/CN=system:kube-proxy"
issue_cert "$pki" coredns "/CN=modelship:coredns"
for name in kubelet-client kube-proxy coredns; do
  write_kubeconfig "$node/$name.kubeconfig" "$MODELSHIP_APISERVER" "$pki" "$name"
done
kubectl apply --server-side --field-manager modelship-node -f "$NODE_SCRIPTS/rbac.yaml" >/dev/null

# --- configuration ------------------------------------------------------------------------
# The node's programs never ask the machine's resolver: inside.sh binds this over
# /etc/resolv.conf.
echo "# the test node resolves no names" >"$node/etc/resolv.conf"
# The base of every pod's resolv.conf, to which kubelet adds the cluster DNS and search list.
: >"$node/etc/pod-resolv.conf"
render() { # TEMPLATE OUTPUT: fills in ${NAME} placeholders from this script's variables
  NODE="$node" PKI="$pki" APISERVER="$MODELSHIP_APISERVER" OPEN_FILES="$(ulimit -n)" \
    NODE_IP="$NODE_IP" NODE_BRIDGE="$NODE_BRIDGE" NODE_POD_CIDR="$NODE_POD_CIDR" \
    CLUSTER_POD_CIDR="$CLUSTER_POD_CIDR" CLUSTER_DOMAIN="$CLUSTER_DOMAIN" \
    PAUSE_IMAGE="$PAUSE_IMAGE" \
    python3 -c 'import os, string, sys
print(string.Template(open(sys.argv[1]).read()).substitute(os.environ), end="")' "$1" >"$2"
}
render "$NODE_SCRIPTS/config/containerd.toml" "$node/containerd.toml"
render "$NODE_SCRIPTS/config/cni.conflist" "$node/cni/net.d/10-modelship.conflist"
render "$NODE_SCRIPTS/config/kubelet.yaml" "$node/kubelet.yaml"
render "$NODE_SCRIPTS/config/kube-proxy.yaml" "$node/kube-proxy.yaml"
render "$NODE_SCRIPTS/config/Corefile" "$node/Corefile"

# --- start --------------------------------------------------------------------------------
setsid nsenter --net="/run/netns/$NODE_NETNS" -- unshare --mount --propagation private -- \
  env NODE_IP="$NODE_IP" bash "$NODE_SCRIPTS/inside.sh" "$node" "$bin" \
  >"$node/logs/supervisor.log" 2>&1 </dev/null &
echo "$!" >"$node/supervisor.pid"

supervised() { kill -0 "$(cat "$node/supervisor.pid")" 2>/dev/null; }
node_failed() {
  echo "node/up.sh: $*; last log lines:" >&2
  for file in "$node"/logs/*.log; do echo "--- $file" >&2; tail -15 "$file" >&2; done
  exit 1
}
for _ in $(seq 1 200); do
  [[ -S $node/containerd.sock ]] && break
  supervised || node_failed "the node's supervisor exited"
  sleep 0.05
done
[[ -S $node/containerd.sock ]] || node_failed "containerd did not open its socket"

# --- images -------------------------------------------------------------------------------
"$NODE_SCRIPTS/load-image.sh" "$state" build "$bin/pause" "$PAUSE_IMAGE"
"$NODE_SCRIPTS/load-image.sh" "$state" build "$bin/modelstore" "$MODELSTORE_IMAGE"
"$NODE_SCRIPTS/load-image.sh" "$state" build "$("$NODE_SCRIPTS/build-tool.sh" hookrecorder)" \
  "$HOOKRECORDER_IMAGE"

# --- ready ----------------------------------------------------------------------------------
for _ in $(seq 1 600); do
  kubectl get node "$NODE_IP" >/dev/null 2>&1 && break
  supervised || node_failed "the node's supervisor exited"
  sleep 0.1
done
kubectl patch node "$NODE_IP" --type merge \
  -p "{\"spec\":{\"podCIDR\":\"$NODE_POD_CIDR\",\"podCIDRs\":[\"$NODE_POD_CIDR\"]}}" >/dev/null
kubectl wait --for condition=Ready --timeout=60s "node/$NODE_IP" >/dev/null ||
  node_failed "the Node did not become Ready"
for _ in $(seq 1 300); do
  curl -fsS "http://$NODE_IP:8181/ready" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "http://$NODE_IP:8181/ready" >/dev/null || node_failed "CoreDNS is not ready"
awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN { printf "node Ready in %.1fs\n", e - s }' >&2
log "Node $NODE_IP up: pods $NODE_POD_CIDR, Services $SERVICE_CIDR, DNS $NODE_IP (logs in $node/logs)"
