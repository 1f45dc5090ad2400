#!/usr/bin/env bash
# Benchmarks piccolo against real Redis with redis-benchmark, on loopback.
#
#   scripts/bench-redis.sh              # throughput/latency table, then the idle section
#   ROUNDS=5 N=300000 scripts/bench-redis.sh
#   scripts/bench-redis.sh --idle 10000 # only: hold 10000 idle connections, report RSS
#
# Environment:
#   ROUNDS   rounds; each round runs every workload against every target,
#            alternating targets (default 3). The table shows medians.
#   N        requests per non-pipelined run (default 200000)
#   NP       requests per run with -P 16 (default 1000000)
#   CLIENTS  redis-benchmark -c (default 50)
#   KEYSPACE redis-benchmark -r (default 100000)
#   IDLE     idle connections for the idle section after the table
#            (default 10000; 0 skips it)
#   PIN      1: servers run on CPU 1 (taskset; piccolo then starts one
#            worker) and redis-benchmark on CPU 0, so client and server do
#            not compete for cores (default 0: no pinning)
#
# Targets: redis-server (no persistence), one piccolo node, and node 1 of a
# 3-node piccolo cluster (its writes replicate to the two others, which run
# on the same machine). Everything binds 127.0.0.1 only. Every process this
# script starts is stopped by PID, and its temp dir removed, on exit or ^C.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
N=${N:-200000}
NP=${NP:-1000000}
CLIENTS=${CLIENTS:-50}
KEYSPACE=${KEYSPACE:-100000}
IDLE=${IDLE:-10000}
PIN=${PIN:-0}
IDLE_ONLY=0

while [[ $# -gt 0 ]]; do
    case "$1" in
        --idle)
            IDLE_ONLY=1
            IDLE=${2:?--idle needs a number}
            shift 2
            ;;
        -h | --help)
            sed -n '2,25p' "$0"
            exit 0
            ;;
        *)
            echo "unknown argument: $1 (try --help)" >&2
            exit 2
            ;;
    esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PICCOLO="$ROOT/target/release/piccolo"
TMP=$(mktemp -d /tmp/piccolo-bench.XXXXXX)
PIDS=()

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log() { echo "[bench] $*" >&2; }

SRV=()
BENCH=()
if [[ $PIN == 1 ]]; then
    SRV=(taskset -c 1)
    BENCH=(taskset -c 0)
fi

# ---------------------------------------------------------------- setup

if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
    log "installing redis-server and redis-tools"
    apt-get update -qq && apt-get install -y -qq redis-server redis-tools >/dev/null
fi
command -v python3 >/dev/null || { echo "python3 is required" >&2; exit 1; }

log "building piccolo (release)"
(cd "$ROOT" && cargo build --release --quiet)

# Idle connections need file descriptors on both ends.
ulimit -Hn 1048576 2>/dev/null || true
ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 2>/dev/null || true

# First port of a run of $1 free consecutive loopback ports (plus piccolo's
# probe window).
free_ports() {
    python3 - "$1" <<'EOF'
import random, socket, sys
n = int(sys.argv[1]) + 10
for _ in range(2000):
    base = random.randint(20000, 60000 - n)
    ok = True
    for p in range(base, base + n):
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p))
        except OSError:
            ok = False
        finally:
            s.close()
        if not ok:
            break
    if ok:
        print(base)
        sys.exit(0)
sys.exit("no free ports")
EOF
}

wait_port() { # port pid name
    local i
    for i in $(seq 1 200); do
        if redis-cli -h 127.0.0.1 -p "$1" PING 2>/dev/null | grep -q PONG; then
            return 0
        fi
        kill -0 "$2" 2>/dev/null || { echo "$3 died at start" >&2; exit 1; }
        sleep 0.05
    done
    echo "$3 does not answer on port $1" >&2
    exit 1
}

start_redis() { # port -> sets REDIS_PID
    "${SRV[@]}" redis-server --port "$1" --bind 127.0.0.1 --save '' --appendonly no \
        --daemonize no --maxclients 20000 >"$TMP/redis-$1.log" 2>&1 &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    wait_port "$1" "$REDIS_PID" redis-server
}

