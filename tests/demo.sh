#!/usr/bin/env bash
# The Modelship demo on a local control plane:
#   1. start kube-apiserver, controller-manager, scheduler and etcd (built on first use),
#      and the local node agent, which runs serving pods as real processes;
#   2. install the Helm chart (CRD, RBAC, ServiceAccount) and run the operator as the chart's
#      ServiceAccount;
#   3. deploy a model, print `kubectl get md` and its children, and real predictions through
#      the Service;
#   4. roll version 2 out as a canary under load (weight 25, then promotion), then a
#      blue-green model through its switch, printing `kubectl get md` at each stage.
# KEEP=1 leaves everything running at the end (stop it with tests/controlplane/down.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/controlplane/env.sh
repo=$PWD

step() { printf '\n\033[1;36m== %s\033[0m\n' "$*"; }
show() { printf '\033[2m$ %s\033[0m\n' "$*"; "$@"; }

step "Building (the first run also builds the control plane from the Kubernetes Go modules)"
tests/controlplane/build.sh >/dev/null
tests/controlplane/tools.sh >/dev/null
cargo build --quiet --bins -p modelship-operator -p modelship-serving -p modelship-tests

state=${DEMO_STATE:-${TMPDIR:-/tmp}/modelship-demo}
tests/controlplane/down.sh "$state" 2>/dev/null || true
cleanup() {
  [[ -n ${operator_pid:-} ]] && kill "$operator_pid" 2>/dev/null
  if [[ ${KEEP:-0} == 1 ]]; then
    echo "Left running (KEEP=1): source $state/env; stop with tests/controlplane/down.sh $state"
  else
    tests/controlplane/down.sh "$state"
  fi
}
trap cleanup EXIT

step "Starting the local control plane and node"
tests/controlplane/up.sh "$state"
tests/localnode.sh start "$state" --run-image "modelship/serving=$repo/target/debug/modelship-serving"
source "$state/env"
proxy=$MODELSHIP_LOCALNODE_PROXY
agent=$MODELSHIP_LOCALNODE_AGENT
show kubectl get nodes

step "Installing the chart"
# Containers cannot run here, so the chart's operator Deployment is scaled to zero and the
# operator runs below as a local process, with the chart's ServiceAccount and RBAC.
show helm install modelship charts/modelship --namespace modelship-system --create-namespace \
  --set replicaCount=0 --wait
token=$(kubectl -n modelship-system create token modelship --duration 2h)
server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
ca=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.certificate-authority}')
cat >"$state/operator.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters: [{name: local, cluster: {server: "$server", certificate-authority: "$ca"}}]
users: [{name: modelship, user: {token: "$token"}}]
contexts: [{name: local, context: {cluster: local, user: modelship}}]
current-context: local
EOF
KUBECONFIG=$state/operator.kubeconfig target/debug/modelship-operator \
  --leader-elect=true --lease-namespace modelship-system --lease-name modelship \
  --admin-listen 127.0.0.1:0 --pod-metrics-url "http://$agent/pods/{namespace}/{name}/proxy/metrics" \
  >"$state/logs/operator.log" 2>&1 &
operator_pid=$!
echo "operator running as system:serviceaccount:modelship-system:modelship (log: $state/logs/operator.log)"

fixture() { echo "file://$repo/serving/fixtures/$1"; }
wait_phase() { # NAME PHASE
  kubectl -n ml wait "md/$1" --for=jsonpath="{.status.phase}=$2" --timeout=120s >/dev/null
}
predict() { # SERVICE PATH BODY
  curl -sS -H "Host: $1.ml" -H 'content-type: application/json' "http://$proxy$2" -d "$3"
  echo
}
features='{"features": [0.5, -1.2, 0.3, 0.8, -0.4, 1.1, 0.0, -0.7, 0.9, 0.2, -1.5, 0.6, 0.4, -0.1, 1.3, -0.9, 0.7, 0.05, -0.3, 1.0]}'

step "Deploying fraud-detector version 1 (canary strategy, analysis on the pods' own metrics)"
kubectl create namespace ml >/dev/null
kubectl apply -f - <<EOF
apiVersion: modelship.io/v1alpha1
kind: ModelDeployment
metadata: {name: fraud-detector, namespace: ml}
spec:
  model:
    version: "1"
    uri: $(fixture logreg.onnx)
    referenceData: $(fixture reference.json)
  replicas: 4
  serving: {drainSeconds: 2}
  strategy:
    type: Canary
    canary: {weight: 25}
    analysis: {intervalSeconds: 5, failureLimit: 2, minRequests: 20, maxErrorRate: 0.05,
               maxLatencyP95Seconds: 0.5, maxDriftScore: 3.0}
