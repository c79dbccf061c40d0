#!/usr/bin/env bash
# Builds the operator and serving images from static binaries made on this machine, then
# checks what is inside them.
#
# The binaries are built here (release, glibc linked statically), and podman builds only the
# final `FROM scratch` stage of Dockerfile.operator and Dockerfile.serving: the builder
# stage is replaced with `--build-context builder=DIR`, so no base image is pulled and no
# RUN step runs. Each image must then have:
#   - user 65532:65532, the binary as entrypoint, port 8080 exposed, the OCI labels;
#   - for serving, a HEALTHCHECK that runs the binary's own `healthcheck` subcommand;
#   - exactly one file, the binary: no shell, no other executable, nothing else;
#   - a binary that is static (no interpreter, no shared libraries) and starts in an
#     otherwise empty root directory as user 65532 (checked with chroot).
#
# Usage: tests/images.sh [TAG [SAVE_DIR]]   (default tag: dev; images are
#        localhost/modelship/*:TAG; with SAVE_DIR, docker-archives operator.tar and
#        serving.tar are kept there, for loading into the test node)
# Installs podman with apt-get when it is missing and this runs as root.
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-dev}
save_dir=${2:-}
target=x86_64-unknown-linux-gnu
log() { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }
fail() { printf 'images.sh: FAILED: %s\n' "$*" >&2; exit 1; }

[[ $(uname -m) == x86_64 ]] || fail "this script builds $target binaries; the machine is $(uname -m)"

if ! command -v podman >/dev/null; then
  [[ $(id -u) == 0 ]] || fail "podman is not installed (apt-get install -y podman, as root)"
  log "Installing podman"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman >/dev/null
fi
log "$(podman --version)"

# cargo test sets CARGO_MANIFEST_DIR for the tests that call this script, and ring's build
# script reruns when it changes: without it the release build is the same one as from a shell.
unset CARGO_MANIFEST_DIR
log "Building static release binaries ($target, crt-static)"
# With an explicit --target, RUSTFLAGS reach only the target's artifacts, not build scripts
# or proc macros, which must stay dynamic. The flags are those of the Dockerfiles: getrandom
# calls the getrandom(2) syscall, since dlsym finds nothing in a static binary.
RUSTFLAGS='-C target-feature=+crt-static --cfg getrandom_backend="linux_getrandom"' \
  cargo build --release --locked --quiet \
  --target "$target" -p modelship-operator -p modelship-serving

