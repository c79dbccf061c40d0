#!/usr/bin/env bash
# cargo-fuzz, built once from crates.io into the cache (a minute or two the first time).
# Prints its bin directory. The fuzz targets build on the stable toolchain: tests/fuzz.sh runs
# libFuzzer without sanitizers, which needs no nightly flags.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/controlplane/env.sh"
CARGO_FUZZ_VERSION=0.13.2
root=$MODELSHIP_CACHE/cargo-fuzz-$CARGO_FUZZ_VERSION
mkdir -p "$MODELSHIP_CACHE"
exec 9>"$MODELSHIP_CACHE/.cargo-fuzz.lock"
flock 9
if [[ ! -x $root/bin/cargo-fuzz ]]; then
  command -v cargo >/dev/null || { echo "cargo is required to build cargo-fuzz" >&2; exit 1; }
  log "Building cargo-fuzz $CARGO_FUZZ_VERSION into $root"
  cargo install --quiet --locked --root "$root" cargo-fuzz --version "$CARGO_FUZZ_VERSION" >&2
fi
echo "$root/bin"