piccolo_config() { # dir bind_port hosts...
    local dir=$1 port=$2 hosts="" h
    shift 2
    for h in "$@"; do hosts+="${hosts:+, }\"127.0.0.1:$h\""; done
    mkdir -p "$dir"
    cat >"$dir/config.toml" <<EOF
[discovery]
hosts = [$hosts]
bind_host = "127.0.0.1"
bind_port = $port

[limits]
max_clients = 20000
EOF
}

# Starts a piccolo node from dir/config.toml; sets PICCOLO_PID and
# PICCOLO_PORT (read from the node's "listening on" log line, since a
# node probes past a busy port).
start_piccolo() { # dir tag
    local dir=$1 tag=$2 i line
    (cd "$dir" && exec "${SRV[@]}" "$PICCOLO" --config "$dir/config.toml") >"$TMP/piccolo-$tag.log" 2>&1 &
    PICCOLO_PID=$!
    PIDS+=("$PICCOLO_PID")
    for i in $(seq 1 200); do
        line=$(grep -m1 'listening on' "$TMP/piccolo-$tag.log" || true)
        [[ -n $line ]] && break
        kill -0 "$PICCOLO_PID" 2>/dev/null || { cat "$TMP/piccolo-$tag.log" >&2; exit 1; }
        sleep 0.05
    done
    [[ -n $line ]] || { echo "piccolo $tag never listened" >&2; exit 1; }
    PICCOLO_PORT=${line##*:}
    wait_port "$PICCOLO_PORT" "$PICCOLO_PID" "piccolo $tag"
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

# ---------------------------------------------------------------- idle

# Opens N connections, PINGs on each, prints "ready", then holds them until
# killed.
write_idle_py() {
    cat >"$TMP/idle.py" <<'EOF'
import resource, socket, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, n + 100)), hard))
conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
for s in conns:
    s.sendall(b"*1\r\n$4\r\nPING\r\n")
for s in conns:
    got = b""
    while not got.endswith(b"\r\n"):
        chunk = s.recv(64)
        if not chunk:
            sys.exit("connection closed after %d bytes: %r" % (len(got), got))
        got += chunk
    assert got == b"+PONG\r\n", got
print("ready", flush=True)
while True:
    time.sleep(3600)
EOF
}

idle_section() { # connections
    write_idle_py
    local n=$1 port pid before after clients
    echo
    echo "## $n idle connections"
    echo
    echo "Each connection sends one PING (RESP), reads +PONG, then stays open and idle."
    echo
    printf '| server | RSS before | RSS with %s idle | per connection | PING while held | connected_clients |\n' "$n"
    printf '|---|---|---|---|---|---|\n'
    local target
    for target in piccolo redis; do
        if [[ $target == piccolo ]]; then
            local base
            base=$(free_ports 1)
            piccolo_config "$TMP/idle" "$base"
            start_piccolo "$TMP/idle" idle
            port=$PICCOLO_PORT
            pid=$PICCOLO_PID
        else
            port=$(free_ports 1)
            start_redis "$port"
            pid=$REDIS_PID
        fi
        before=$(rss_kb "$pid")
        python3 "$TMP/idle.py" "$port" "$n" >"$TMP/idle-$target.out" 2>&1 &
        local holder=$!
        PIDS+=("$holder")
        local i
        for i in $(seq 1 600); do
            grep -q ready "$TMP/idle-$target.out" 2>/dev/null && break
            kill -0 "$holder" 2>/dev/null || break
            sleep 0.1
        done
        if ! grep -q ready "$TMP/idle-$target.out"; then
            echo "| $target | ${before} kB | failed: $(tail -1 "$TMP/idle-$target.out") | | | |"
            kill "$holder" "$pid" 2>/dev/null || true
            continue
        fi
        sleep 1
        after=$(rss_kb "$pid")
        local ping
        ping=$(redis-cli -h 127.0.0.1 -p "$port" PING 2>&1 || true)
        clients=$(redis-cli -h 127.0.0.1 -p "$port" INFO clients | tr -d '\r' |
            awk -F: '/^connected_clients:/ {print $2}')
        printf '| %s | %s kB | %s kB | %s B | %s | %s |\n' "$target" "$before" "$after" \
            "$(((after - before) * 1024 / n))" "$ping" "$clients"
        kill "$holder" 2>/dev/null || true
        wait "$holder" 2>/dev/null || true
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}

