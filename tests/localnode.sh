#!/usr/bin/env bash
# Starts or stops localnode (node agent + Service proxy) for a control plane from up.sh.
#
# Usage:
#   tests/localnode.sh start STATE_DIR [localnode flags...]
#       Starts target/debug/localnode (or $LOCALNODE_BIN) in the background with
#       --state-file STATE_DIR/localnode.json, waits until /healthz answers, appends
#       MODELSHIP_LOCALNODE_PROXY/AGENT exports to STATE_DIR/env and records the pid in
#       STATE_DIR/pids, so down.sh stops it too. Logs: STATE_DIR/logs/localnode.log.
#   tests/localnode.sh stop STATE_DIR
#       Stops it (SIGTERM, SIGKILL after 15 s) and removes its lines from pids and env.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cmd=${1:?usage: localnode.sh start|stop STATE_DIR [flags...]}
state=${2:?usage: localnode.sh start|stop STATE_DIR [flags...]}
shift 2
state=$(cd "$state" && pwd)
log() { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }

running_pid() { awk '$2=="localnode"{print $1}' "$state/pids" 2>/dev/null | tail -1; }

stop() {
  local pid; pid=$(running_pid)
  if [[ -n $pid ]]; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    sed -i '/ localnode$/d' "$state/pids"
  fi
  [[ -f $state/env ]] && sed -i '/MODELSHIP_LOCALNODE_/d' "$state/env"
  rm -f "$state/localnode.json"
}

start() {
  local bin=${LOCALNODE_BIN:-$repo/target/debug/localnode}
  [[ -x $bin ]] || { echo "$bin not found: run cargo build -p modelship-tests --bins" >&2; exit 1; }
  [[ -f $state/env ]] || { echo "$state/env not found: start the control plane with up.sh" >&2; exit 1; }
  [[ -z $(running_pid) ]] || stop
  # shellcheck disable=SC1091
  source "$state/env"
  mkdir -p "$state/logs" "$state/localnode-pods"
  rm -f "$state/localnode.json"
  "$bin" --state-file "$state/localnode.json" --log-dir "$state/localnode-pods" "$@" \
    >"$state/logs/localnode.log" 2>&1 &
  local pid=$!
  echo "$pid localnode" >>"$state/pids"
  local agent="" proxy=""
  for _ in $(seq 1 300); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "localnode exited; last log lines:" >&2; tail -20 "$state/logs/localnode.log" >&2; exit 1
    fi
    if [[ -f $state/localnode.json ]]; then
      agent=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["agent"])' "$state/localnode.json")
      proxy=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["proxy"])' "$state/localnode.json")
      if curl -fsS "http://$agent/healthz" >/dev/null 2>&1; then break; fi
    fi
    sleep 0.1
  done
  curl -fsS "http://$agent/healthz" >/dev/null || { echo "localnode did not answer /healthz" >&2; exit 1; }
  sed -i '/MODELSHIP_LOCALNODE_/d' "$state/env"
  echo "export MODELSHIP_LOCALNODE_PROXY=$proxy MODELSHIP_LOCALNODE_AGENT=$agent" >>"$state/env"
  log "localnode up: proxy $proxy, agent $agent (log $state/logs/localnode.log)"
}

case $cmd in
  start) start "$@" ;;
  stop) stop ;;
  *) echo "usage: localnode.sh start|stop STATE_DIR [flags...]" >&2; exit 2 ;;
esac