work=$(mktemp -d "${TMPDIR:-/tmp}/modelship-images.XXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/context"
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
version=$(awk -F'"' '/^version = /{print $2; exit}' Cargo.toml)

for component in operator serving; do
  binary=modelship-$component
  built=target/$target/release/$binary
  [[ -x $built ]] || fail "$built was not built"
  # Static: no program interpreter and no shared libraries.
  if readelf -l "$built" | grep -q 'Requesting program interpreter'; then
    fail "$binary has a program interpreter: it is not statically linked"
  fi
  if readelf -d "$built" | grep -q '(NEEDED)'; then
    fail "$binary needs shared libraries: $(readelf -d "$built" | grep '(NEEDED)' | tr -s ' ')"
  fi
  mkdir -p "$work/$component/out"
  cp "$built" "$work/$component/out/$binary"

  image=localhost/modelship/$component:$tag
  log "Building $image"
  # Replace, not pile up: the previous image of this tag would stay behind untagged.
  podman rmi --ignore "$image" >/dev/null
  # The main context is an empty directory: the runtime stage copies only from `builder`.
  podman build --quiet --format docker --pull=never --layers=false \
    --build-context "builder=$work/$component" \
    --build-arg "VERSION=$version" --build-arg "REVISION=$revision" \
    -f "Dockerfile.$component" -t "$image" "$work/context" >/dev/null

  podman image inspect "$image" >"$work/$component.json"
  podman save --quiet --format docker-archive -o "$work/$component.tar" "$image"
  python3 - "$component" "$binary" "$work/$component.json" "$work/$component.tar" "$work/$component/rootfs" <<'PY'
import hashlib, json, os, sys, tarfile

component, binary, inspect_path, archive, rootfs = sys.argv[1:]
image = json.load(open(inspect_path))[0]
# The image configuration as shipped (the docker-archive's config blob), not a tool's view.
with tarfile.open(archive) as outer:
    manifest = json.load(outer.extractfile("manifest.json"))[0]
    config = json.load(outer.extractfile(manifest["Config"]))["config"]
problems = []

def expect(what, got, want):
    if got != want:
        problems.append(f"{what}: got {got!r}, want {want!r}")

expect("user", config.get("User"), "65532:65532")
expect("entrypoint", config.get("Entrypoint"), [f"/{binary}"])
expect("cmd", config.get("Cmd") or None, None)
expect("exposed ports", sorted((config.get("ExposedPorts") or {}).keys()), ["8080/tcp"])
labels = config.get("Labels") or {}
for key in ["title", "description", "version", "revision", "source", "url", "documentation",
            "licenses", "vendor", "base.name"]:
    if not labels.get(f"org.opencontainers.image.{key}"):
        problems.append(f"label org.opencontainers.image.{key} is missing")
expect("title label", labels.get("org.opencontainers.image.title"), binary)
expect("licenses label", labels.get("org.opencontainers.image.licenses"), "Apache-2.0")
expect("base label", labels.get("org.opencontainers.image.base.name"), "scratch")
health = config.get("Healthcheck")
if component == "serving":
    expect("healthcheck", (health or {}).get("Test"), ["CMD", f"/{binary}", "healthcheck"])
else:
    expect("healthcheck", health, None)

# Every file of every layer: the binary must be the only one.
files = []
digest = None
with tarfile.open(archive) as outer:
    for layer in manifest["Layers"]:
        with tarfile.open(fileobj=outer.extractfile(layer)) as inner:
            for member in inner.getmembers():
                name = member.name.lstrip("./")
                if member.isdir():
                    continue
                files.append((name, member.mode, member.uid, member.size))
                if name == binary:
                    os.makedirs(rootfs, exist_ok=True)
                    data = inner.extractfile(member).read()
                    digest = hashlib.sha256(data).hexdigest()
                    with open(os.path.join(rootfs, binary), "wb") as out:
                        out.write(data)
                    os.chmod(os.path.join(rootfs, binary), 0o555)
names = sorted(f[0] for f in files)
expect("files in the image", names, [binary])
for shell in ("bin/sh", "bin/bash", "bin/busybox", "usr/bin/sh"):
    if shell in names:
        problems.append(f"the image has a shell: /{shell}")
for name, mode, uid, size in files:
    if name == binary:
        if mode & 0o111 == 0:
            problems.append(f"/{binary} is not executable (mode {mode:o})")
        if mode & 0o022:
            problems.append(f"/{binary} is writable by group or others (mode {mode:o})")

size_mb = image["Size"] / 1e6
print(f"{component}: {image['RepoTags'][0]} {size_mb:.1f} MB, user {config.get('User')}, "
      f"entrypoint {config.get('Entrypoint')}, ports {sorted((config.get('ExposedPorts') or {}))}, "
      f"healthcheck {(health or {}).get('Test')}, files {names}, "
      f"{sum(1 for k in labels if k.startswith('org.opencontainers.image.'))} OCI labels, "
      f"/{binary} sha256 {digest}")
if problems:
    print(f"{component}: " + "; ".join(problems), file=sys.stderr)
    sys.exit(1)
PY
  # The binary alone in an empty root directory, as the image's user: it must start.
  if ! out=$(chroot --userspec=65532:65532 "$work/$component/rootfs" "/$binary" --version 2>&1); then
    fail "$binary does not start in an empty root directory: $out"
  fi
  echo "$component: /$binary --version in an empty root as 65532: $out"
done
if [[ -n $save_dir ]]; then
  mkdir -p "$save_dir"
  for component in operator serving; do cp "$work/$component.tar" "$save_dir/$component.tar"; done
fi
log "Images built and checked: localhost/modelship/operator:$tag, localhost/modelship/serving:$tag"
