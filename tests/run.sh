#!/usr/bin/env bash
# Runs every test: formatting and lints, unit tests, and the integration tests against a
# real local control plane (built on first use, then cached) with real serving processes.
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/controlplane/env.sh
started=$(date +%s)
phase() { log "$* ($(( $(date +%s) - started ))s)"; }

phase "Checking the toolchain"
for tool in cargo go python3 openssl; do
  command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 1; }
done

phase "Building the control plane and fetching kubectl and helm (cached after the first run)"
tests/controlplane/build.sh >/dev/null
tests/controlplane/tools.sh >/dev/null
tests/python-tools.sh >/dev/null

phase "Formatting and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings

phase "Building the binaries"
cargo build --workspace --bins --quiet

state=$(mktemp -d "${TMPDIR:-/tmp}/modelship-test.XXXX")
cleanup() { tests/controlplane/down.sh "$state"; }
trap cleanup EXIT
phase "Starting the control plane and the local node"
tests/controlplane/up.sh "$state" >/dev/null
tests/localnode.sh start "$state" \
  --run-image "modelship/serving=$PWD/target/debug/modelship-serving" \
  --run-image "modelship/echo=$PWD/target/debug/echo-server"
source "$state/env"
kubectl apply --server-side -f crds/yaml/modeldeployments.modelship.io.yaml >/dev/null
kubectl wait --for condition=established --timeout=60s crd/modeldeployments.modelship.io >/dev/null
export PATH="$(tests/python-tools.sh):$PATH"
export MODELSHIP_OPERATOR_BIN=$PWD/target/debug/modelship-operator
export MODELSHIP_SERVING_BIN=$PWD/target/debug/modelship-serving
export RUST_TEST_THREADS=${RUST_TEST_THREADS:-4}

phase "Running the tests"
cargo test --workspace --quiet
phase "All tests passed"
