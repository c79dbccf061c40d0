#!/usr/bin/env bash
# Stops what up.sh started in STATE_DIR: SIGTERM, then SIGKILL after 10 seconds.
# Usage: down.sh STATE_DIR [--keep]   (without --keep the state directory is removed)
set -uo pipefail
state=${1:?usage: down.sh STATE_DIR [--keep]}
[[ -f $state/pids ]] || exit 0
# Stop in reverse start order so the API server outlives its clients.
pids=$(tac "$state/pids" | awk '{print $1}')
for pid in $pids; do kill -TERM "$pid" 2>/dev/null; done
for _ in $(seq 1 100); do
  alive=0
  for pid in $pids; do kill -0 "$pid" 2>/dev/null && alive=1; done
  [[ $alive == 0 ]] && break
  sleep 0.1
done
for pid in $pids; do kill -KILL "$pid" 2>/dev/null; done
[[ ${2:-} == --keep ]] || rm -rf "$state"
