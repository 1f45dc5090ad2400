#!/usr/bin/env bash
# Runs a local piccolo cluster from config.toml.
#
#   ./run-cluster.sh [N]         build (release) and start N nodes (default 3)
#   ./run-cluster.sh status      list the nodes this script started
#   ./run-cluster.sh restart K   kill -9 node K (1-based) and start it again
#   ./run-cluster.sh stop        stop exactly the nodes this script started
#
# Each node logs to logs/node-<port>.log; watch them with: tail -f logs/*.log
set -euo pipefail
cd "$(dirname "$0")"

BIN=target/release/piccolo
PIDS=run/cluster.pids          # one line per node: "<pid> <port>"
CONFIG=${PICCOLO_CONFIG:-config.toml}

alive() { kill -0 "$1" 2>/dev/null; }

running_nodes() {
  [[ -f $PIDS ]] || return 0
  while read -r pid port; do
    if alive "$pid"; then echo "$pid $port"; fi
  done <"$PIDS"
}

# Starts one node, waits until it has bound, and prints "<pid> <port>".
# $1: extra arguments for piccolo.
start_node() {
  local extra=$1
  local tmp
  tmp=$(mktemp logs/node-starting.XXXXXX)
  # shellcheck disable=SC2086
  "$BIN" --config "$CONFIG" $extra >>"$tmp" 2>&1 &
  local pid=$!
  local port=""
  for _ in $(seq 1 100); do
    port=$(sed -n 's/.*listening on .*:\([0-9][0-9]*\)$/\1/p' "$tmp" | head -n1)
    [[ -n $port ]] && break
    if ! alive "$pid"; then
      cat "$tmp" >&2
      rm -f "$tmp"
      echo "node failed to start" >&2
      return 1
    fi
    sleep 0.05
  done
  if [[ -z $port ]]; then
    kill "$pid" 2>/dev/null || true
    echo "node did not bind within 5 s" >&2
    return 1
  fi
  local log=logs/node-$port.log
  # Keep the previous run's log one generation back; the node keeps writing
  # to its open file under the new name.
  [[ -f $log ]] && mv -f "$log" "$log.1"
  mv "$tmp" "$log"
  echo "$pid $port"
}

cmd_start() {
  local n=${1:-3}
  [[ $n =~ ^[0-9]+$ && $n -ge 1 ]] || { echo "usage: $0 [N] | status | restart K | stop" >&2; exit 2; }
  local running
  running=$(running_nodes)
  if [[ -n $running ]]; then
    echo "a cluster is already running ($(echo "$running" | wc -l) nodes); see '$0 status', or '$0 stop' first"
    exit 1
  fi
  echo "building piccolo (release)..."
  cargo build --release --quiet
  mkdir -p logs run
  : >"$PIDS"
  for _ in $(seq 1 "$n"); do
    start_node "" >>"$PIDS"
  done
  echo "started $n nodes:"
  while read -r pid port; do
    echo "  127.0.0.1:$port  pid $pid  log logs/node-$port.log"
  done <"$PIDS"
  echo
  echo "watch them:   tail -f logs/*.log"
  echo "talk to one:  telnet 127.0.0.1 $(head -n1 "$PIDS" | cut -d' ' -f2)   (or redis-cli -p ...)"
  echo "stop them:    $0 stop"
}

cmd_status() {
  [[ -f $PIDS ]] || { echo "no cluster started by this script"; return 0; }
  local i=0
  while read -r pid port; do
    i=$((i + 1))
    if alive "$pid"; then state=running; else state=dead; fi
    echo "node $i  127.0.0.1:$port  pid $pid  $state"
  done <"$PIDS"
}

cmd_stop() {
  [[ -f $PIDS ]] || { echo "no cluster started by this script"; return 0; }
  local pids=()
  while read -r pid _; do
    if alive "$pid"; then kill -TERM "$pid" 2>/dev/null || true; pids+=("$pid"); fi
  done <"$PIDS"
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.05; done
    if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  done
  rm -f "$PIDS"
  echo "stopped ${#pids[@]} nodes"
}

cmd_restart() {
  local k=${1:-}
  [[ $k =~ ^[0-9]+$ ]] || { echo "usage: $0 restart K" >&2; exit 2; }
  local line
  line=$(sed -n "${k}p" "$PIDS" 2>/dev/null || true)
  [[ -n $line ]] || { echo "no node $k; see '$0 status'" >&2; exit 1; }
  local pid port
  read -r pid port <<<"$line"
  if alive "$pid"; then
    kill -KILL "$pid"
    for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.05; done
    echo "killed node $k (pid $pid, port $port)"
  fi
  "$BIN" --config "$CONFIG" -p "$port" >>"logs/node-$port.log" 2>&1 &
  local new=$!
  for _ in $(seq 1 100); do
    grep -q "listening on .*:$port\$" <(tail -n 5 "logs/node-$port.log") && break
    alive "$new" || { echo "node $k failed to restart; see logs/node-$port.log" >&2; exit 1; }
    sleep 0.05
  done
  sed -i "${k}s/.*/$new $port/" "$PIDS"
  echo "restarted node $k on port $port (pid $new); watch it catch up: tail -f logs/node-$port.log"
}

case "${1:-}" in
  stop) cmd_stop ;;
  status) cmd_status ;;
  restart) cmd_restart "${2:-}" ;;
  start) cmd_start "${2:-3}" ;;
  "") cmd_start 3 ;;
  *) cmd_start "$1" ;;
esac
