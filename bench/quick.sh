#!/usr/bin/env bash
# Quick side-by-side: wrk straight to an nginx origin, through switchyard, and through
# nginx as a proxy, in the same run, one wrk run per row (a 1 s warm-up first). One worker
# each, proxy pinned to CPU 0, wrk and the origin pinned to CPU 1. Both proxies keep at least
# CONNECTIONS idle upstream connections (nginx `keepalive`, switchyard
# pool.max_idle_per_backend), so neither reconnects to the origin in steady state. Prints
# req/s, latency and each row's ratio to direct. One round, no CPU accounting: a first look
# only; bench/compare.sh is the careful comparison (rounds, spread, HAProxy, CPU, memory).
#
#   bench/quick.sh [SECONDS] [CONNECTIONS]        (default 5 s, 64 connections)
#   SWITCHYARD_ARGS="--admin 127.0.0.1:9090"      adds flags to switchyard
#   SWITCHYARD_BIN=/path/to/switchyard            measures that binary instead of building
#
# Needs wrk and nginx (Debian: apt-get install wrk nginx-light). Without SWITCHYARD_BIN it
# builds ./target/release/switchyard (cargo build --release). Uses ports 18901-18903.
# Everything it starts, it stops by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
DUR=${1:-5}
CONNS=${2:-64}
ORIGIN=127.0.0.1:18901 NGINX_PROXY=127.0.0.1:18902 SWITCHYARD=127.0.0.1:18903
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

for tool in wrk nginx taskset; do
  command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install wrk nginx-light util-linux)"; exit 1; }
done
if [[ -n ${SWITCHYARD_BIN:-} ]]; then
  BIN=$SWITCHYARD_BIN
else
  cargo build --release -q
  BIN=./target/release/switchyard
fi
[[ -x $BIN ]] || { echo "no switchyard binary at $BIN" >&2; exit 1; }

conf() { # $1 = name, $2 = server block
  # upstream: keepalive >= CONNECTIONS idle connections, with HTTP/1.1 and an empty
  # Connection header (nginx's docs: needed for upstream keep-alive at all)
  cat > "$work/$1.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/$1.pid;
error_log $work/$1.log crit;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 100000000;
  upstream origin { server $ORIGIN; keepalive $CONNS; keepalive_requests 100000000; } $2 }
CONF
}
conf origin "server { listen $ORIGIN; location / { return 200 'hello from origin'; } }"
conf proxy "server { listen $NGINX_PROXY; location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ''; } }"
cat > "$work/switchyard.yaml" <<CONF
listen: $SWITCHYARD
workers: 1
mode: thread
backends: [$ORIGIN]
health: {probes: false}
pool: {max_idle_per_backend: $CONNS}
CONF
taskset -c 1 nginx -c "$work/origin.conf" -p "$work" -e "$work/origin.log" & pids+=($!)
taskset -c 0 nginx -c "$work/proxy.conf" -p "$work" -e "$work/proxy.log" & pids+=($!)
# shellcheck disable=SC2086 # SWITCHYARD_ARGS is a list of extra flags
taskset -c 0 "$BIN" -c "$work/switchyard.yaml" --log-level error ${SWITCHYARD_ARGS:-} & pids+=($!)
for a in $ORIGIN $SWITCHYARD $NGINX_PROXY; do
  for _ in $(seq 100); do curl -s -o /dev/null "http://$a/" && break; sleep 0.05; done
done

run() { taskset -c 1 wrk -t1 -c"$CONNS" -d"$2" --latency "http://$1/" 2>&1; }
row() {
  local name=$1 out rps p50 p99
  run "$2" 1s > /dev/null # warm-up: opens the upstream connections
  out=$(run "$2" "${DUR}s")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  printf '| %-10s | %10s | %8s | %8s |\n' "$name" "$rps" "$p50" "$p99"
  echo "$rps" > "$work/$name.rps"
}
echo "| row        |      req/s |      p50 |      p99 |"
echo "|------------|------------|----------|----------|"
row direct "$ORIGIN"
row switchyard "$SWITCHYARD"
row nginx "$NGINX_PROXY"
d=$(cat "$work/direct.rps")
for n in switchyard nginx; do
  awk -v a="$(cat "$work/$n.rps")" -v d="$d" -v n="$n" 'BEGIN { printf "%s / direct = %.2f\n", n, a / d }'
done
