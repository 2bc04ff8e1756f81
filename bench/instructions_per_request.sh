#!/usr/bin/env bash
# User-space instructions switchyard executes per proxied request, counted by
# valgrind --tool=callgrind: repeatable to a fraction of a percent whatever else the
# machine is doing, so it prices small request-path changes that wrk's noise hides.
# Kernel work is not counted (see bench/compare.sh for whole-system CPU).
#
#   bench/instructions_per_request.sh [REQUESTS] [FLAGS...]   (default 20000 requests)
#   SWITCHYARD_BIN=/path/to/switchyard bench/instructions_per_request.sh   (no build)
#   EXTRA_YAML='rate_limits: [...]' bench/instructions_per_request.sh   (config lines appended)
#
# One keep-alive client connection sends REQUESTS sequential GETs through switchyard
# (1 worker, thread mode, health probes off so that no probe lands in one run and not the
# other) to an nginx origin; the instruction total of the run minus a run with no requests,
# divided by REQUESTS, is printed. FLAGS go after `-c <generated config>`. Needs valgrind,
# nginx and python3; without SWITCHYARD_BIN it builds ./target/release/switchyard. Uses
# ports 18931-18932. A minute or two at the default.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-20000}; shift || true
ORIGIN=127.0.0.1:18931 PROXY=127.0.0.1:18932
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
cat > "$work/lb.yaml" <<CONF
listen: $PROXY
workers: 1
mode: thread
backends: [$ORIGIN]
health: {probes: false}
CONF
if [[ -n ${EXTRA_YAML:-} ]]; then echo "$EXTRA_YAML" >> "$work/lb.yaml"; fi
cat > "$work/origin.conf" <<CONF
worker_processes 1; daemon off; pid $work/o.pid; error_log $work/o.log crit;
events { worker_connections 1024; }
http { access_log off; server { listen $ORIGIN; keepalive_requests 1000000; location / { return 200 'hello'; } } }
CONF
nginx -c "$work/origin.conf" -e "$work/o.log" & pids+=($!)

count() { # $1 = requests to send
  local out="$work/cg.$1"
  valgrind --tool=callgrind --callgrind-out-file="$out" \
    "$BIN" -c "$work/lb.yaml" --log-level error "${@:2}" >/dev/null 2>&1 &
  local vg=$!
  python3 - "$PROXY" "$1" <<'PY'
import socket, sys, time
host, port = sys.argv[1].split(':'); n = int(sys.argv[2])
for _ in range(600):
    try:
        s = socket.create_connection((host, int(port))); break
    except OSError:
        time.sleep(0.1)
req = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
buf = b""
if n == 0:
    s.close()
    sys.exit(0)
for _ in range(n):
    s.sendall(req)
    while b"hello" not in buf:
        buf += s.recv(65536)
    buf = buf[buf.index(b"hello") + 5:]
s.close()
PY
  kill -TERM "$vg"   # graceful drain, exit 0: callgrind writes its totals
  wait "$vg" || true
  awk '/^summary:|^totals:/ {print $2; exit}' "$out"
}
echo "callgrind: this takes a minute or two" >&2
base=$(count 0 "$@")
total=$(count "$N" "$@")
awk -v b="$base" -v t="$total" -v n="$N" 'BEGIN { printf "instructions per request: %.0f  (%d requests; run %d, baseline %d)\n", (t - b) / n, n, t, b }'
