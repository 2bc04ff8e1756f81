#!/usr/bin/env bash
# Rate-limit accuracy, as issue 13 asks: `rate: 200/s, burst: 0` on one global key,
# 10 s of wrk at about four times that rate (4 connections, a Lua delay of 0-10 ms, 5 on average, per
# request), then the accepted count (2xx) against the budget 200 x 10 + 0.
#   local: one instance, process mode, 2 workers (one budget in the shared region);
#   redis: two instances (2 workers each) sharing one redis-server, each loaded at
#          twice the rate; their accepted counts summed.
# Also prints the Retry-After seen on a refused request. Needs wrk, curl,
# redis-server and a release build (built here unless SWITCHYARD_BIN is set).
# Uses ports 18971-18978.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-10} RATE=${RATE:-200}
BE=127.0.0.1:18971 REDIS_PORT=18972
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; sleep 0.5; [[ -n ${KEEP_LOG:-} ]] && cp "$work/lb.log" /tmp/acc-lb.log; rm -rf "$work"; }
trap cleanup EXIT
if [[ -n ${SWITCHYARD_BIN:-} ]]; then BIN=$SWITCHYARD_BIN; else cargo build --release -q; BIN=./target/release/switchyard; fi
for t in wrk curl redis-server; do command -v $t >/dev/null || { echo "limit_accuracy.sh needs $t" >&2; exit 1; }; done
wait_up() { for _ in $(seq 100); do curl -s -o /dev/null "http://$1/" && return; sleep 0.05; done; echo "$1 never came up" >&2; exit 1; }

"$BIN" backend --listen $BE --name b >/dev/null 2>&1 & pids+=($!)
redis-server --port $REDIS_PORT --save '' --appendonly no >/dev/null & pids+=($!)
instance() { # listen admin scope
  cat > "$work/$1.yaml" <<YAML
listen: $1
admin: $2
workers: 2
mode: process
health: {probes: false}
backends: [$BE]
redis: {url: "redis://127.0.0.1:$REDIS_PORT/0", timeout: 50ms, on_error: deny}
rate_limits:
  - {name: acc, key: global, rate: $RATE/s, burst: 0, scope: $3}
YAML
  "$BIN" -c "$work/$1.yaml" 2>>"$work/lb.log" & pids+=($!)
}
cat > "$work/pace.lua" <<'LUA'
-- Each wrk process gets its own seed: with Lua's default one, two wrk processes send
-- in lockstep and the slots between their clumps go empty.
function init(args) math.randomseed(tonumber(args[1])) end
function delay() return math.random(0, 10) end
LUA
load() { # listen connections; writes the accepted count to $work/acc-LISTEN
  wrk -t1 -c"$2" -d"${SECS}s" -s "$work/pace.lua" "http://$1/" -- "${1##*:}" > "$work/wrk-$1.txt"
  local total non2xx
  total=$(awk '/requests in/ {print $1}' "$work/wrk-$1.txt")
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$work/wrk-$1.txt"); non2xx=${non2xx:-0}
  echo "  $1: sent $total, accepted $((total - non2xx)), refused $non2xx"
  echo $((total - non2xx)) > "$work/acc-$1"
}
budget=$((RATE * SECS))
verdict() { # accepted
  awk -v a="$1" -v b="$budget" 'BEGIN { d = (a - b) / b * 100; printf "accepted %d of a budget of %d: %+.2f%% (%s)\n", a, b, d, (d <= 5 && d >= -5) ? "within 5%" : "OUTSIDE 5%" }'
}

echo "== local scope: 1 instance, 2 workers, wrk -c4 with 0-10 ms delays (~4x ${RATE}/s) for ${SECS}s"
instance 127.0.0.1:18973 127.0.0.1:18974 local
wait_up 127.0.0.1:18973
sleep 1.1 # the first request's bucket refills before the run
load 127.0.0.1:18973 4
verdict "$(cat "$work/acc-127.0.0.1:18973")"
echo "  a refused request (three at once on one connection):"
curl -s -D - -o /dev/null -o /dev/null -o /dev/null http://127.0.0.1:18973/{1,2,3} | grep -i -E '^(HTTP|retry-after|ratelimit)' | sed 's/^/    /' || true

echo "== redis scope: 2 instances x 2 workers, one redis-server, wrk -c2 each (~2x ${RATE}/s each) for ${SECS}s"
instance 127.0.0.1:18975 127.0.0.1:18976 redis
instance 127.0.0.1:18977 127.0.0.1:18978 redis
wait_up 127.0.0.1:18975; wait_up 127.0.0.1:18977
sleep 1.1
load 127.0.0.1:18975 2 & wa=$!
load 127.0.0.1:18977 2 & wb=$!
wait $wa $wb
verdict "$(( $(cat "$work/acc-127.0.0.1:18975") + $(cat "$work/acc-127.0.0.1:18977") ))"
for a in 127.0.0.1:18976 127.0.0.1:18978; do
  echo "  $a: $(curl -s "http://$a/metrics" | grep -E '^switchyard_(local_responses_total|rate_limited_total)' | tr '\n' ' ')"
done
