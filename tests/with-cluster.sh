#!/usr/bin/env bash
# Runs a command against a fresh local cluster (control plane and real node, the images built
# from this tree loaded, the CRD installed), then stops the cluster and checks the host is as
# it was. The command sees the environment the end-to-end tests expect (KUBECONFIG, kubectl
# and helm on PATH, MODELSHIP_* variables).
#   bash tests/with-cluster.sh cargo test -p modelship-tests --test zero_loss
#   bash tests/with-cluster.sh bash      (a shell on the cluster; exit to stop it)
# One cluster runs on a machine at a time: this waits while another holds the node lock.
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/node/env.sh
(( $# > 0 )) || { echo "usage: tests/with-cluster.sh COMMAND [ARGS...]" >&2; exit 2; }
[[ $(id -u) == 0 && $(uname -s) == Linux ]] || { echo "the test node needs root on Linux" >&2; exit 1; }

tests/node/packages.sh
tests/controlplane/build.sh >/dev/null
tests/node/build.sh >/dev/null
tests/controlplane/tools.sh >/dev/null
cargo build --workspace --bins --quiet

hold_node_lock
state=$(mktemp -d "${TMPDIR:-/tmp}/modelship-test.XXXX")
cleanup() { tests/cluster.sh down "$state" || true; }
trap cleanup EXIT
log "Starting the cluster: control plane and node"
tests/cluster.sh up "$state"
log "Building the images and loading them into the node"
tests/cluster.sh load "$state" >/dev/null
source "$state/env"
install_crd
export PATH="$(tests/python-tools.sh):$PATH"
export MODELSHIP_OPERATOR_BIN=$PWD/target/debug/modelship-operator
export MODELSHIP_SERVING_BIN=$PWD/target/debug/modelship-serving
export RUST_TEST_THREADS=${RUST_TEST_THREADS:-4}

set +e
"$@"
status=$?
set -e
log "Stopping the cluster; the host must be as it was before"
trap - EXIT
tests/cluster.sh down "$state"
exit "$status"
