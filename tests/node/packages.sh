#!/usr/bin/env bash
# Installs what the test node needs from Debian's packages when it is missing: runc (crun
# does not run with this kind of machine's cgroups), the CNI plugins, nft for kube-proxy and
# podman to build images.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
missing=()
[[ -x /usr/sbin/runc ]] || missing+=(runc)
[[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/portmap ]] ||
  missing+=(containernetworking-plugins)
command -v nft >/dev/null || missing+=(nftables)
command -v podman >/dev/null || missing+=(podman)
command -v nsenter >/dev/null || missing+=(util-linux)
(( ${#missing[@]} )) || exit 0
[[ $(id -u) == 0 ]] || { echo "missing ${missing[*]}: install them (apt-get, as root)" >&2; exit 1; }
log "Installing ${missing[*]}"
apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
