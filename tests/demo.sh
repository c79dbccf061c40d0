#!/usr/bin/env bash
# The Modelship demo on a local cluster:
#   1. start a control plane and a real node (kubelet, containerd, kube-proxy, CoreDNS; all
#      built on first use) and load the operator and serving images into the node;
#   2. install the Helm chart with its defaults: two operator pods, one leading;
#   3. give the `ml` namespace a model volume and an in-cluster model store;
#   4. deploy a model, print `kubectl get md`, its pods and real predictions through its
#      Service, as kube-proxy routes them;
#   5. roll version 2 out as a canary under load (weight 25, then promotion), then a
#      blue-green model (loaded over HTTP from the model store) through its switch, printing
#      `kubectl get md` at each stage, and a serving pod's log.
# KEEP=1 leaves everything running at the end (stop it with tests/cluster.sh down STATE).
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/node/env.sh
repo=$PWD

step() { printf '\n\033[1;36m== %s\033[0m\n' "$*"; }
show() { printf '\033[2m$ %s\033[0m\n' "$*"; "$@"; }

step "Building (the first run also builds the control plane and the node from their Go modules)"
tests/node/packages.sh
tests/controlplane/build.sh >/dev/null
tests/node/build.sh >/dev/null
tests/controlplane/tools.sh >/dev/null
cargo build --quiet --bins -p modelship-tests

hold_node_lock
state=${DEMO_STATE:-${TMPDIR:-/tmp}/modelship-demo}
tests/cluster.sh down "$state" 2>/dev/null || true
cleanup() {
  [[ -n ${load_pid:-} ]] && kill "$load_pid" 2>/dev/null
  if [[ ${KEEP:-0} == 1 ]]; then
    echo "Left running (KEEP=1): source $state/env; stop with tests/cluster.sh down $state"
  else
    tests/cluster.sh down "$state"
  fi
}
trap cleanup EXIT

step "Starting the local cluster: control plane and node"
tests/cluster.sh up "$state"
step "Building the operator and serving images and loading them into the node"
tests/cluster.sh load "$state" | grep -E '^(operator|serving):' || true
source "$state/env"
show kubectl get nodes -o wide

step "Installing the chart with its defaults"
show helm install modelship charts/modelship --namespace modelship-system --create-namespace \
  --wait --timeout 120s
show kubectl get pods -n modelship-system -o wide
echo "Lease held by: $(kubectl -n modelship-system get lease modelship -o jsonpath='{.spec.holderIdentity}')"

step "A namespace for models: a volume with the model files, and a model store serving them"
kubectl create namespace ml >/dev/null
kubectl label namespace ml pod-security.kubernetes.io/enforce=restricted >/dev/null
kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolume
metadata: {name: demo-models}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadOnlyMany]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  hostPath: {path: $state/node/models, type: Directory}
  claimRef: {namespace: ml, name: models}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: models, namespace: ml}
spec:
  accessModes: [ReadOnlyMany]
  storageClassName: ""
  volumeName: demo-models
  resources: {requests: {storage: 1Gi}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: model-store, namespace: ml}
spec:
  replicas: 1
  selector: {matchLabels: {app: model-store}}
  template:
    metadata: {labels: {app: model-store}}
    spec:
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
        seccompProfile: {type: RuntimeDefault}
      containers:
      - name: store
        image: $MODELSTORE_IMAGE
        imagePullPolicy: Never
        args: [-dir, /models, -listen, ":8080"]
        ports: [{name: http, containerPort: 8080}]
        readinessProbe: {httpGet: {path: /healthz, port: http}, periodSeconds: 2}
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {drop: [ALL]}
        volumeMounts: [{name: models, mountPath: /models, readOnly: true}]
      volumes: [{name: models, persistentVolumeClaim: {claimName: models, readOnly: true}}]
---
apiVersion: v1
kind: Service
metadata: {name: models, namespace: ml}
spec:
  selector: {app: model-store}
  ports: [{name: http, port: 80, targetPort: http}]
EOF
kubectl -n ml rollout status deployment/model-store --timeout=60s >/dev/null
show kubectl get pvc,svc -n ml

wait_phase() { # NAME PHASE
  kubectl -n ml wait "md/$1" --for=jsonpath="{.status.phase}=$2" --timeout=180s >/dev/null
}
service() { kubectl -n ml get svc "$1" -o jsonpath='{.spec.clusterIP}'; }
# kube-proxy programs a Service's new endpoints a moment after the API shows them.
routed() { # SERVICE
  for _ in $(seq 1 100); do curl -fsS -o /dev/null "http://$(service "$1")/ready" 2>/dev/null && return; sleep 0.2; done
}
predict() { # SERVICE PATH BODY
  routed "$1"
  curl -sS -H 'content-type: application/json' "http://$(service "$1")$2" -d "$3"
  echo
}
features='{"features": [0.5, -1.2, 0.3, 0.8, -0.4, 1.1, 0.0, -0.7, 0.9, 0.2, -1.5, 0.6, 0.4, -0.1, 1.3, -0.9, 0.7, 0.05, -0.3, 1.0]}'

