#!/usr/bin/env bash
# The model benchmark, one command: load time and µs/row at batch 1, 8 and 64 of Modelship's
# in-process runtime and of onnxruntime's C API (the library inside the pinned onnxruntime
# wheel), side by side in one process, single-threaded. Sets up the fixture virtualenv and the
# large benchmark models (cached), builds bench/models (its own target dir), checks that both
# runtimes give the same outputs on the benchmark rows, times them under the benchmark lock
# and writes the "Models" section of BENCHMARKS.md.
#
# Usage: bash bench/models.sh          (or make bench-models)
# Settings (environment):
#   ROUNDS          timed rounds per model and batch size, best kept (15)
#   RECORD          1 (default) writes BENCHMARKS.md, 0 only prints
#   BENCH_LOCK      lock shared by every benchmark (/tmp/modelship-bench.lock)
#   MODELSHIP_CACHE cache directory for the virtualenv, models and build (~/.cache/modelship)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "[models-bench $(date +%H:%M:%S)] $*" >&2; }

command_line="bash bench/models.sh"
[[ -n ${ROUNDS:-} ]] && command_line="ROUNDS=$ROUNDS $command_line"
ROUNDS=${ROUNDS:-15}
RECORD=${RECORD:-1}
BENCH_LOCK=${BENCH_LOCK:-/tmp/modelship-bench.lock}
cache="${MODELSHIP_CACHE:-$HOME/.cache/modelship}"
big="$cache/bench-models"
fixtures=serving/fixtures

for tool in python3 cargo flock; do
  command -v "$tool" >/dev/null || {
    log "$tool is missing"
    exit 1
  }
done

log "Fixture virtualenv and the large benchmark models (cached)"
venv=$(bash $fixtures/generate.sh --venv)
bash $fixtures/generate.sh --bench-models "$big"
ort_lib=$(ls "$venv"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so.* | head -n1)
ort_version=$("$venv/bin/python" -c 'import onnxruntime; print(onnxruntime.__version__)')

log "Building bench/models"
export CARGO_TARGET_DIR="${BENCH_MODELS_TARGET:-$cache/bench-models-target}"
cargo build --release --quiet --manifest-path bench/models/Cargo.toml
harness="$CARGO_TARGET_DIR/release/modelship-bench-models"

models=(
  "gb300=$big/gb300.onnx,$big/inputs_gb300.json"
  "rf200=$big/rf200.onnx,$big/inputs_rf200.json"
)
for name in rf rfreg gb gb3 logreg logreg3; do
  inputs=inputs_binary.json
  [[ $name == *3 ]] && inputs=inputs_3class.json
  models+=("$name=$fixtures/$name.onnx,$fixtures/$inputs")
done

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
started=$(date -u +%Y-%m-%dT%H:%M:%S+00:00)
log "Timing under $BENCH_LOCK (best of $ROUNDS rounds per model and batch size)"
table=$(flock "$BENCH_LOCK" "$harness" --ort "$ort_lib" --rounds "$ROUNDS" "${models[@]}")
load_after=$(cut -d' ' -f1-3 /proc/loadavg)
echo "$table"

[[ $RECORD == 1 ]] || {
  log "Not recorded in BENCHMARKS.md (RECORD=1 records it)"
  exit 0
}
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
revision=$(git rev-parse --short HEAD)
[[ -z $(git status --porcelain -- serving bench/models) ]] || revision="$revision (with uncommitted changes)"
section=$(
  cat <<MD
<!-- models:begin -->
## Models

\`bash bench/models.sh\` (\`make bench-models\`): Modelship's in-process runtime against onnxruntime's C API on the same models, in one process: load time and µs per row at batch 1, 8 and 64.

- Both single-threaded: Modelship as it serves (one thread), onnxruntime ${ort_version} (the library shipped in its pip wheel, through the \`ort\` crate) with intra-op and inter-op threads 1, sequential execution, all graph optimizations. Timings are in-process calls on rows already in memory; no HTTP, no Python. onnxruntime's numbers include its per-call cost (input tensor, run, output values: the 2 to 3 µs of logreg at batch 1), as any caller pays it.
- Before timing, both runtimes must agree on every benchmark row (all rows at once, and the first 64 one by one): labels equal, scores within 1e-5 + 1e-4 x |onnxruntime's|.
- Per model and batch size, ${ROUNDS} rounds of 4096 rows each (batches start at rows spread over the 1000 test rows); the two runtimes alternate within each round so machine noise hits both; the best round of each is kept. Load: best of 5, reading the file included.
- Models: **gb300** gradient boosting, 300 trees of depth 6, binary, 50 features; **rf200** random forest, 200 trees of depth 12, 3 classes, 50 features (both built by \`serving/fixtures/generate.sh --bench-models\`, not committed); the committed fixtures (20 features): **rf** random forest (50 trees, depth 8), **rfreg** regression forest (50 trees, depth 8), **gb**/**gb3** gradient boosting (50 trees of depth 3 per class, binary / 3 classes), **logreg**/**logreg3** logistic regression.

### \`$command_line\`

Date: $(date -u +%Y-%m-%d). Machine: $(nproc) CPUs (${cpu}), shared with other work. Revision: ${revision}. Started ${started}; load average ${load_before} at the start, ${load_after} at the end.

Each cell: Modelship / onnxruntime (ratio; below 1.00x Modelship is faster).

${table}
<!-- models:end -->
MD
)
python3 - "$section" <<'PY'
import re, sys
path = "BENCHMARKS.md"
text = open(path).read()
section = sys.argv[1]
pattern = re.compile(r"<!-- models:begin -->.*?<!-- models:end -->", re.S)
if pattern.search(text):
    text = pattern.sub(lambda _: section, text)
else:
    text = text.replace("<!-- serving:end -->", "<!-- serving:end -->\n\n" + section, 1)
open(path, "w").write(text)
PY
log "Recorded in BENCHMARKS.md"