machine() {
    echo "## Machine"
    echo
    echo "- nproc: $(nproc)"
    echo "- CPU: $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
    echo "- kernel: $(uname -r)"
    echo "- $(redis-server --version | cut -d' ' -f1-3)"
    echo "- $(redis-benchmark --version)"
    echo "- piccolo: $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown) (release build)"
}

if [[ $IDLE_ONLY == 1 ]]; then
    machine
    idle_section "$IDLE"
    exit 0
fi

# ---------------------------------------------------------------- targets

REDIS_PORT=$(free_ports 1)
start_redis "$REDIS_PORT"
log "redis-server pid $REDIS_PID on 127.0.0.1:$REDIS_PORT"

base=$(free_ports 1)
piccolo_config "$TMP/single" "$base"
start_piccolo "$TMP/single" single
SINGLE_PORT=$PICCOLO_PORT
SINGLE_PID=$PICCOLO_PID
log "piccolo pid $SINGLE_PID on 127.0.0.1:$SINGLE_PORT"

base=$(free_ports 3)
piccolo_config "$TMP/cluster" "$base" "$base" "$((base + 1))" "$((base + 2))"
CLUSTER_PIDS=()
CLUSTER_PORTS=()
for i in 1 2 3; do
    start_piccolo "$TMP/cluster" "cluster-$i"
    CLUSTER_PIDS+=("$PICCOLO_PID")
    CLUSTER_PORTS+=("$PICCOLO_PORT")
done
CLUSTER_PORT=${CLUSTER_PORTS[0]}
log "piccolo cluster pids ${CLUSTER_PIDS[*]} on ports ${CLUSTER_PORTS[*]}"
# Wait until node 1 has linked to both others.
for i in $(seq 1 100); do
    links=$(redis-cli -p "$CLUSTER_PORT" INFO peers | tr -d '\r' | awk -F: '/^links:/ {print $2}')
    [[ ${links:-0} -ge 2 ]] && break
    sleep 0.1
done
log "cluster node 1 has ${links:-0} links"

# ---------------------------------------------------------------- runs

# name | redis-benchmark arguments (without -h/-p)
WORKLOADS=(
    "SET|-t set -c $CLIENTS -n $N -r $KEYSPACE"
    "GET|-t get -c $CLIENTS -n $N -r $KEYSPACE"
    "SET -P 16|-t set -c $CLIENTS -n $NP -r $KEYSPACE -P 16"
    "GET -P 16|-t get -c $CLIENTS -n $NP -r $KEYSPACE -P 16"
    "MSET (10 keys)|-t mset -c $CLIENTS -n $N -r $KEYSPACE"
)
TARGETS=("redis:$REDIS_PORT" "piccolo:$SINGLE_PORT" "cluster:$CLUSTER_PORT")
RESULTS="$TMP/results.csv"
: >"$RESULTS"

