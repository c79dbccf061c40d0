#!/usr/bin/env bash
# The local cluster the tests and the demo run on: the node's network, the control plane and
# one real node (kubelet, containerd, kube-proxy, CoreDNS), all state in STATE_DIR.
#   tests/cluster.sh up STATE_DIR     builds what is missing (cached), starts everything;
#                                     then `source STATE_DIR/env` to use it
#   tests/cluster.sh down STATE_DIR   stops everything and removes what the node made on the
#                                     host; fails if the host is not as `up` found it
#   tests/cluster.sh load STATE_DIR   loads the project's images (tests/images.sh) into the
#                                     node under the names the chart and the operator use
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/node/env.sh"
cmd=${1:?usage: cluster.sh up|down|load STATE_DIR}
state=${2:?usage: cluster.sh up|down|load STATE_DIR}

up() {
  # A cluster that ran in this directory before is stopped and removed first; any other
  # content is left alone.
  if [[ -e $state/pids || -e $state/host-before.txt ]]; then
    down || true
  elif [[ -d $state && -n $(ls -A "$state") ]]; then
    echo "cluster.sh up: $state is not empty and holds no cluster" >&2
    exit 1
  fi
  mkdir -p "$state"
  state=$(cd "$state" && pwd)
  "$NODE_SCRIPTS/packages.sh"
  "$CONTROLPLANE_DIR/build.sh" >/dev/null
  "$CONTROLPLANE_DIR/tools.sh" >/dev/null
  "$NODE_SCRIPTS/build.sh" >/dev/null
  # A crashed run's node first, so the host is compared as it really is.
  "$NODE_SCRIPTS/down.sh"
  "$NODE_SCRIPTS/network.sh" down
  "$NODE_SCRIPTS/host-state.sh" >"$state/host-before.txt"
  "$NODE_SCRIPTS/network.sh" up
  MODELSHIP_APISERVER_ADDRESS=$NODE_HOST_ADDR "$CONTROLPLANE_DIR/up.sh" "$state"
  "$NODE_SCRIPTS/up.sh" "$state"
  # What the tests' and the demo's `models` volumes serve: the serving fixtures.
  mkdir -p "$state/node/models"
  cp "$REPO_ROOT"/serving/fixtures/*.onnx "$REPO_ROOT"/serving/fixtures/reference*.json "$state/node/models/"
  chmod -R a+rX "$state/node/models"
  cat >>"$state/env" <<ENV
export MODELSHIP_NODE_IP=$NODE_IP
export MODELSHIP_NODE_STATE=$state/node
ENV
}

down() {
  [[ -d $state ]] || { "$NODE_SCRIPTS/down.sh"; "$NODE_SCRIPTS/network.sh" down; return; }
  state=$(cd "$state" && pwd)
  "$NODE_SCRIPTS/down.sh" "$state"
  "$CONTROLPLANE_DIR/down.sh" "$state" --keep
  "$NODE_SCRIPTS/network.sh" down
  local changed=0
  if [[ -f $state/host-before.txt ]]; then
    "$NODE_SCRIPTS/host-state.sh" >"$state/host-after.txt"
    diff -u "$state/host-before.txt" "$state/host-after.txt" >&2 || changed=1
  fi
  rm -rf "$state"
  if [[ $changed == 1 ]]; then
    echo "cluster.sh down: the host is not as it was before the node started (diff above)" >&2
    return 1
  fi
}

load() {
  state=$(cd "$state" && pwd)
  local archives=$state/images
  "$REPO_ROOT/tests/images.sh" dev "$archives"
  "$NODE_SCRIPTS/load-image.sh" "$state" archive "$archives/operator.tar" "$OPERATOR_IMAGE"
  "$NODE_SCRIPTS/load-image.sh" "$state" archive "$archives/serving.tar" "$SERVING_IMAGE"
}

case $cmd in
  up) up ;;
  down) down ;;
  load) load ;;
  *) echo "usage: cluster.sh up|down|load STATE_DIR" >&2; exit 2 ;;
esac
