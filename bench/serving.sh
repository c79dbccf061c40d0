#!/usr/bin/env bash
# The serving benchmark, one command: Modelship serving against the source design's FastAPI
# app, MLServer and a bare axum server, side by side on this machine (see
# bench/serving_bench.py for what is measured and how). Builds the release binaries, sets up
# the Python virtualenvs (cached), trains the joblib models, runs everything RUNS times (each
# run under the benchmark lock) and writes the "Serving" section of BENCHMARKS.md.
# Results: bench/results/serving-<time>/ (summary.json, results.md, raw wrk output, logs).
#
# Usage: bash bench/serving.sh          (or make bench-serving)
# Settings (environment):
#   RUNS            complete runs, all reported (2)
#   DURATION        seconds per wrk run (10)
#   WARMUP          seconds of warm-up per server and model (3)
#   CONNECTIONS     comma-separated wrk concurrencies (1,8,64)
#   COLD_STARTS     starts per server for the cold-start median (5)
#   SERVERS         comma-separated subset of modelship,bare-axum,fastapi,mlserver (all);
#                   also modelship-predlog (the prediction log on), modelship-queued (every
#                   call through the batching queue) and modelship-baseline
#   BASELINE_BINARY a modelship-serving binary from another build, served as
#                   modelship-baseline to compare two revisions in one run
#   SERVER_CPU      CPU the servers are pinned to (0); LOAD_CPU: wrk's (1)
#   NICE            niceness of the servers and wrk, e.g. -10 to run ahead of other work
#                   on a shared machine (0; negative needs root; recorded)
#   RECORD          auto (a full run, NICE aside, is recorded), 1 or 0
#   BENCH_LOCK      lock shared by every benchmark (/tmp/modelship-bench.lock)
#   MODELSHIP_CACHE cache directory for the virtualenvs and models (~/.cache/modelship)
set -euo pipefail
cd "$(dirname "$0")/.."

log() { echo "[serving-bench $(date +%H:%M:%S)] $*" >&2; }

command_line="bash bench/serving.sh"
for var in BASELINE_BINARY NICE SERVER_CPU LOAD_CPU SERVERS COLD_STARTS CONNECTIONS WARMUP DURATION RUNS; do
  if [[ -n ${!var:-} ]]; then
    command_line="$var=$(printf '%q' "${!var}") $command_line"
  fi
done
RUNS=${RUNS:-2}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
CONNECTIONS=${CONNECTIONS:-1,8,64}
COLD_STARTS=${COLD_STARTS:-5}
SERVERS=${SERVERS:-modelship,bare-axum,fastapi,mlserver}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
NICE=${NICE:-0}
RECORD=${RECORD:-auto}
BENCH_LOCK=${BENCH_LOCK:-/tmp/modelship-bench.lock}
cache="${MODELSHIP_CACHE:-$HOME/.cache/modelship}"
venvs="$cache/venv-bench"

# A full default run is recorded; so is one that only changes NICE (kept apart in the file).
if [[ $RECORD == auto ]]; then
  RECORD=0
  [[ ${command_line#NICE=* } == "bash bench/serving.sh" ]] && RECORD=1
fi

# wrk, curl and flock come from Debian's packages, installed here when missing.
packages=()
command -v wrk >/dev/null || packages+=(wrk)
command -v curl >/dev/null || packages+=(curl)
command -v flock >/dev/null || packages+=(util-linux)
if ((${#packages[@]})); then
  [[ $(id -u) == 0 ]] || { log "missing ${packages[*]}: install them (apt-get, as root)"; exit 1; }
  log "Installing ${packages[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi
for tool in python3 cargo; do
  command -v "$tool" >/dev/null || { log "$tool is missing"; exit 1; }
done
if (($(nproc) < 2)); then
  log "needs 2 CPUs (server on one, wrk on the other); this machine has $(nproc)"
  exit 1
fi

log "Building the release binaries"
# Two invocations: built together, the example's dev-dependencies (tokio's test-util among
# them) would be compiled into the server too, 1 to 2 % slower than the binary the image ships.
cargo build --release -p modelship-serving --example bare_axum
cargo build --release -p modelship-serving --bin modelship-serving

# One virtualenv per requirements file; reinstalled when the file changes.
venv() {
  local dir=$1 requirements=$2 stamp
  stamp=$(sha256sum "$requirements" | cut -d' ' -f1)
  if [[ ! -x $dir/bin/python || $(cat "$dir/.requirements" 2>/dev/null) != "$stamp" ]]; then
    log "Setting up $dir from $requirements"
    rm -rf "$dir"
    mkdir -p "$(dirname "$dir")"
    python3 -m venv "$dir"
    "$dir/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    echo "$stamp" >"$dir/.requirements"
  fi
}
venv "$venvs/fastapi" bench/fastapi/requirements.txt
venv "$venvs/mlserver" bench/requirements.txt

# The source design's two versions as joblib files (retrained when the script changes).
models="$venvs/models"
stamp=$(cat bench/fastapi/train.py bench/fastapi/requirements.txt | sha256sum | cut -d' ' -f1)
if [[ $(cat "$models/.stamp" 2>/dev/null) != "$stamp" ]]; then
  log "Training the joblib models"
  rm -rf "$models"
  "$venvs/fastapi/bin/python" bench/fastapi/train.py "$models/model"
  echo "$stamp" >"$models/.stamp"
fi

revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git status --porcelain -- serving bench/fastapi bench/serving.sh bench/serving_bench.py \
  bench/requirements.txt 2>/dev/null) ]]; then
  revision="$revision + uncommitted changes"
fi
out=$PWD/bench/results/serving-$(date -u +%Y%m%dT%H%M%SZ)
record_args=()
[[ $RECORD == 1 ]] && record_args=(--record "$PWD/BENCHMARKS.md")

log "Running the benchmark ($RUNS runs; results in $out)"
python3 bench/serving_bench.py \
  --repo "$PWD" \
  --fastapi-venv "$venvs/fastapi" \
  --mlserver-venv "$venvs/mlserver" \
  --joblib-dir "$models" \
  --out "$out" \
  --runs "$RUNS" \
  --duration "$DURATION" \
  --warmup "$WARMUP" \
  --connections "$CONNECTIONS" \
  --cold-starts "$COLD_STARTS" \
  --servers "$SERVERS" \
  --server-cpu "$SERVER_CPU" \
  --load-cpu "$LOAD_CPU" \
  --nice "$NICE" \
  --lock "$BENCH_LOCK" \
  --command-line "$command_line" \
  --revision "$revision" \
  "${record_args[@]}"
[[ $RECORD == 1 ]] || log "Not recorded in BENCHMARKS.md (RECORD=1 records it)"
log "Results in $out"
