#!/usr/bin/env bash
# The node's supervisor: up.sh runs it inside the node's network namespace and a private
# mount namespace (`ip netns exec NS unshare --mount --propagation private`). It prepares the
# mount namespace, starts containerd, kubelet, kube-proxy and CoreDNS, records their pids in
# NODE_DIR/pids, and stops them all when one exits or when it gets SIGTERM.
set -euo pipefail
node=${1:?usage: inside.sh NODE_DIR BIN_DIR}
bin=${2:?usage: inside.sh NODE_DIR BIN_DIR}

# /run holds containerd's shim sockets, runc's state and iptables' lock: a tmpfs of this
# namespace's own keeps them off the host and removes them with the namespace.
mount -t tmpfs -o mode=0755 tmpfs /run
# kubelet insists on these kernel settings and writes them when they differ. Files holding
# its values, bound over them here, satisfy it while the host's settings stay as they are.
for setting in vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1 \
    kernel/keys/root_maxkeys=1000000 kernel/keys/root_maxbytes=25000000; do
  file=$node/sysctl/${setting%%=*}
  mkdir -p "$(dirname "$file")"
  echo "${setting#*=}" >"$file"
  mount --bind "$file" "/proc/sys/${setting%%=*}"
done
# No node component resolves a name through the machine's resolver.
mount --bind "$node/etc/resolv.conf" /etc/resolv.conf

: >"$node/pids"
children=()
start() { # NAME COMMAND...
  local name=$1; shift
  "$@" >"$node/logs/$name.log" 2>&1 &
  children+=($!)
  echo "$! $name" >>"$node/pids"
}
stop_all() {
  # Reverse start order: kubelet stops before the runtime it talks to.
  for (( i=${#children[@]}-1; i>=0; i-- )); do kill -TERM "${children[$i]}" 2>/dev/null || true; done
  wait || true
}
trap 'stop_all; exit 0' TERM INT

start containerd "$bin/containerd" --config "$node/containerd.toml"
for _ in $(seq 1 200); do [[ -S $node/containerd.sock ]] && break; sleep 0.05; done
# kubelet sees no iptables (its PATH has no sbin directory), so it adds no chains of its own;
# kube-proxy needs nft.
PATH=/usr/local/bin:/usr/bin start kubelet "$bin/kubelet" \
  --config "$node/kubelet.yaml" --kubeconfig "$node/kubelet-client.kubeconfig" \
  --root-dir "$node/kubelet" --cert-dir "$node/kubelet/pki" \
  --hostname-override "$NODE_IP" --node-ip "$NODE_IP" --v 1
PATH=/usr/sbin:/usr/bin start kube-proxy "$bin/kube-proxy" --config "$node/kube-proxy.yaml" --v 1
start coredns "$bin/coredns" -conf "$node/Corefile"

set +e
wait -n
status=$?
echo "a node process exited with status $status; stopping the node" >&2
stop_all
exit 1
