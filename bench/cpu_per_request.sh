#!/usr/bin/env bash
# CPU time switchyard spends per proxied request (user+system, from /proc), under wrk
# load against an nginx origin, for one set of extra flags. Proxy on CPU 0, wrk and the
# origin on CPU 1. Used to price a feature, e.g. metrics on vs off:
#
#   bench/cpu_per_request.sh                                   # baseline
#   bench/cpu_per_request.sh --admin 127.0.0.1:18909            # metrics recorded
#
# Prints: req/s, and CPU microseconds per request. Stops everything it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
ORIGIN=127.0.0.1:18911 PROXY=127.0.0.1:18912 DUR=${DUR:-6}
work=$(mktemp -d); pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
cargo build --release -q
cat > "$work/origin.conf" <<CONF
worker_processes 1; daemon off; pid $work/o.pid; error_log $work/o.log crit;
events { worker_connections 4096; }
http { access_log off; server { listen $ORIGIN; keepalive_requests 1000000; location / { return 200 'hello'; } } }
CONF
taskset -c 1 nginx -c "$work/origin.conf" -e "$work/o.log" & pids+=($!)
taskset -c 0 ./target/release/switchyard -l "$PROXY" -b "$ORIGIN" -w 1 --mode thread --log-level error "$@" & sy=$!; pids+=($sy)
for _ in $(seq 100); do curl -s -o /dev/null "http://$PROXY/" && break; sleep 0.05; done
ticks() { awk '{print $14 + $15}' "/proc/$sy/stat"; }
hz=$(getconf CLK_TCK)
t0=$(ticks)
out=$(taskset -c 1 wrk -t1 -c64 -d"${DUR}s" "http://$PROXY/")
t1=$(ticks)
reqs=$(awk '/requests in/ {print $1}' <<<"$out")
rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
awk -v t="$((t1 - t0))" -v hz="$hz" -v n="$reqs" -v rps="$rps" \
  'BEGIN { printf "req/s %s  cpu_us_per_request %.2f  (%d requests)\n", rps, t / hz * 1e6 / n, n }'
