#!/usr/bin/env bash
# Installs what the test node needs from Debian's packages when it is missing: runc (crun
# does not run with this kind of machine's cgroups), the CNI plugins, nft for kube-proxy,
# podman to build images, and Prometheus for the analysis tests.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
missing=()
[[ -x /usr/sbin/runc ]] || missing+=(runc)
[[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/portmap ]] ||
  missing+=(containernetworking-plugins)
command -v nft >/dev/null || missing+=(nftables)
command -v podman >/dev/null || missing+=(podman)
command -v nsenter >/dev/null || missing+=(util-linux)
# Without recommends: Prometheus would bring its node exporter and web assets.
lean=()
[[ -x /usr/bin/prometheus ]] || lean+=(prometheus)
(( ${#missing[@]} + ${#lean[@]} )) || exit 0
[[ $(id -u) == 0 ]] || { echo "missing ${missing[*]} ${lean[*]}: install them (apt-get, as root)" >&2; exit 1; }
log "Installing ${missing[*]} ${lean[*]}"
apt-get update -qq >/dev/null
(( ${#missing[@]} == 0 )) || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
(( ${#lean[@]} == 0 )) || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${lean[@]}" >/dev/null
