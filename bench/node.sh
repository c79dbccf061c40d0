#!/usr/bin/env bash
# The test node, one command: how long the local cluster takes to start, how fast a
# ModelDeployment's pods become Ready on the real node, and what the node's processes cost.
# Starts a cluster of its own (tests/cluster.sh), loads the images, runs the operator on the
# host, then target/debug/node-bench (see its doc comment). Prints a summary; add it to
# BENCHMARKS.md by hand with the date, machine and command.
#
# Usage: bash bench/node.sh        (REPLICAS=4 ROUNDS=5 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/node/env.sh
REPLICAS=${REPLICAS:-4}
ROUNDS=${ROUNDS:-5}

tests/node/packages.sh
tests/controlplane/build.sh >/dev/null
tests/node/build.sh >/dev/null
cargo build --quiet -p modelship-operator -p modelship-tests --bins

hold_node_lock
state=$(mktemp -d "${TMPDIR:-/tmp}/modelship-bench-node.XXXX")
cleanup() { [[ -n ${operator:-} ]] && kill "$operator" 2>/dev/null; tests/cluster.sh down "$state"; }
trap cleanup EXIT

started=$(date +%s.%N)
tests/cluster.sh up "$state" 2>"$state.up.log" || { cat "$state.up.log" >&2; exit 1; }
up_seconds=$(awk -v s="$started" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
node_ready=$(grep -o 'node Ready in [0-9.]*s' "$state.up.log" | grep -o '[0-9.]*' | head -1)
apiserver_ready=$(grep -o 'kube-apiserver ready in [0-9.]*s' "$state.up.log" | grep -o '[0-9.]*' | head -1)
rm -f "$state.up.log"
tests/cluster.sh load "$state" >/dev/null
source "$state/env"
install_crd

namespace=node-bench
kubectl create namespace "$namespace" >/dev/null
kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: PersistentVolume
metadata: {name: node-bench-models}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadOnlyMany]
  storageClassName: ""
  hostPath: {path: $state/node/models, type: Directory}
  claimRef: {namespace: $namespace, name: models}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: models, namespace: $namespace}
spec:
  accessModes: [ReadOnlyMany]
  storageClassName: ""
  volumeName: node-bench-models
  resources: {requests: {storage: 1Gi}}
YAML
target/debug/modelship-operator --namespace "$namespace" --leader-elect=false \
  --admin-listen 127.0.0.1:0 >"$state/operator.log" 2>&1 &
operator=$!

result=$(target/debug/node-bench --namespace "$namespace" --replicas "$REPLICAS" --rounds "$ROUNDS" --keep-last)

# Memory of the node's processes with the last round's pods running, and per pod: a runc shim
# and a pause container come with each pod, besides its own container.
rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
memory=""
while read -r pid name; do
  memory+="$name $(( $(rss "$pid") / 1024 )) MiB, "
done <"$state/node/pids"
sum_rss() { local total=0 count=0; for pid in $(pgrep -f "$1"); do total=$(( total + $(rss "$pid") )); count=$(( count + 1 )); done; echo "$count processes $(( total / 1024 )) MiB"; }
memory+="containerd-shim-runc-v2: $(sum_rss containerd-shim-runc-v2), pause: $(sum_rss "^/pause$"), modelship-serving: $(sum_rss "^/modelship-serving")"
python3 - "$result" "$up_seconds" "$apiserver_ready" "$node_ready" "$memory" <<'PY'
import json, sys
result, up, apiserver, node, memory = sys.argv[1:]
r = json.loads(result)
p = r["pod_create_to_ready_seconds"]; a = r["apply_to_all_ready_seconds"]
print(f"cluster up (network, control plane, node, DNS): {up} s; kube-apiserver ready {apiserver} s; node Ready {node} s after its start")
print(f"pod create -> Ready, ModelDeployment of {r['replicas']} replicas, {r['rounds']} rounds: p50 {p['p50']:.2f} s, p90 {p['p90']:.2f} s, max {p['max']:.2f} s")
print(f"apply -> all {r['replicas']} pods Ready: p50 {a['p50']:.2f} s, max {a['max']:.2f} s")
print(f"node processes (RSS): {memory.rstrip(', ')}")
PY
