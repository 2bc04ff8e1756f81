#!/usr/bin/env bash
# Memory per idle keep-alive client connection, switchyard alone (the quick loop for
# memory work; bench/compare.sh measures the same thing side by side with nginx and
# HAProxy). Starts an nginx origin and one switchyard worker in front of it, opens N
# client connections that each make one request and then stay open, and prints the
# switchyard process's RSS before and with them.
#
#   bench/idle_rss.sh [N]            (default 10000; needs nginx and python3)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
ORIGIN=127.0.0.1:18911 LB=127.0.0.1:18913
ulimit -n $((N + 1000))
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
command -v nginx >/dev/null || { echo "missing nginx (apt-get install nginx-light)"; exit 1; }
cargo build --release -q

cat > "$work/origin.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/origin.pid;
error_log $work/origin.log crit;
events { worker_connections 1024; }
http { access_log off; server { listen $ORIGIN; location / { return 200 'hello from origin'; } } }
CONF
nginx -c "$work/origin.conf" -p "$work" -e "$work/origin.log" & pids+=($!)
target/release/switchyard --listen "$LB" --workers 1 --mode thread -b "$ORIGIN" 2>"$work/lb.log" & pids+=($!)
lb=$!
for _ in $(seq 100); do
  curl -fso /dev/null "http://$LB/" && break
  sleep 0.05
done

python3 - "${LB##*:}" "$N" "$lb" <<'PY'
import re, socket, sys, time
port, n, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def rss_kib():
    return sum(int(l.split()[1]) for l in open(f"/proc/{pid}/status") if l.startswith("VmRSS:"))
def get(s):
    s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
    buf = b""
    while chunk := s.recv(65536):
        buf += chunk
        head, sep, body = buf.partition(b"\r\n\r\n")
        m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        if sep and m and len(body) >= int(m.group(1)):
            return head.startswith(b"HTTP/1.1 200")
    return False
before, socks, bad = rss_kib(), [], 0
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    socks.append(s)
    bad += not get(s)
time.sleep(2)
with_conns = rss_kib()
# Every connection still serves a second request.
again = sum(not get(s) for s in socks[: min(n, 1000)])
print(f"{n} idle connections: RSS {before} KiB -> {with_conns} KiB, "
      f"{(with_conns - before) / n:.2f} KiB per connection; failed {bad}, second request failed {again}")
PY
