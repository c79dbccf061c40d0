#!/usr/bin/env bash
# The operator at scale, one command: release builds, a control plane of its own, KWOK for a
# fake node whose pods turn Ready without running anything, then target/release/operator-bench
# (see its doc comment for what each number includes).
# Results: bench/results/operator-<time>/ (summary.json, results.md, logs); runs with
# N >= 1000 are also added to BENCHMARKS.md (section "Operator at scale").
#
# Usage: bash bench/operator.sh            (or make bench-operator)
#        N=50 bash bench/operator.sh       (a quick run; not recorded)
# Settings (environment):
#   N                     ModelDeployments in the scale phases (1000)
#   DIRECT_CONCURRENCY    parallel writes of the direct phase (32)
#   OPERATOR_ARGS         extra operator flags, space separated (none)
#   RESYNC_SECONDS        operator --resync-seconds (10)
#   STEADY_WINDOW_SECONDS window in which steady-state writes are counted (25)
#   LATENCY_SAMPLES       apply-to-children samples (100)
#   BLUE_GREEN            blue-green ModelDeployments (20)
#   SKIP_DIRECT=1         skip the direct phase (no ratio)
#   RECORD                auto (N >= 1000), 1 or 0: add the run to BENCHMARKS.md
#   BENCH_LOCK            lock shared by every benchmark (/tmp/modelship-bench.lock)
#   MAX_LOAD, LOAD_WAIT_SECONDS  with the lock held, wait up to LOAD_WAIT_SECONDS (300) for
#                         the 1-minute load average to drop below MAX_LOAD (nproc) before starting
#   OPERATOR_RUST_LOG     the operator's log filter, for a diagnosis (more logging costs CPU)
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/controlplane/env.sh

# The exact command, with the settings given in the environment.
command_line="bash bench/operator.sh"
for var in OPERATOR_ARGS BLUE_GREEN LATENCY_SAMPLES STEADY_WINDOW_SECONDS RESYNC_SECONDS \
           DIRECT_CONCURRENCY SKIP_DIRECT N; do
  if [[ -n ${!var:-} ]]; then
    command_line="$var=$(printf '%q' "${!var}") $command_line"
  fi
done

N=${N:-1000}
DIRECT_CONCURRENCY=${DIRECT_CONCURRENCY:-32}
OPERATOR_ARGS=${OPERATOR_ARGS:-}
RESYNC_SECONDS=${RESYNC_SECONDS:-10}
STEADY_WINDOW_SECONDS=${STEADY_WINDOW_SECONDS:-25}
LATENCY_SAMPLES=${LATENCY_SAMPLES:-100}
BLUE_GREEN=${BLUE_GREEN:-20}
RECORD=${RECORD:-auto}
BENCH_LOCK=${BENCH_LOCK:-/tmp/modelship-bench.lock}
MAX_LOAD=${MAX_LOAD:-$(nproc)}
LOAD_WAIT_SECONDS=${LOAD_WAIT_SECONDS:-300}

# The fake node: named by its address, with a pod range of its own inside the cluster's pod
# range 198.18.0.0/17 (apart from the test node's 198.18.0.1 and 198.18.0.0/24). KWOK hands
# out pod IPs from it as labels; nothing routes or listens there and nothing is sent there.
KWOK_NODE=198.18.1.1
KWOK_POD_CIDR=198.18.64.0/18
# Fast stages: the node turns Ready at once and renews a 40 s Lease like a kubelet; a pod turns
# Running and Ready as soon as it is scheduled (no delay); a deleted pod goes at once.
KWOK_STAGES=(node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml
             pod/fast/pod-ready.yaml pod/fast/pod-delete.yaml)
KWOK_LEASE_SECONDS=40

log "Building the release binaries"
cargo build --release -p modelship-operator -p modelship-tests
tests/controlplane/build.sh >/dev/null
tests/controlplane/tools.sh >/dev/null
kwok_bin=$(bench/kwok/build.sh)
source bench/kwok/env.sh
stage_dir=$(kwok_stage_dir)
stage_args=()
for stage in "${KWOK_STAGES[@]}"; do
  [[ -f $stage_dir/$stage ]] || { echo "KWOK stage $stage_dir/$stage is missing" >&2; exit 1; }
  stage_args+=(-c "$stage_dir/$stage")
done
# For the record: the delay the pod-ready stage puts between scheduling and Ready, if any.
ready_delay=$(awk '$1 == "durationMilliseconds:" { print $2 " ms"; exit }' "$stage_dir/pod/fast/pod-ready.yaml")

revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git status --porcelain -- operator crds 2>/dev/null) ]]; then
  revision="$revision + uncommitted changes in operator/ or crds/"
fi
out=$PWD/bench/results/operator-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$out"

# One benchmark at a time on this machine: hold the lock until the control plane is down.
exec 9>>"$BENCH_LOCK"
log "Waiting for the benchmark lock $BENCH_LOCK"
flock 9
log "Lock taken; load average $(cut -d' ' -f1-3 /proc/loadavg); waiting up to ${LOAD_WAIT_SECONDS}s for it to drop below $MAX_LOAD"
for _ in $(seq 1 "$LOAD_WAIT_SECONDS"); do
  awk -v max="$MAX_LOAD" '{ exit !($1 < max) }' /proc/loadavg && break
  sleep 1