for round in $(seq 1 "$ROUNDS"); do
    for w in "${WORKLOADS[@]}"; do
        name=${w%%|*}
        args=${w#*|}
        for t in "${TARGETS[@]}"; do
            target=${t%%:*}
            port=${t#*:}
            log "round $round/$ROUNDS: $name -> $target"
            # shellcheck disable=SC2086
            out=$("${BENCH[@]}" redis-benchmark -h 127.0.0.1 -p "$port" $args --csv 2>&1) || {
                echo "redis-benchmark failed against $target: $out" >&2
                exit 1
            }
            # Columns by header name, so another redis-benchmark version
            # with fewer columns still parses (missing ones print n/a).
            row=$(printf '%s\n' "$out" | tr -d '\r"' | awk -F, -v OFS=, '
                $1 == "test" { for (i = 1; i <= NF; i++) col[$i] = i; next }
                col["rps"] && NF > 1 {
                    p50 = col["p50_latency_ms"] ? $col["p50_latency_ms"] : "nan"
                    p99 = col["p99_latency_ms"] ? $col["p99_latency_ms"] : "nan"
                    print $col["rps"], p50, p99; exit
                }')
            [[ -n $row ]] || { echo "cannot parse: $out" >&2; exit 1; }
            echo "$name,$target,$round,$row" >>"$RESULTS"
        done
    done
done

# Did the cluster's writes replicate? Every node should hold the same keys.
sleep 2
DBSIZES="redis=$(redis-cli -p "$REDIS_PORT" DBSIZE) piccolo=$(redis-cli -p "$SINGLE_PORT" DBSIZE)"
CLUSTER_DBSIZES=""
for i in 0 1 2; do
    CLUSTER_DBSIZES+="${CLUSTER_DBSIZES:+ }node$((i + 1))=$(redis-cli -p "${CLUSTER_PORTS[$i]}" DBSIZE)"
done

# ---------------------------------------------------------------- report

echo
echo "# piccolo vs Redis: redis-benchmark, median of $ROUNDS round(s)"
echo
machine
echo
python3 - "$RESULTS" "$ROUNDS" <<'EOF'
import csv, math, statistics, sys
rows = list(csv.reader(open(sys.argv[1])))
order = []
data = {}
for name, target, _round, rps, p50, p99 in rows:
    if name not in order:
        order.append(name)
    data.setdefault((name, target), []).append((float(rps), float(p50), float(p99)))

def med(name, target, i):
    vals = [r[i] for r in data.get((name, target), []) if not math.isnan(r[i])]
    return statistics.median(vals) if vals else float("nan")

def lat(name, target):
    p50, p99 = med(name, target, 1), med(name, target, 2)
    if math.isnan(p50):
        return "n/a"
    return f"{p50:.3f} / {p99:.3f} ms"

for target, title in [("piccolo", "one piccolo node"),
                      ("cluster", "node 1 of a 3-node piccolo cluster (writes replicate to 2 peers on the same machine)")]:
    print(f"## Redis vs {title}\n")
    print("| workload | redis req/s | piccolo req/s | ratio | redis p50/p99 | piccolo p50/p99 |")
    print("|---|---:|---:|---:|---|---|")
    for name in order:
        r, p = med(name, "redis", 0), med(name, target, 0)
        print(f"| {name} | {r:,.0f} | {p:,.0f} | {p / r:.2f} | {lat(name, 'redis')} | {lat(name, target)} |")
    print()
EOF

echo "Keys after the runs (DBSIZE): $DBSIZES; cluster: $CLUSTER_DBSIZES"
echo "(the cluster's three counts are equal when writes replicate)"
echo
echo "## Commands"
echo
echo '```'
echo "redis-server --port REDIS_PORT --bind 127.0.0.1 --save '' --appendonly no --daemonize no --maxclients 20000"
echo "piccolo --config single/config.toml      # hosts = [], limits.max_clients = 20000"
echo "piccolo --config cluster/config.toml     # x3, hosts = the three ports, bind_port = the first"
for w in "${WORKLOADS[@]}"; do
    echo "redis-benchmark -h 127.0.0.1 -p PORT ${w#*|} --csv"
done
echo '```'
echo "Each round runs each workload against redis, piccolo and the cluster in turn."
if [[ $PIN == 1 ]]; then
    echo "PIN=1: servers under \`taskset -c 1\`, redis-benchmark under \`taskset -c 0\`."
fi

# Stop the bench targets before the idle section, so it measures alone.
for pid in "$REDIS_PID" "$SINGLE_PID" "${CLUSTER_PIDS[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
done

if [[ $IDLE -gt 0 ]]; then
    idle_section "$IDLE"
fi
