#!/usr/bin/env bash
# Soak: switchyard under steady load while everything an operator does to it happens
# at once, for DURATION seconds (default 600):
#   - wrk at about half of the capacity measured just before (a Lua delay per request);
#   - a config reload every 10 s (the weights swap, SIGHUP);
#   - one backend SIGKILLed every 30 s, restarted 2 s later;
#   - a worker SIGKILLed every 60 s (the master replaces it);
#   - RSS and descriptors of the master and its children sampled every 5 s.
# Prints wrk's summary, the errors, the client connections each killed worker held (the
# only ones a worker's death may cost), and RSS after the first minute; writes
# bench/results/soak-DATE.{csv,png,txt}. Needs wrk, ss, gnuplot (for the PNG) and a
# release build (built here unless SWITCHYARD_BIN is set). Uses ports 18961-18965.
#
#   bench/soak.sh                 # 10 minutes
#   DURATION=60 bench/soak.sh     # a short try
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-600}
WORKERS=${WORKERS:-2}
LISTEN=127.0.0.1:18961 ADMIN=127.0.0.1:18962
BACKENDS=(127.0.0.1:18963 127.0.0.1:18964 127.0.0.1:18965)
stamp=$(date -u +%Y-%m-%d)
out=bench/results/soak-$stamp
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [[ -n ${LB:-} ]] && kill "$LB" 2>/dev/null || true
  for b in "${!BE[@]}"; do kill "${BE[$b]}" 2>/dev/null || true; done
  sleep 1; rm -rf "$work"
}
trap cleanup EXIT
if [[ -n ${SWITCHYARD_BIN:-} ]]; then BIN=$SWITCHYARD_BIN; else cargo build --release -q; BIN=./target/release/switchyard; fi
for t in wrk ss; do command -v $t >/dev/null || { echo "soak.sh needs $t" >&2; exit 1; }; done

declare -A BE
start_backend() { # index
  "$BIN" backend --listen "${BACKENDS[$1]}" --name "b$1" >/dev/null 2>&1 &
  BE[$1]=$!
}
for i in "${!BACKENDS[@]}"; do start_backend "$i"; done

config() { # weight of backend 0
  {
    echo "listen: $LISTEN"
    echo "admin: $ADMIN"
    echo "workers: $WORKERS"
    echo "mode: process"
    echo "health: {interval: 1s, timeout: 500ms}"
    echo "backends:"
    echo "  - {address: ${BACKENDS[0]}, weight: $1}"
    echo "  - {address: ${BACKENDS[1]}, weight: 2}"
    echo "  - {address: ${BACKENDS[2]}, weight: 1}"
    echo "strategy: weighted-round-robin"
  } > "$work/lb.yaml.new"
  mv "$work/lb.yaml.new" "$work/lb.yaml"
}
config 1
"$BIN" -c "$work/lb.yaml" 2> "$work/lb.log" &
LB=$!
for _ in $(seq 100); do curl -sf -o /dev/null "http://$LISTEN/" && break; sleep 0.1; done

# Capacity, then half of it: C connections, each waiting DELAY ms between requests.
C=32
cap=$(wrk -t2 -c$C -d5s "http://$LISTEN/" | awk '/Requests\/sec/ {print int($2)}')
delay=$(awk -v c=$C -v r="$cap" 'BEGIN { d = 1000 * c / (r / 2) - 1000 * c / r; if (d < 0.1) d = 0.1; printf "%.2f", d }')
cat > "$work/half.lua" <<LUA
function delay() return $delay end
LUA
echo "capacity ~$cap req/s at -c$C; soaking at about half (delay ${delay} ms per request) for ${DURATION}s"

