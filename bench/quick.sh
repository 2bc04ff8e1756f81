#!/usr/bin/env bash
# Quick side-by-side: wrk straight to an nginx origin, through switchyard, and through
# nginx as a proxy, in the same run. One worker each, proxy pinned to CPU 0, wrk and the
# origin pinned to CPU 1. Prints req/s, latency and each row's ratio to direct.
#
#   bench/quick.sh [SECONDS] [CONNECTIONS]        (SWITCHYARD_ARGS="--admin 127.0.0.1:9090" adds flags)
#
# Needs wrk and nginx (Debian: apt-get install wrk nginx-light). Everything it starts,
# it stops by PID. The full benchmark (rounds, HAProxy, CPU per request) is
# bench/compare.sh when it exists.
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
cargo build --release -q

conf() { # $1 = name, $2 = server block
  cat > "$work/$1.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/$1.pid;
error_log $work/$1.log crit;
events { worker_connections 4096; }
http { access_log off; upstream origin { server $ORIGIN; keepalive 64; } $2 }
CONF
}
conf origin "server { listen $ORIGIN; keepalive_requests 1000000; location / { return 200 'hello from origin'; } }"
conf proxy "server { listen $NGINX_PROXY; keepalive_requests 1000000; location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection ''; } }"
taskset -c 1 nginx -c "$work/origin.conf" -p "$work" -e "$work/origin.log" & pids+=($!)
taskset -c 0 nginx -c "$work/proxy.conf" -p "$work" -e "$work/proxy.log" & pids+=($!)
# shellcheck disable=SC2086 # SWITCHYARD_ARGS is a list of extra flags
taskset -c 0 ./target/release/switchyard -l "$SWITCHYARD" -b "$ORIGIN" -w 1 --mode thread --log-level error ${SWITCHYARD_ARGS:-} & pids+=($!)
for a in $ORIGIN $SWITCHYARD $NGINX_PROXY; do
  for _ in $(seq 100); do curl -s -o /dev/null "http://$a/" && break; sleep 0.05; done
done

run() { taskset -c 1 wrk -t1 -c"$CONNS" -d"${DUR}s" --latency "http://$1/" 2>&1; }
row() {
  local name=$1 out rps p50 p99
  out=$(run "$2")
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
