#!/usr/bin/env bash
# CPU time switchyard spends per proxied request (user and system, from /proc), under wrk
# load (-c CONNS, a 1 s warm-up first) against an nginx origin, for one set of extra flags.
# switchyard: 1 worker, --mode thread, health probes off, pool.max_idle_per_backend = CONNS
# (so it never reconnects to the origin in steady state), on CPU 0; wrk and the origin on
# CPU 1. Used to price a feature, e.g. metrics on vs off:
#
#   bench/cpu_per_request.sh                                   # baseline
#   bench/cpu_per_request.sh --admin 127.0.0.1:18909            # metrics recorded
#   DUR=6 CONNS=64 SWITCHYARD_BIN=/path/to/switchyard bench/cpu_per_request.sh   (defaults; no build)
#   EXTRA_YAML='rate_limits: [{name: c, key: client_ip, rate: 10000000/s}]' bench/cpu_per_request.sh
#     (config lines appended: what the flags cannot say, e.g. a rate limit that never refuses)
#
# Flags are passed after `-c <generated config>`, so they override it. One run: on a shared
# machine, repeat it (bench/compare.sh does rounds and reports the spread). Prints req/s, and
# CPU microseconds per request (user + system). Needs wrk and nginx; without SWITCHYARD_BIN
# it builds ./target/release/switchyard. Uses ports 18911-18912. Stops everything it starts.
set -euo pipefail
cd "$(dirname "$0")/.."
ORIGIN=127.0.0.1:18911 PROXY=127.0.0.1:18912 DUR=${DUR:-6} CONNS=${CONNS:-64}
work=$(mktemp -d); pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
if [[ -n ${SWITCHYARD_BIN:-} ]]; then
  BIN=$SWITCHYARD_BIN
else
  cargo build --release -q
  BIN=./target/release/switchyard
fi
[[ -x $BIN ]] || { echo "no switchyard binary at $BIN" >&2; exit 1; }
cat > "$work/origin.conf" <<CONF
worker_processes 1; daemon off; pid $work/o.pid; error_log $work/o.log crit;
events { worker_connections 4096; }
http { access_log off; server { listen $ORIGIN; keepalive_requests 100000000; location / { return 200 'hello'; } } }
CONF
cat > "$work/lb.yaml" <<CONF
listen: $PROXY
workers: 1
mode: thread
backends: [$ORIGIN]
health: {probes: false}
pool: {max_idle_per_backend: $CONNS}
CONF
if [[ -n ${EXTRA_YAML:-} ]]; then echo "$EXTRA_YAML" >> "$work/lb.yaml"; fi
taskset -c 1 nginx -c "$work/origin.conf" -p "$work" -e "$work/o.log" & pids+=($!)
taskset -c 0 "$BIN" -c "$work/lb.yaml" --log-level error "$@" & sy=$!; pids+=("$sy")
for _ in $(seq 100); do curl -s -o /dev/null "http://$PROXY/" && break; sleep 0.05; done
ticks() { awk '{print $14, $15}' "/proc/$sy/stat"; }
hz=$(getconf CLK_TCK)
taskset -c 1 wrk -t1 -c"$CONNS" -d1s "http://$PROXY/" > /dev/null # warm-up: the pool fills
read -r u0 s0 <<<"$(ticks)"
out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${DUR}s" "http://$PROXY/")
read -r u1 s1 <<<"$(ticks)"
reqs=$(awk '/requests in/ {print $1}' <<<"$out")
rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
awk -v u="$((u1 - u0))" -v s="$((s1 - s0))" -v hz="$hz" -v n="$reqs" -v rps="$rps" 'BEGIN {
  printf "req/s %s  cpu_us_per_request %.2f (user %.2f, system %.2f)  (%d requests)\n",
    rps, (u + s) / hz * 1e6 / n, u / hz * 1e6 / n, s / hz * 1e6 / n, n }'