step "Deploying fraud-detector version 1 (canary strategy, analysis on the pods' own metrics)"
kubectl apply -f - <<EOF
apiVersion: modelship.io/v1alpha1
kind: ModelDeployment
metadata: {name: fraud-detector, namespace: ml}
spec:
  model:
    version: "1"
    uri: pvc://models/logreg.onnx
    referenceData: pvc://models/reference.json
  replicas: 4
  serving:
    drainSeconds: 2
    resources: {requests: {cpu: 50m, memory: 32Mi}, limits: {memory: 256Mi}}
  strategy:
    type: Canary
    canary: {weight: 25}
    analysis: {intervalSeconds: 5, failureLimit: 2, minRequests: 20, maxErrorRate: 0.05,
               maxLatencyP95Seconds: 0.5, maxDriftScore: 3.0}
EOF
wait_phase fraud-detector Healthy
show kubectl get md -n ml
show kubectl get deploy,svc -n ml -l modelship.io/name=fraud-detector
show kubectl get pods -n ml -l modelship.io/name=fraud-detector -o wide

step "Predictions through the Service's ClusterIP (the seed's /predict and the Open Inference Protocol)"
show predict fraud-detector /predict "$features"
routed fraud-detector
show curl -sS "http://$(service fraud-detector)/v2/models/fraud-detector"; echo
input=$(curl -sS "http://$(service fraud-detector)/v2/models/fraud-detector" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["inputs"][0]["name"])')
inputs=$(python3 -c 'import json,sys; f=json.loads(sys.argv[1])["features"]; print(json.dumps({"inputs":[{"name":sys.argv[2],"shape":[1,20],"datatype":"FP32","data":f}]}))' "$features" "$input")
show predict fraud-detector /v2/models/fraud-detector/infer "$inputs"

step "Canary: version 2 at 25 % under load"
target/debug/loadgen --service fraud-detector --namespace ml --rate 50 --seconds 180 \
  --stop-file "$state/stop-load" >"$state/load.txt" &
load_pid=$!
sleep 2
show kubectl -n ml patch md fraud-detector --type merge \
  -p '{"spec":{"model":{"version":"2","uri":"pvc://models/rf.onnx"}}}'
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
load_pid=
echo "load during the rollout: $(cat "$state/load.txt")"
show kubectl get md fraud-detector -n ml -o jsonpath='{range .status.history[*]}{.version}: {.outcome} at {.finishedAt}{"\n"}{end}'

step "Blue-green: recommender loads its model over HTTP from the model store; version 2 waits for approval"
kubectl apply -f - <<EOF
apiVersion: modelship.io/v1alpha1
kind: ModelDeployment
metadata: {name: recommender, namespace: ml}
spec:
  model: {version: "1", uri: "http://models.ml.svc/gb.onnx"}
  replicas: 2
  serving:
    drainSeconds: 2
    resources: {requests: {cpu: 50m, memory: 32Mi}, limits: {memory: 256Mi}}
  strategy:
    type: BlueGreen
    blueGreen: {autoPromote: false, previewReplicas: 1, scaleDownDelaySeconds: 5}
EOF
wait_phase recommender Healthy
show kubectl get md -n ml
show kubectl -n ml patch md recommender --type merge \
  -p '{"spec":{"model":{"version":"2","uri":"http://models.ml.svc/gb3.onnx"}}}'
wait_phase recommender Paused
show kubectl get md recommender -n ml
echo "Service selects: $(kubectl -n ml get svc recommender -o jsonpath='{.spec.selector.modelship\.io/track}'), preview selects: $(kubectl -n ml get svc recommender-preview -o jsonpath='{.spec.selector.modelship\.io/track}')"
show predict recommender-preview /predict "$features"
show kubectl -n ml patch md recommender --type merge -p '{"spec":{"strategy":{"approvedVersion":"2"}}}'
kubectl -n ml wait md/recommender --for=jsonpath='{.status.activeColor}=green' --timeout=120s >/dev/null
show kubectl get md recommender -n ml
echo "Service selects: $(kubectl -n ml get svc recommender -o jsonpath='{.spec.selector.modelship\.io/track}')"
wait_phase recommender Healthy
show kubectl get md -n ml
show kubectl get pods -n ml -o wide
# kube-proxy follows the new endpoints within a moment; blue stays up for scaleDownDelaySeconds
# to finish what its connections still carry.
show predict recommender /predict "$features"

step "A serving pod's log"
pod=$(kubectl -n ml get pods -l modelship.io/name=recommender,modelship.io/track=green \
  -o jsonpath='{.items[0].metadata.name}')
show kubectl -n ml logs "$pod" --tail 5

step "Events"
show kubectl get events.events.k8s.io -n ml --field-selector regarding.kind=ModelDeployment \
  -o custom-columns=OBJECT:.regarding.name,REASON:.reason,NOTE:.note --sort-by=.eventTime

step "Done"