EOF
wait_phase fraud-detector Healthy
show kubectl get md -n ml
show kubectl get deploy,svc,pods -n ml -l modelship.io/name=fraud-detector

step "Predictions through the Service (the seed's /predict and the Open Inference Protocol)"
show predict fraud-detector /predict "$features"
show curl -sS -H "Host: fraud-detector.ml" "http://$proxy/v2/models/fraud-detector"; echo
input=$(curl -sS -H "Host: fraud-detector.ml" "http://$proxy/v2/models/fraud-detector" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["inputs"][0]["name"])')
inputs=$(python3 -c 'import json,sys; f=json.loads(sys.argv[1])["features"]; print(json.dumps({"inputs":[{"name":sys.argv[2],"shape":[1,20],"datatype":"FP32","data":f}]}))' "$features" "$input")
show predict fraud-detector /v2/models/fraud-detector/infer "$inputs"

step "Canary: version 2 at 25 % under load"
target/debug/loadgen --proxy "$proxy" --service fraud-detector --namespace ml --rate 50 --seconds 120 \
  --stop-file "$state/stop-load" >"$state/load.txt" &
load_pid=$!
sleep 2
show kubectl -n ml patch md fraud-detector --type merge \
  -p "{\"spec\":{\"model\":{\"version\":\"2\",\"uri\":\"$(fixture rf.onnx)\"}}}"
wait_phase fraud-detector Paused
show kubectl get md -n ml
show kubectl get deploy -n ml -l modelship.io/name=fraud-detector
sleep 6
echo "analysis: $(kubectl -n ml get md fraud-detector -o jsonpath='{.status.analysis.message}')"

step "Promotion: weight 100"
show kubectl -n ml patch md fraud-detector --type merge -p '{"spec":{"strategy":{"canary":{"weight":100}}}}'
wait_phase fraud-detector Healthy
show kubectl get md -n ml
touch "$state/stop-load"
wait "$load_pid" || true
echo "load during the rollout: $(cat "$state/load.txt")"
show kubectl get md fraud-detector -n ml -o jsonpath='{range .status.history[*]}{.version}: {.outcome} at {.finishedAt}{"\n"}{end}'

step "Blue-green: recommender version 1, then version 2 behind a manual gate"
kubectl apply -f - <<EOF
apiVersion: modelship.io/v1alpha1
kind: ModelDeployment
metadata: {name: recommender, namespace: ml}
spec:
  model: {version: "1", uri: $(fixture gb.onnx)}
  replicas: 2
  serving: {drainSeconds: 2}
  strategy:
    type: BlueGreen
    blueGreen: {autoPromote: false, previewReplicas: 1, scaleDownDelaySeconds: 5}
EOF
wait_phase recommender Healthy
show kubectl get md -n ml
show kubectl -n ml patch md recommender --type merge \
  -p "{\"spec\":{\"model\":{\"version\":\"2\",\"uri\":\"$(fixture gb3.onnx)\"}}}"
wait_phase recommender Paused
show kubectl get md recommender -n ml
echo "Service selects: $(kubectl -n ml get svc recommender -o jsonpath='{.spec.selector.modelship\.io/track}'), preview selects: $(kubectl -n ml get svc recommender-preview -o jsonpath='{.spec.selector.modelship\.io/track}')"
show predict recommender-preview /predict "$features"
show kubectl -n ml patch md recommender --type merge -p '{"spec":{"strategy":{"approvedVersion":"2"}}}'
kubectl -n ml wait md/recommender --for=jsonpath='{.status.activeColor}=green' --timeout=120s >/dev/null
show kubectl get md recommender -n ml
echo "Service selects: $(kubectl -n ml get svc recommender -o jsonpath='{.spec.selector.modelship\.io/track}')"
show predict recommender /predict "$features"
wait_phase recommender Healthy
show kubectl get md -n ml
show kubectl get deploy -n ml

step "Events"
show kubectl get events.events.k8s.io -n ml --field-selector regarding.kind=ModelDeployment \
  -o custom-columns=OBJECT:.regarding.name,REASON:.reason,NOTE:.note --sort-by=.eventTime

step "Done"
