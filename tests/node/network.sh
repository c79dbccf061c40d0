#!/usr/bin/env bash
# The test node's network, made and removed on the host:
#   network.sh up     the node's network namespace, the veth to it, the node's bridge, and the
#                     host routes: the node's pod and Service ranges through the veth, the rest
#                     of 198.18.0.0/15 blackholed. Removes a previous run's leftovers first.
#   network.sh down   removes all of it (kills whatever still runs in the namespace).
# Nothing here changes a kernel setting of the host: forwarding is switched on inside the
# node's namespace only.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

[[ $(id -u) == 0 ]] || { echo "network.sh must run as root (it creates a network namespace)" >&2; exit 1; }

down() {
  if ip netns list | grep -qw "$NODE_NETNS"; then
    local pids
    pids=$(ip netns pids "$NODE_NETNS" 2>/dev/null || true)
    # shellcheck disable=SC2086
    [[ -z $pids ]] || kill -KILL $pids 2>/dev/null || true
    for _ in $(seq 1 50); do [[ -z $(ip netns pids "$NODE_NETNS" 2>/dev/null) ]] && break; sleep 0.1; done
    ip netns del "$NODE_NETNS"
  fi
  # Deleting the namespace deletes the veth pair with it; a half-made run may have left the
  # host end alone.
  ip link del "$NODE_HOST_LINK" 2>/dev/null || true
  while ip route del blackhole "$OWN_RANGE" 2>/dev/null; do :; done
  # `ip netns add` makes /run/netns a mount point and never removes it.
  if [[ -d /run/netns && -z $(ls -A /run/netns) ]]; then
    umount /run/netns 2>/dev/null || true
    rmdir /run/netns
  fi
}

up() {
  down
  ip netns add "$NODE_NETNS"
  ip link add "$NODE_HOST_LINK" type veth peer name uplink netns "$NODE_NETNS"
  ip addr add "$NODE_HOST_ADDR/$NODE_LINK_PREFIX" dev "$NODE_HOST_LINK"
  ip link set "$NODE_HOST_LINK" up
  ip route add blackhole "$OWN_RANGE"
  ip route add "$CLUSTER_POD_CIDR" via "$NODE_UPLINK_ADDR" dev "$NODE_HOST_LINK"
  ip route add "$SERVICE_CIDR" via "$NODE_UPLINK_ADDR" dev "$NODE_HOST_LINK"

  in_node_netns ip link set lo up
  in_node_netns ip addr add "$NODE_UPLINK_ADDR/$NODE_LINK_PREFIX" dev uplink
  in_node_netns ip link set uplink up
  # The CNI bridge plugin finds this bridge and attaches pods to it; it exists before kubelet
  # starts because kubelet and CoreDNS listen on its address. No default route: a pod's
  # packet for anything but the node, its pods, its Services and the host dies here.
  in_node_netns ip link add "$NODE_BRIDGE" type bridge
  in_node_netns ip addr add "$NODE_IP/${NODE_POD_CIDR#*/}" dev "$NODE_BRIDGE"
  in_node_netns ip link set "$NODE_BRIDGE" up
  in_node_netns sysctl -q -w net.ipv4.ip_forward=1
  log "Node network up: namespace $NODE_NETNS, node $NODE_IP, pods $NODE_POD_CIDR, Services $SERVICE_CIDR, API address $NODE_HOST_ADDR"
}

case ${1:-} in
  up) up ;;
  down) down ;;
  *) echo "usage: network.sh up|down" >&2; exit 2 ;;
esac