done
load_at_start=$(cut -d' ' -f1-3 /proc/loadavg)
log "Starting with load average $load_at_start"

state=$(mktemp -d "${TMPDIR:-/tmp}/modelship-bench-operator.XXXX")
cleanup() {
  status=$?
  if [[ -d $state ]]; then
    cp "$state/logs/kwok.log" "$out/" 2>/dev/null || true
    tests/controlplane/down.sh "$state"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# CPU profiles of the API server are taken during both timed phases (see below).
APISERVER_PROFILING=true tests/controlplane/up.sh "$state" >/dev/null
# shellcheck disable=SC1091
source "$state/env"

log "Starting KWOK $KWOK_VERSION with fake node $KWOK_NODE"
kubectl apply -f - >/dev/null <<NODE
apiVersion: v1
kind: Node
metadata:
  name: "$KWOK_NODE"
  annotations: {kwok.x-k8s.io/node: fake}
  labels: {kubernetes.io/hostname: "$KWOK_NODE", kubernetes.io/os: linux, type: kwok}
spec:
  podCIDR: $KWOK_POD_CIDR
  podCIDRs: [$KWOK_POD_CIDR]
NODE
"$kwok_bin/kwok" --kubeconfig "$state/kubeconfig" \
  --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
  --cidr "$KWOK_POD_CIDR" --node-ip "$KWOK_NODE" \
  --node-lease-duration-seconds "$KWOK_LEASE_SECONDS" \
  "${stage_args[@]}" >"$state/logs/kwok.log" 2>&1 &
kwok_pid=$!
echo "$kwok_pid kwok" >>"$state/pids"
# Ready, and without the not-ready taint the node lifecycle controller puts on a new node (a
# pod created before that taint is gone would wait for it).
node_usable() {
  [[ $(kubectl get node "$KWOK_NODE" -o \
    jsonpath='{.status.conditions[?(@.type=="Ready")].status}/{.spec.taints}') == True/ ]]
}
for _ in $(seq 1 600); do
  node_usable && break
  if ! kill -0 "$kwok_pid" 2>/dev/null; then
    echo "kwok exited; last log lines:" >&2; tail -20 "$state/logs/kwok.log" >&2; exit 1
  fi
  sleep 0.1
done
node_usable || { echo "node $KWOK_NODE not Ready and untainted after 60 s" >&2; exit 1; }
install_crd

operator_args=()
for arg in $OPERATOR_ARGS; do operator_args+=("--operator-arg=$arg"); done
skip=()
[[ ${SKIP_DIRECT:-0} == 1 ]] && skip=(--skip-direct)

log "Running the benchmark (N=$N)"
target/release/operator-bench run \
  --n "$N" \
  --operator-bin "$PWD/target/release/modelship-operator" \
  "${operator_args[@]}" "${skip[@]}" \
  --resync-seconds "$RESYNC_SECONDS" \
  --steady-window-seconds "$STEADY_WINDOW_SECONDS" \
  --direct-concurrency "$DIRECT_CONCURRENCY" \
  --latency-samples "$LATENCY_SAMPLES" \
  --blue-green "$BLUE_GREEN" \
  --state-dir "$state" \
  --out-dir "$out" \
  --load-at-start "$load_at_start" \
  --command-line "$command_line" \
  --revision "$revision" \
  --kwok-version "$KWOK_VERSION" \
  --kwok-stages "$(IFS=,; echo "${KWOK_STAGES[*]}")" \
  --kwok-ready-delay "${ready_delay:-none}"

# The API server's CPU profiles of the first 30 s of each timed phase, as text: by function
# and by call tree, and what the cold start spent beyond the direct phase.
for profile in "$out"/apiserver-*.pprof; do
  [[ -s $profile ]] || continue
  go tool pprof -top -nodecount=40 "$profile" >"${profile%.pprof}.top.txt" 2>&1 ||
    log "could not read $profile"
  go tool pprof -top -cum -nodecount=60 "$profile" >"${profile%.pprof}.cum.txt" 2>&1 ||
    log "could not read $profile"
done
if [[ -s $out/apiserver-direct.pprof && -s $out/apiserver-cold-start.pprof ]]; then
  go tool pprof -top -cum -nodecount=60 -diff_base "$out/apiserver-direct.pprof" \
    "$out/apiserver-cold-start.pprof" >"$out/apiserver-cold-start-minus-direct.txt" 2>&1 ||
    log "could not compare the API server profiles"
fi

if [[ $RECORD == 1 || ( $RECORD == auto && $N -ge 1000 ) ]]; then
  target/release/operator-bench record --summary "$out/summary.json" --file BENCHMARKS.md
else
  log "Not recorded in BENCHMARKS.md (N=$N; RECORD=1 records it)"
fi
log "Results in $out"
