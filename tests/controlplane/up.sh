#!/usr/bin/env bash
# Starts etcd, kube-apiserver, kube-controller-manager and kube-scheduler with generated
# certificates, RBAC and PodSecurity admission, all state in STATE_DIR.
# Usage: up.sh STATE_DIR   (then: export KUBECONFIG=STATE_DIR/kubeconfig; stop with down.sh)
# The API server listens on 127.0.0.1, or on MODELSHIP_APISERVER_ADDRESS: the test node sets
# its host address there, so that pods reach the API server through the `kubernetes`
# Service, whose endpoint the API server then keeps itself (lease endpoint reconciler).
# APISERVER_PROFILING=true serves the API server's CPU profiles (/debug/pprof), for the
# operator benchmark; off otherwise.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

state=${1:?usage: up.sh STATE_DIR}
mkdir -p "$state"/{pki,logs,etcd}
state=$(cd "$state" && pwd)
bin=$("$CONTROLPLANE_DIR/build.sh")
tools=$("$CONTROLPLANE_DIR/tools.sh")
started=$(date +%s.%N)
address=${MODELSHIP_APISERVER_ADDRESS:-127.0.0.1}
if [[ $address == 127.0.0.1 ]]; then reconciler=none; else reconciler=lease; fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# --- certificates ---------------------------------------------------------------------
pki=$state/pki
openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=modelship-local-ca" \
  -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
issue() { issue_cert "$pki" "$@"; }
issue apiserver "/CN=kube-apiserver" \
  "IP:127.0.0.1,IP:$address,IP:$KUBERNETES_SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
# The API server's identity towards kubelets (logs, exec, port-forward).
issue apiserver-kubelet-client "/CN=kube-apiserver-kubelet-client"
issue admin "/O=system:masters/CN=modelship-admin"
issue controller-manager "/CN=system:kube-controller-manager"
issue scheduler "/CN=system:kube-scheduler"
openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null

# Audit every request a ServiceAccount outside kube-system makes (the operator's, when it
# runs as its chart's ServiceAccount), so tests can compare the verbs used with its RBAC.
cat >"$state/audit-policy.yaml" <<'POLICY'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  userGroups: ["system:serviceaccounts:kube-system"]
- level: Metadata
  userGroups: ["system:serviceaccounts"]
- level: None
POLICY

etcd_port=$(free_port); etcd_peer_port=$(free_port); api_port=$(free_port)
server=https://$address:$api_port

kubeconfig() { write_kubeconfig "$1" "$server" "$pki" "$2"; }
kubeconfig "$state/kubeconfig" admin
kubeconfig "$state/controller-manager.kubeconfig" controller-manager
kubeconfig "$state/scheduler.kubeconfig" scheduler

: >"$state/pids"
mkdir -p "$state/cmdline"
# Each component's command line is kept (NUL-separated) so restart.sh can start it again
# exactly as it was started here.
spawn() {
  local name=$1; shift
  printf '%s\0' "$@" >"$state/cmdline/$name"
  "$@" >"$state/logs/$name.log" 2>&1 &
  echo "$! $name" >>"$state/pids"
}

# --- processes ------------------------------------------------------------------------
spawn etcd "$bin/etcd" --name modelship-local --data-dir "$state/etcd" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" \
  --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
  --initial-cluster "modelship-local=http://127.0.0.1:$etcd_peer_port" \
  --listen-metrics-urls "" --log-level warn --quota-backend-bytes 4294967296 --unsafe-no-fsync

# On SIGTERM the API server ends its watches within 2 s and exits, as one set up for graceful
# restarts does; without a watch grace period it stops listening but keeps the open watches
# hanging until killed (20 s in restart.sh), a longer outage than the one asked for.
spawn kube-apiserver "$bin/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$etcd_port" \
  --bind-address "$address" --advertise-address "$address" --secure-port "$api_port" \
  --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --client-ca-file "$pki/ca.crt" \
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
  --service-account-issuer https://kubernetes.default.svc \
  --service-cluster-ip-range "$SERVICE_CIDR" \
  --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" \
  --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority "$pki/ca.crt" \
  --kubelet-preferred-address-types InternalIP \
  --authorization-mode Node,RBAC \
  --enable-admission-plugins NodeRestriction,PodSecurity \
  --allow-privileged=false --profiling="${APISERVER_PROFILING:-false}" \
  --max-requests-inflight 1600 --max-mutating-requests-inflight 800 \
  --endpoint-reconciler-type "$reconciler" \
  --audit-policy-file "$state/audit-policy.yaml" --audit-log-path "$state/logs/audit.log" \
  --audit-log-maxsize 200 --audit-log-maxbackup 1 \
  --shutdown-watch-termination-grace-period 2s \
  --v 1

export KUBECONFIG=$state/kubeconfig
kubectl() { "$tools/kubectl" "$@"; }
for _ in $(seq 1 600); do
  if kubectl get --raw /readyz >/dev/null 2>&1; then break; fi
  if ! kill -0 "$(awk '$2=="kube-apiserver"{print $1}' "$state/pids")" 2>/dev/null; then
    echo "kube-apiserver exited; last log lines:" >&2; tail -20 "$state/logs/kube-apiserver.log" >&2; exit 1
  fi
  sleep 0.1
done
kubectl get --raw /readyz >/dev/null
ready=$(date +%s.%N)

spawn kube-controller-manager "$bin/kube-controller-manager" \
  --kubeconfig "$state/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$state/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$state/controller-manager.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port 0 --leader-elect=false \
  --use-service-account-credentials \
  --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
  --controllers '*,-node-ipam-controller,-persistentvolume-expander-controller,-certificatesigningrequest-signing-controller' \
  --concurrent-deployment-syncs 20 --concurrent-replicaset-syncs 20 \
  --concurrent-service-endpoint-syncs 20 --kube-api-qps 400 --kube-api-burst 800 \
  --horizontal-pod-autoscaler-sync-period 5s \
  --v 1
spawn kube-scheduler "$bin/kube-scheduler" \
  --kubeconfig "$state/scheduler.kubeconfig" \
  --authentication-kubeconfig "$state/scheduler.kubeconfig" \
  --authorization-kubeconfig "$state/scheduler.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port 0 --leader-elect=false \
  --kube-api-qps 400 --kube-api-burst 800 --v 1

# The controller-manager and scheduler refuse bad flags at start: make sure they stayed up.
sleep 1
for name in kube-controller-manager kube-scheduler; do
  if ! kill -0 "$(awk -v n="$name" '$2==n{print $1}' "$state/pids")" 2>/dev/null; then
    echo "$name exited; last log lines:" >&2; tail -20 "$state/logs/$name.log" >&2; exit 1
  fi
done

cat >"$state/env" <<ENV
export KUBECONFIG=$state/kubeconfig
export PATH=$tools:\$PATH
export MODELSHIP_CONTROLPLANE=$state
export MODELSHIP_AUDIT_LOG=$state/logs/audit.log
export MODELSHIP_APISERVER=$server
ENV
awk -v s="$started" -v r="$ready" 'BEGIN { printf "kube-apiserver ready in %.1fs\n", r - s }' >&2
log "Control plane up at $server (state in $state); source $state/env to use it"
