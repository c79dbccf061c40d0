#!/usr/bin/env bash
# Stops the test node of STATE_DIR and removes what it made on the host: its processes, every
# container (found by the node's cgroups), and those cgroups. The mounts go with the node's
# mount namespace; its addresses, bridge, veths and nftables rules with the network namespace
# (network.sh down). Also clears a crashed run's leftovers when STATE_DIR is gone.
# Usage: tests/node/down.sh [STATE_DIR]
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
state=${1:-}
node=${state:+$state/node}

# A graceful stop first: the supervisor stops kubelet, kube-proxy, CoreDNS and containerd.
if [[ -n $node && -f $node/supervisor.pid ]]; then
  supervisor=$(cat "$node/supervisor.pid")
  kill -TERM "$supervisor" 2>/dev/null
  for _ in $(seq 1 100); do kill -0 "$supervisor" 2>/dev/null || break; sleep 0.1; done
fi

# Then everything the node left running: shims and node programs in its network namespace,
# containers in its cgroups. Killed until none is left, since a dying shim may still reap.
node_pids() {
  if ip netns list 2>/dev/null | grep -qw "$NODE_NETNS"; then ip netns pids "$NODE_NETNS" 2>/dev/null; fi
  for hierarchy in /sys/fs/cgroup/*/; do
    [[ -d $hierarchy$NODE_CGROUP ]] || continue
    find "$hierarchy$NODE_CGROUP" -name cgroup.procs -exec cat {} + 2>/dev/null
  done
}
for _ in $(seq 1 50); do
  pids=$(node_pids | sort -u)
  [[ -z $pids ]] && break
  # shellcheck disable=SC2086
  kill -KILL $pids 2>/dev/null
  sleep 0.1
done

# The containers' cgroups, deepest first.
for hierarchy in /sys/fs/cgroup/*/; do
  [[ -d $hierarchy$NODE_CGROUP ]] || continue
  find "$hierarchy$NODE_CGROUP" -depth -type d -exec rmdir {} + 2>/dev/null
done

# The node's mounts live in its own mount namespace; none should be visible here. If one is
# (a crash halfway through inside.sh), it goes too.
if [[ -n $node ]]; then
  awk -v prefix="$node/" '$2 ~ "^" prefix {print $2}' /proc/mounts | sort -r |
    while read -r mount; do umount -l "$mount"; done
fi
exit 0
