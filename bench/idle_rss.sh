#!/usr/bin/env bash
# Memory per idle client connection, switchyard alone (the quick loop for memory work;
# bench/compare.sh measures the same cases side by side with nginx and HAProxy). Three cases,
# each in a FRESH switchyard process (one worker, --mode thread) in front of an nginx origin:
#   keepalive  N connections that each made one complete GET and now sit between requests;
#   silent     N accepted connections that have not sent a byte;
#   partial    N connections holding a partial head ("GET / HTTP/1.1\r\nHo").
# For each: the process's RSS before (after one priming request) and with the N connections,
# KiB per connection (and the same from VmHWM, the peak while they were opened), the fds it holds (shows it accepted them all), how many it closed, and
# whether a sample of them still completes a request (bench/idle_conns.py does the client
# side). switchyard's header and idle timeouts are raised to 300 s so none fires meanwhile.
#
#   bench/idle_rss.sh [N]                      (default N=10000; CASES="keepalive silent partial")
#   SWITCHYARD_BIN=/path/to/switchyard bench/idle_rss.sh 2000   (no build: measure that binary)
#
# Needs nginx, python3 and curl. Without SWITCHYARD_BIN it builds ./target/release/switchyard
# (cargo build --release). N connections need about N + 100 open files in this shell, the
# client and switchyard: ulimit -n is raised to N + 1000, which must fit the hard limit
# (`ulimit -Hn`). Uses ports 18911-18916. Stops everything it starts, by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
CASES=${CASES:-keepalive silent partial}
ORIGIN=127.0.0.1:18911 PORT0=18913
hard=$(ulimit -Hn)
if [[ $hard != unlimited ]] && ((N + 1000 > hard)); then
  echo "N=$N needs ulimit -n $((N + 1000)), above the hard limit $hard: use N <= $((hard - 1000))" >&2
  exit 1
fi
ulimit -n $((N + 1000))
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
command -v nginx >/dev/null || { echo "missing nginx (apt-get install nginx-light)"; exit 1; }
if [[ -n ${SWITCHYARD_BIN:-} ]]; then
  BIN=$SWITCHYARD_BIN
else
  cargo build --release -q
  BIN=./target/release/switchyard
fi
[[ -x $BIN ]] || { echo "no switchyard binary at $BIN" >&2; exit 1; }
echo "switchyard: $BIN ($("$BIN" --version))" >&2

cat > "$work/origin.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/origin.pid;
error_log $work/origin.log crit;
events { worker_connections 1024; }
http { access_log off; server { listen $ORIGIN; location / { return 200 'hello from origin'; } } }
CONF
nginx -c "$work/origin.conf" -p "$work" -e "$work/origin.log" & pids+=($!)

i=0
for c in $CASES; do
  # a fresh process and its own port per case: no heap reuse from an earlier case, and no
  # clash with the previous case's client ports still in TIME_WAIT
  port=$((PORT0 + i)); i=$((i + 1))
  cat > "$work/lb.yaml" <<CONF
listen: 127.0.0.1:$port
workers: 1
mode: thread
backends: [$ORIGIN]
health: {probes: false}
timeouts: {client_header: 300s, client_idle: 300s}
CONF
  "$BIN" -c "$work/lb.yaml" --log-level error 2>"$work/lb.log" & lb=$!; pids+=("$lb")
  for _ in $(seq 100); do
    curl -fso /dev/null "http://127.0.0.1:$port/" && break
    sleep 0.05
  done
  python3 bench/idle_conns.py "$port" "$N" "$c" "$lb" > "$work/out.json"
  kill "$lb"; wait "$lb" 2>/dev/null || true
  python3 - "$work/out.json" <<'PY'
import json, sys
x = json.load(open(sys.argv[1]))
print(f"{x['case']:>9}: {x['opened']} connections: RSS {x['before_kib']} KiB -> {x['with_kib']} KiB, "
      f"{x['per_conn_kib']:.2f} KiB per connection (peak {x['peak_per_conn_kib']:.2f}); fds {x['fds_before']} -> {x['fds_with']}; "
      f"failed {x['failed']}, closed by switchyard {x['closed_by_proxy']}, "
      f"still working {x['checked'] - x['check_failed']}/{x['checked']}")
PY
done
