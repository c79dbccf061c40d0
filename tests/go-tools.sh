#!/usr/bin/env bash
# Cached Go tools the chart tests use: actionlint (the GitHub Actions workflow) and promtool
# (alert rules and dashboard queries), built once from the Go module proxy into the cache.
# Prints their bin directory. promtool takes a few minutes to build the first time.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/controlplane/env.sh"
ACTIONLINT_VERSION=v1.7.12
# Prometheus publishes its Go module as v0.<minor>.<patch> for Prometheus 3.<minor>.<patch>.
PROMETHEUS_MODULE_VERSION=v0.316.0
bin=$MODELSHIP_CACHE/go-tools/actionlint-$ACTIONLINT_VERSION-prometheus-$PROMETHEUS_MODULE_VERSION
mkdir -p "$MODELSHIP_CACHE/go-tools"
# Tests run in parallel: one build at a time.
exec 9>"$MODELSHIP_CACHE/go-tools/.lock"
flock 9
if [[ ! -x $bin/actionlint || ! -x $bin/promtool ]]; then
  command -v go >/dev/null || { echo "go is required to build actionlint and promtool" >&2; exit 1; }
  log "Building actionlint $ACTIONLINT_VERSION and promtool (prometheus $PROMETHEUS_MODULE_VERSION) into $bin"
  GOBIN=$bin GOFLAGS=-buildvcs=false go install "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION"
  GOBIN=$bin GOFLAGS=-buildvcs=false go install "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_MODULE_VERSION"
fi
echo "$bin"
