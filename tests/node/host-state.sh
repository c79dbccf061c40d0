#!/usr/bin/env bash
# Prints what the test node could leave behind on the host, in a stable order: links, routes,
# rules, network namespaces, iptables and nftables rules, mount points, cgroups, and the
# kernel settings kubelet and kube-proxy care about, and the node programs still running
# (zombies aside: a killed program waits for its parent to reap it). tests/cluster.sh compares the output
# before `up` and after `down`.
set -uo pipefail
echo "## links";      ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//' | sort
echo "## routes";     { ip -4 route show table all; ip -6 route show table all; } | grep -v '^cache' | sort
echo "## rules";      ip rule show | sort
echo "## netns";      ip netns list | sort
echo "## iptables";   command -v iptables-save >/dev/null && iptables-save 2>/dev/null | grep -v '^#' | sed 's/\[[0-9]*:[0-9]*\]//'
echo "## nftables";   command -v nft >/dev/null && nft list ruleset 2>/dev/null
echo "## mounts";     awk '{print $2, $3}' /proc/mounts | sort
echo "## cgroups";    find /sys/fs/cgroup -mindepth 1 -maxdepth 2 -type d 2>/dev/null | sort
echo "## processes";  ps -eo stat=,comm= | awk '$1 !~ /^Z/ {print $2}' | grep -E '^(kubelet|kube-proxy|containerd|coredns|pause)' | sort
echo "## sysctls"
for setting in vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops \
    kernel/keys/root_maxkeys kernel/keys/root_maxbytes net/ipv4/ip_forward \
    net/ipv4/conf/all/forwarding net/ipv4/conf/all/route_localnet \
    net/bridge/bridge-nf-call-iptables net/netfilter/nf_conntrack_max \
    net/netfilter/nf_conntrack_tcp_timeout_established; do
  echo "$setting=$(cat "/proc/sys/$setting" 2>/dev/null || echo absent)"
done
