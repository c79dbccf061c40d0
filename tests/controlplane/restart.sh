#!/usr/bin/env bash
# Stops one component of a control plane that up.sh started and starts it again with the
# exact command line up.sh used (kept in STATE_DIR/cmdline), as a crash and a restart by a
# supervisor would; then waits until the API server serves again through it.
# Usage: restart.sh STATE_DIR etcd|kube-apiserver|kube-controller-manager|kube-scheduler [DOWN_SECONDS]
#   DOWN_SECONDS (default 0): how long the component stays stopped.
# The new process replaces the old one in STATE_DIR/pids, so down.sh stops it.
# Prints on stdout when the old process had exited and when the API server served again:
#   exited EPOCH_SECONDS
#   serving EPOCH_SECONDS
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

usage="usage: restart.sh STATE_DIR etcd|kube-apiserver|kube-controller-manager|kube-scheduler [DOWN_SECONDS]"
state=${1:?$usage}
name=${2:?$usage}
down_seconds=${3:-0}
[[ $down_seconds =~ ^[0-9]+(\.[0-9]+)?$ ]] || { echo "DOWN_SECONDS must be a number of seconds, not '$down_seconds'" >&2; exit 2; }
state=$(cd "$state" && pwd)
cmdline=$state/cmdline/$name
[[ -f $cmdline ]] || { echo "no command line recorded for '$name' in $state/cmdline (started by an older up.sh?)" >&2; exit 1; }
old=$(awk -v n="$name" '$2==n{print $1}' "$state/pids")
[[ -n $old ]] || { echo "no pid recorded for '$name' in $state/pids" >&2; exit 1; }
tools=$("$CONTROLPLANE_DIR/tools.sh")
kubectl() { "$tools/kubectl" --kubeconfig "$state/kubeconfig" "$@"; }

# Stop: SIGTERM, then SIGKILL after 20 seconds.
kill -TERM "$old" 2>/dev/null || true
for _ in $(seq 1 200); do
  kill -0 "$old" 2>/dev/null || break
  sleep 0.1
done
if kill -0 "$old" 2>/dev/null; then
  kill -KILL "$old" 2>/dev/null || true
  while kill -0 "$old" 2>/dev/null; do sleep 0.1; done
fi
echo "exited $(date +%s.%N)"
log "$name stopped (pid $old); down for ${down_seconds}s"
sleep "$down_seconds"

# Start it again, detached from the caller (its own session), appending to the same log.
mapfile -d '' args <"$cmdline"
setsid "${args[@]}" >>"$state/logs/$name.log" 2>&1 </dev/null &
new=$!
awk -v n="$name" -v p="$new" '$2==n{$1=p} {print}' "$state/pids" >"$state/pids.new"
mv "$state/pids.new" "$state/pids"

# Ready when the API server answers /readyz (which includes its etcd check) through it.
for _ in $(seq 1 600); do
  kill -0 "$new" 2>/dev/null || {
    echo "$name exited after the restart; last log lines:" >&2
    tail -20 "$state/logs/$name.log" >&2
    exit 1
  }
  if kubectl get --raw /readyz >/dev/null 2>&1; then
    echo "serving $(date +%s.%N)"
    log "$name restarted (pid $new)"
    exit 0
  fi
  sleep 0.1
done
echo "the API server is not ready 60 s after restarting $name" >&2
exit 1
