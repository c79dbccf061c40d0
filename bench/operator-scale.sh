#!/usr/bin/env bash
# The operator's scale curve, one command: bench/operator.sh at each size in SIZES, every run
# recorded in BENCHMARKS.md, then one table of what each size cost per ModelDeployment
# (bench/operator_scale.py reads the runs' summary.json).
#
# Usage: bash bench/operator-scale.sh                (or make bench-operator-scale)
#        SIZES="100 200" bash bench/operator-scale.sh
# Other settings are bench/operator.sh's, passed through.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZES=${SIZES:-250 500 1000 2000}
runs=()
for n in $SIZES; do
  log_file=$(mktemp "${TMPDIR:-/tmp}/modelship-operator-scale.XXXX")
  N=$n RECORD=1 bash bench/operator.sh 2>&1 | tee "$log_file"
  # operator.sh ends with "Results in DIR".
  runs+=("$(sed -n 's/.*Results in \(.*\)$/\1/p' "$log_file" | tail -1)")
  rm -f "$log_file"
done
python3 bench/operator_scale.py "${runs[@]}"
