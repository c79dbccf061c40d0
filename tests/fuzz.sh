#!/usr/bin/env bash
# Runs every cargo-fuzz target of the serving crate (serving/fuzz: the /predict and Open
# Inference Protocol decoders, the model loader) for a bounded time, coverage-guided from the
# committed corpus, and fails on any crash: a panic, an abort, an input slower than 10 s, or
# memory beyond the limits below. Reproducers land in serving/fuzz/artifacts/TARGET/.
#   tests/fuzz.sh [SECONDS_PER_TARGET]     (default 20, or FUZZ_SECONDS)
#   FUZZ_SEED=N tests/fuzz.sh              repeats a run (its seed is printed)
# libFuzzer runs without sanitizers, so the stable toolchain builds the targets; debug
# assertions are on, so arithmetic overflow is a crash too. New inputs go to a temporary
# corpus: the committed one changes only by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/controlplane/env.sh
seconds=${1:-${FUZZ_SECONDS:-20}}
[[ $seconds =~ ^[0-9]+$ && $seconds -gt 0 ]] || { echo "SECONDS_PER_TARGET must be a positive whole number, not '$seconds'" >&2; exit 2; }
seed=${FUZZ_SEED:-$(( (RANDOM << 15) | RANDOM ))}
export PATH="$(tests/fuzz-tools.sh):$PATH"
# Memory a target may use: RSS checked by libFuzzer, address space by the kernel (a huge
# allocation fails at once instead of being overcommitted and never touched).
rss_limit_mb=1024
address_space_kb=$((4 * 1024 * 1024))

cd serving
targets=$(cargo fuzz list)
log "Building the fuzz targets ($(echo $targets))"
cargo fuzz build -s none --debug-assertions >/dev/null
work=$(mktemp -d "${TMPDIR:-/tmp}/modelship-fuzz.XXXX")
trap 'rm -rf "$work"' EXIT
triple=$(rustc -vV | awk '/^host:/{print $2}')
failed=()
for target in $targets; do
  mkdir -p "$work/$target" "fuzz/artifacts/$target"
  binary=fuzz/target/$triple/release/$target
  log "Fuzzing $target for ${seconds}s (seed $seed)"
  status=0
  (
    ulimit -v "$address_space_kb"
    "$binary" "$work/$target" "fuzz/corpus/$target" \
      -seed="$seed" -max_total_time="$seconds" -timeout=10 -rss_limit_mb="$rss_limit_mb" \
      -max_len=131072 -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$target/"
  ) >"$work/$target.log" 2>&1 || status=$?
  runs=$(awk '/^stat::number_of_executed_units:/{print $2}' "$work/$target.log")
  if (( status != 0 )); then
    echo "fuzz target $target failed (exit $status); its log ends:" >&2
    tail -40 "$work/$target.log" >&2
    failed+=("$target")
  else
    echo "$target: ${runs:-?} inputs in ${seconds}s, 0 crashes"
  fi
done
if (( ${#failed[@]} > 0 )); then
  echo "crashes in: ${failed[*]} (reproduce: cd serving && cargo fuzz run -s none --debug-assertions TARGET fuzz/artifacts/TARGET/FILE)" >&2
  exit 1
fi
