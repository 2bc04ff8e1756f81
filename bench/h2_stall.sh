#!/usr/bin/env bash
# The HTTP/2 stall attack from issue 13: CONNS (20) TLS connections x STREAMS (200)
# streams that advertise a zero receive window and ask for a 10 MB file, held HOLD (10)
# seconds. Prints switchyard's RSS before and while held, the backend connections it
# opened (nginx origin's stub_status), and how many streams got an answer head. Runs the
# attack against each config: `default` (no limits) and `capped` (connections_per_client
# and a backend max_connections). Needs nginx, openssl and a release build (built here
# unless SWITCHYARD_BIN is set); the client is examples/h2_stall.rs. Ports 18981-18984.
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS=${CONNS:-20} STREAMS=${STREAMS:-200} HOLD=${HOLD:-10}
ORIGIN=127.0.0.1:18981 STATUS=127.0.0.1:18982 LISTEN=127.0.0.1:18983 ADMIN=127.0.0.1:18984
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.5; rm -rf "$work"; }
trap cleanup EXIT
for t in nginx openssl curl; do command -v $t >/dev/null || { echo "h2_stall.sh needs $t" >&2; exit 1; }; done
cargo build --release -q --example h2_stall
CLIENT=${CARGO_TARGET_DIR:-target}/release/examples/h2_stall
if [[ -n ${SWITCHYARD_BIN:-} ]]; then BIN=$SWITCHYARD_BIN; else cargo build --release -q; BIN=./target/release/switchyard; fi

mkdir -p "$work/www"
head -c 10000000 /dev/zero > "$work/www/big"
chmod -R a+rX "$work" # nginx workers run as nobody
cat > "$work/origin.conf" <<CONF
worker_processes 1; daemon off; pid $work/origin.pid; error_log $work/origin.err error;
events { worker_connections 8192; }
http { access_log off; keepalive_requests 100000000;
  server { listen $ORIGIN; root $work/www; }
  server { listen $STATUS; location / { stub_status; } } }
CONF
nginx -p "$work" -c "$work/origin.conf" & pids+=($!)
(cd "$work" && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj /CN=localhost -addext subjectAltName=DNS:localhost -addext basicConstraints=critical,CA:FALSE -keyout key.pem -out cert.pem) \
  > "$work/openssl.log" 2>&1
accepted() { curl -s "http://$STATUS/" | awk '/accepts/ {getline; print $1}'; }
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

attack() { # name, extra config
  {
    echo "listen: {address: $LISTEN, tls: {certificates: [{cert: $work/cert.pem, key: $work/key.pem}]}}"
    echo "admin: $ADMIN"
    echo "workers: 1"
    echo "mode: thread"
    echo "health: {probes: false}"
    echo "$2"
  } > "$work/$1.yaml"
  "$BIN" -c "$work/$1.yaml" 2> "$work/$1.log" & local lb=$!
  for _ in $(seq 100); do curl -sk -o /dev/null "https://$LISTEN/" && break; sleep 0.05; done
  local before_rss before_conns
  before_rss=$(rss $lb) before_conns=$(accepted)
  "$CLIENT" "$LISTEN" "$work/cert.pem" "$CONNS" "$STREAMS" /big "$HOLD" > "$work/$1.out" 2>&1 & local cl=$!
  sleep $((HOLD - 2))
  local held_rss held_conns
  held_rss=$(rss $lb) held_conns=$(( $(accepted) - before_conns ))
  wait $cl || true
  echo "== $1: $2"
  echo "  RSS ${before_rss} KiB idle, ${held_rss} KiB while held; backend connections opened: $held_conns"
  sed 's/^/  client: /' "$work/$1.out" | sort | uniq -c | sed 's/^ *//'
  kill $lb; wait $lb 2>/dev/null || true
}
attack default "backends: [$ORIGIN]"
attack capped "backends: [{address: $ORIGIN, max_connections: 200}]
queue: {timeout: 5s}
limits: {connections_per_client: 4}"
