#!/usr/bin/env bash
# Runs every test: formatting and lints, unit tests, and the end-to-end tests on a local
# cluster (a real control plane and a real node running the project's images, built on first
# use, then cached). Ends by stopping the cluster and checking the host is as it was.
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/node/env.sh
started=$(date +%s)
phase() { log "$* ($(( $(date +%s) - started ))s)"; }

phase "Checking the toolchain"
for tool in cargo go python3 openssl; do
  command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 1; }
done
[[ $(id -u) == 0 && $(uname -s) == Linux ]] || { echo "the test node needs root on Linux" >&2; exit 1; }

phase "Building the control plane and the node, fetching kubectl and helm (cached after the first run)"
tests/node/packages.sh
tests/controlplane/build.sh >/dev/null
tests/node/build.sh >/dev/null
tests/controlplane/tools.sh >/dev/null
tests/python-tools.sh >/dev/null

phase "Formatting and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet

phase "Fuzzing: each target of serving/fuzz for a bounded time"
tests/fuzz.sh "${FUZZ_SECONDS:-20}"

phase "Building the binaries, starting the cluster, running the tests"
tests/with-cluster.sh cargo test --workspace --quiet --no-fail-fast
phase "All tests passed"