children() { pgrep -P "$LB" || true; }
rss_fds() {
  local rss=0 fds=0
  for p in "$LB" $(children); do
    r=$(awk '/^VmRSS/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
    f=$(ls "/proc/$p/fd" 2>/dev/null | wc -l)
    rss=$((rss + ${r:-0})); fds=$((fds + f))
  done
  echo "$rss $fds"
}

wrk -t2 -c$C -d"${DURATION}s" --latency -s "$work/half.lua" "http://$LISTEN/" > "$work/wrk.txt" &
WRK=$!
pids+=("$WRK")
echo "t_s,rss_kib,fds" > "$out.csv"
: > "$work/events"
t0=$(date +%s)
killed_held=0 reloads=0 backend_kills=0 worker_kills=0 weight=1
next_sample=0
while kill -0 "$WRK" 2>/dev/null; do
  now=$(( $(date +%s) - t0 ))
  if (( now >= next_sample )); then
    read -r rss fds < <(rss_fds)
    echo "$now,$rss,$fds" >> "$out.csv"
    next_sample=$((next_sample + 5))
  fi
  if (( now > 0 && now % 10 == 0 )) && ! grep -q "^reload $now$" "$work/events"; then
    weight=$(( weight == 1 ? 3 : 1 )); config "$weight"; kill -HUP "$LB"
    echo "reload $now" >> "$work/events"; reloads=$((reloads + 1))
  fi
  if (( now > 0 && now % 30 == 0 )) && ! grep -q "^backend $now$" "$work/events"; then
    b=$(( (now / 30) % ${#BACKENDS[@]} ))
    kill -9 "${BE[$b]}" 2>/dev/null || true
    echo "backend $now" >> "$work/events"; backend_kills=$((backend_kills + 1))
    ( sleep 2; "$BIN" backend --listen "${BACKENDS[$b]}" --name "b$b" >/dev/null 2>&1 & echo $! > "$work/be$b.pid" ) &
    sleep 2.2; BE[$b]=$(cat "$work/be$b.pid")
  fi
  if (( now > 0 && now % 60 == 0 )) && ! grep -q "^worker $now$" "$work/events"; then
    w=""
    for c in $(children); do [[ $(cat /proc/$c/comm 2>/dev/null) == switchyard-w* ]] && { w=$c; break; }; done
    if [[ -n $w ]]; then
      held=$(ss -tnp state established "( sport = :${LISTEN##*:} )" | grep -c "pid=$w," || true)
      kill -9 "$w"; killed_held=$((killed_held + held)); worker_kills=$((worker_kills + 1))
      echo "worker $now $w held $held" >> "$work/events.log"
    fi
    echo "worker $now" >> "$work/events"
  fi
  sleep 0.2
done
wait "$WRK" || true

errors=$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$work/wrk.txt"); errors=${errors:-0}
non2xx=$(awk '/Non-2xx/ {print $NF}' "$work/wrk.txt"); non2xx=${non2xx:-0}
local_responses=$(curl -s "http://$ADMIN/metrics" | awk '/^switchyard_local_responses_total/ {s += $NF} END {print s + 0}')
steady=$(awk -F, 'NR > 1 && $1 >= 60 {print $2}' "$out.csv" | sort -n)
lo=$(echo "$steady" | head -1); hi=$(echo "$steady" | tail -1)
spread=$(awk -v lo="${lo:-0}" -v hi="${hi:-0}" 'BEGIN { if (lo > 0) printf "%.1f", 100 * (hi - lo) / lo; else print "n/a" }')
{
  echo "switchyard soak, $(date -u +%FT%TZ), ${DURATION}s, $WORKERS workers, binary $("$BIN" --version 2>/dev/null || echo "$BIN")"
  echo "load: wrk -t2 -c$C with a ${delay} ms delay per request (capacity measured just before: $cap req/s)"
  cat "$work/wrk.txt"
  echo "events: $reloads reloads, $backend_kills backend kills, $worker_kills worker kills"
  cat "$work/events.log" 2>/dev/null || true
  echo "wrk socket errors: $errors; client connections the killed workers held: $killed_held"
  echo "non-2xx responses: $non2xx; responses switchyard made itself (502/503/504...): $local_responses"
  echo "RSS after the first minute (master + children): min ${lo:-?} KiB, max ${hi:-?} KiB, spread ${spread}%"
  echo "reloads logged: $(grep -c 'configuration reloaded' "$work/lb.log" || true); rejected: $(grep -c 'rejected' "$work/lb.log" || true)"
} | tee "$out.txt"
if command -v gnuplot >/dev/null; then
  gnuplot <<GP
set terminal png size 900,450
set output "$out.png"
set datafile separator ","
set title "switchyard soak: RSS and descriptors (master + children), ${DURATION}s"
set xlabel "seconds"
set ylabel "RSS (MiB)"
set y2label "descriptors"
set y2tics
set yrange [0:*]
set y2range [0:*]
plot "$out.csv" every ::1 using 1:(\$2/1024) with lines lw 2 title "RSS", \
     "$out.csv" every ::1 using 1:3 axes x1y2 with lines title "fds"
GP
  echo "plot: $out.png"
else
  echo "(no gnuplot: no PNG; the samples are in $out.csv)"
fi
