#!/usr/bin/env bash
# Side-by-side benchmark: switchyard vs nginx vs HAProxy as reverse proxies in front of ONE
# common nginx origin (fixed 200 'hello'), plus wrk straight to the origin ("direct", the 100%
# line). Each proxy: one worker (one thread), upstream keep-alive sized for the load (see
# "peers" below), no access log, pinned to CPU 0; wrk/h2load and the origin pinned to CPU 1.
#
# What it measures, in one run, rounds interleaved (every row once per round, row order
# rotated per round; a 1 s warm-up burst at the row's concurrency before each measured run):
#  - plain HTTP/1.1, wrk -t1 -cC for each C in CONNS: rows direct, switchyard, nginx, haproxy
#    (+ switchyard-before, see below);
#  - TLS termination (TLS=0 skips): wrk -c64 over https (keep-alive, so TLS record cost, not
#    handshakes): switchyard-tls, nginx-tls (+ haproxy-tls with TLS_HAPROXY=1);
#  - HTTP/2 clients (H2=0 skips): h2load -t1 -c16 -m16 over TLS (h2 by ALPN) against the same
#    TLS listeners: switchyard-h2, nginx-h2 (nginx listens with `ssl http2`). One self-signed
#    EC P-256 certificate, made at run time, is served by every TLS listener; every proxy
#    forwards plain HTTP/1.1 to the same origin.
# Each row reports, over its rounds, the median and the spread (min-max) of: req/s, p99
# (wrk --latency; for h2load, from its per-request log), and the proxy's CPU seconds per 100k
# requests split into user and kernel (utime/stime of the proxy's whole process tree, from
# /proc, over the measured run); plus p50, ratios to direct/nginx/HAProxy (of medians), errors
# (wrk socket errors + non-2xx/3xx, h2load failed streams; summed over rounds), every
# round's req/s, and "origin conns opened": the most connections the origin accepted during
# one measured run (its stub_status), the fairness check for the peers: a proxy whose upstream
# keep-alive holds opens none, or up to one per request that was in flight at the end of the
# warm-up run when it drops the upstream connections of requests cut off; thousands mean its
# idle pool is too small for the load (nginx with `keepalive 64` at c=256: ~4000 per second). Notes flag rows whose rounds spread > 10% or whose runs
# lost CPU to other processes (this box may be shared).
#  - Idle memory (IDLE_CONNS=0 skips), after the load rounds: for each proxy and each case in
#    MEM_CASES, a FRESH proxy process (configured as in the load rows) gets N idle client
#    connections from bench/idle_conns.py, and RSS (VmRSS over its process tree) before and
#    with them gives KiB per connection. Cases: keepalive (each made one complete GET and sits
#    between requests), silent (accepted, never sent a byte), partial (holds a partial head
#    "GET / HTTP/1.1\r\nHo"). Fresh processes, because heap freed after load rounds is reused
#    and hides the cost (an earlier version of this script measured 0.01 KiB that way).
#    Header/idle timeouts are 300 s in every proxy so none fires during the phase.
#
# Peers, tuned as their documentation advises for this load (comments at each config say why):
#  nginx: upstream `keepalive UPSTREAM_IDLE` (idle connections cached per worker) at or above
#  the largest number of requests in flight in any row (max of CONNS, 64 for TLS, 16x16 for
#  h2), with proxy_http_version 1.1 and an empty Connection header (needed for upstream
#  keep-alive at all); HAProxy: nbthread 1, maxconn from the fd limit, http-reuse always,
#  idle server connections unlimited and not purged between rows; switchyard:
#  pool.max_idle_per_backend = UPSTREAM_IDLE, health probes off (the others do not probe).
#
# Comparing two builds: SWITCHYARD_BIN_BEFORE=/path/to/old/switchyard adds switchyard-before
# rows (plain, -tls, -h2, memory) run by that binary with the same config, interleaved with
# the others in every round, and a before -> after table.
#
#   bench/compare.sh                                  # ROUNDS=5 CONNS="64 256" DURATION=8
#   SWITCHYARD_BIN=/work/main/target/release/switchyard bench/compare.sh   # no build
#   SWITCHYARD_BIN=new/switchyard SWITCHYARD_BIN_BEFORE=old/switchyard bench/compare.sh
#   DURATION=2 ROUNDS=1 IDLE_CONNS=2000 OUT=/tmp/c.json bench/compare.sh  # smoke run
#   Other knobs: IDLE_CONNS=10000 (0 skips memory)  MEM_CASES="keepalive silent partial"
#   PROXY_CPU=0 LOAD_CPU=1  TLS=1 TLS_ROUNDS=$ROUNDS (<= ROUNDS: TLS and h2 rows run in rounds
#   1..TLS_ROUNDS) TLS_HAPROXY=0  H2=1  UPSTREAM_IDLE=<max in flight>
#
# Runs as root: apt-get installs wrk/nginx/haproxy/openssl/h2load (nghttp2-client) if
# missing; ulimit -n is raised (to 65536 or the hard limit; IDLE_CONNS must fit under it, and
# HAProxy's memory runs are capped at about half of it since it reserves 2 fds a connection).
# Without SWITCHYARD_BIN it builds switchyard (cargo build --release) and uses
# ./target/release/switchyard. Prints Markdown, writes JSON to $OUT (default
# bench/results/compare-<date>.json). Uses ports 18950-18959 and 18960-18979 (checked free
# first). Everything it starts it stops by PID on exit, Ctrl-C included. ~13 minutes with
# defaults (+3 with SWITCHYARD_BIN_BEFORE), plus the build.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5} CONNS=${CONNS:-64 256} DURATION=${DURATION:-8} IDLE_CONNS=${IDLE_CONNS:-10000}
MEM_CASES=${MEM_CASES:-keepalive silent partial}
PROXY_CPU=${PROXY_CPU:-0} LOAD_CPU=${LOAD_CPU:-1}
TLS=${TLS:-1} TLS_ROUNDS=${TLS_ROUNDS:-$ROUNDS} TLS_HAPROXY=${TLS_HAPROXY:-0} TLS_CONNS=64
H2=${H2:-1} H2_CONNS=16 H2_STREAMS=16
BIN_BEFORE=${SWITCHYARD_BIN_BEFORE:-}
OUT=${OUT:-bench/results/compare-$(date +%F).json}
# the most requests in flight in any row: every proxy keeps at least this many idle upstream
# connections, so no row opens backend connections in steady state
if [[ -z ${UPSTREAM_IDLE:-} ]]; then
  UPSTREAM_IDLE=$TLS_CONNS
  for c in $CONNS $((H2_CONNS * H2_STREAMS)); do ((c <= UPSTREAM_IDLE)) || UPSTREAM_IDLE=$c; done
fi
declare -A PORT=([direct]=18950 [switchyard]=18951 [nginx]=18952 [haproxy]=18953
  [switchyard-tls]=18954 [nginx-tls]=18955 [haproxy-tls]=18956
  [switchyard-before]=18957 [switchyard-before-tls]=18958 [status]=18959) PID=()
MEM_PORT0=18960
SY=(switchyard); [[ -z $BIN_BEFORE ]] || SY+=(switchyard-before)
ROWS=(direct "${SY[@]}" nginx haproxy) TLS_ROWS=() H2_ROWS=() TLS_PROCS=()
if [[ $TLS != 0 ]]; then
  TLS_ROWS=("${SY[@]/%/-tls}" nginx-tls)
  [[ $TLS_HAPROXY == 0 ]] || TLS_ROWS+=(haproxy-tls)
fi
[[ $H2 == 0 ]] || H2_ROWS=("${SY[@]/%/-h2}" nginx-h2)
((TLS_ROUNDS <= ROUNDS)) || TLS_ROUNDS=$ROUNDS
# the h2 rows use the TLS listeners (ALPN picks h2): X-h2 is measured on process X-tls
proc() { if [[ $1 == *-h2 ]]; then echo "${1%-h2}-tls"; else echo "$1"; fi; }
for row in "${TLS_ROWS[@]}" "${H2_ROWS[@]}"; do
  [[ " ${TLS_PROCS[*]} " == *" $(proc "$row") "* ]] || TLS_PROCS+=("$(proc "$row")")
done
url() { if [[ $1 == *-tls || $1 == *-h2 ]]; then echo "https://127.0.0.1:${PORT[$(proc "$1")]}/"; else echo "http://127.0.0.1:${PORT[$1]}/"; fi; }
started=$(date +%s) HZ=$(getconf CLK_TCK)

work=$(mktemp -d)
pids=() wrk_pid=
alive() { [[ -r /proc/$1/stat && $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) != Z ]]; }
stop() { # $1 pid: TERM, up to 5 s to exit, then KILL
  local i
  kill "$1" 2>/dev/null || true
  for ((i = 0; i < 50; i++)); do if alive "$1"; then sleep 0.1; else break; fi; done
  kill -9 "$1" 2>/dev/null || true
}
cleanup() {
  local p
  for p in "${pids[@]}" $wrk_pid; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do stop "$p"; done
  rm -rf "$work"
}
trap cleanup EXIT; trap 'exit 130' INT; trap 'exit 143' TERM

# --- tools, limits, ports, binaries ----------------------------------------------------------
pkgs=()
for t in wrk nginx haproxy python3 curl; do command -v "$t" >/dev/null || pkgs+=("$t"); done
command -v taskset >/dev/null || pkgs+=(util-linux)
((${#TLS_PROCS[@]} == 0)) || command -v openssl >/dev/null || pkgs+=(openssl)
((${#H2_ROWS[@]} == 0)) || command -v h2load >/dev/null || pkgs+=(nghttp2-client)
if ((${#pkgs[@]})); then
  echo "installing ${pkgs[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >&2
fi
NOFILE=65536 hard=$(ulimit -Hn) # raising the hard limit needs CAP_SYS_RESOURCE: else use it
[[ $hard == unlimited ]] || ((hard >= NOFILE)) || NOFILE=$hard
ulimit -n "$NOFILE"
# HAProxy reserves 2 fds per connection (client + server side): its maxconn is capped so
HA_MAXCONN=$((NOFILE >= 40200 ? 20000 : (NOFILE - 100) / 2))
((IDLE_CONNS + 200 <= NOFILE)) || { echo "IDLE_CONNS=$IDLE_CONNS needs ulimit -n > $NOFILE" >&2; exit 1; }
MEM_PROXIES=("${SY[@]}" nginx haproxy); read -ra MEM_CASES_A <<<"$MEM_CASES"
((${#MEM_PROXIES[@]} * ${#MEM_CASES_A[@]} <= 20)) || { echo "too many memory runs for the port range" >&2; exit 1; }
for port in "${PORT[@]}" $(seq "$MEM_PORT0" $((MEM_PORT0 + 19))); do
  [[ -z $(ss -Hltn "sport = :$port") ]] || { echo "port $port is in use" >&2; exit 1; }
done
if [[ -n ${SWITCHYARD_BIN:-} ]]; then
  BIN=$SWITCHYARD_BIN
else
  cargo build --release -q
  BIN=./target/release/switchyard
fi
for b in "$BIN" $BIN_BEFORE; do [[ -x $b ]] || { echo "no switchyard binary at $b" >&2; exit 1; }; done
bin_info() { # $1 binary: version, sha256 prefix, mtime, and the git commit of the checkout it is in
  local d g
  d=$(cd "$(dirname "$1")" && pwd)
  g=$(git -C "$d" describe --always --dirty 2>/dev/null || echo "no git")
  echo "$1: $("$1" --version), sha256 $(sha256sum "$1" | cut -c1-12), built $(date -r "$1" '+%F %T'), in a checkout at $g"
}
SY_V=$(bin_info "$BIN") SY_BEFORE_V=
[[ -z $BIN_BEFORE ]] || SY_BEFORE_V=$(bin_info "$BIN_BEFORE")
echo "switchyard: $SY_V" >&2
[[ -z $BIN_BEFORE ]] || echo "switchyard-before: $SY_BEFORE_V" >&2

# --- origin and peers (configs generated into $work) ---------------------------------------
# Timeouts are 300 s everywhere (client header/idle, upstream idle) so that nothing is closed
# between rows or during the memory phase; none of them costs anything per request.
nginx_conf() { # $1 name, $2 extra http-block contents
  # keepalive_requests: nginx closes a client connection (HTTP/1.1, and HTTP/2 since 1.19.7)
  # after 1000 requests by default; wrk and h2load would then reconnect mid-run (the other
  # proxies have no such limit). worker_connections: room for the memory phase plus upstreams.
  cat > "$work/$1.conf" <<CONF
worker_processes 1; daemon off; pid $work/$1.pid; error_log $work/$1.err error;
worker_rlimit_nofile $NOFILE;
events { worker_connections $NOFILE; }
http { access_log off; keepalive_requests 100000000; keepalive_timeout 300s; client_header_timeout 300s; $2 }
CONF
}
# the origin's stub_status (its own port) counts the connections it accepts: read around each
# measured run, it shows how many backend connections a proxy opened in steady state (0 when
# its upstream keep-alive is big enough; wrk's own connections for the direct row)
nginx_conf origin "server { listen 127.0.0.1:${PORT[direct]}; location / { return 200 'hello'; } }
  server { listen 127.0.0.1:${PORT[status]}; location / { stub_status; } }"
nginx_proxy() { # $1 name, $2 listen parameters (port and flags), $3 extra server-block contents
  # Upstream keep-alive as nginx's docs (ngx_http_upstream_module, "keepalive") advise:
  #  - keepalive N: the most idle upstream connections a worker keeps. Any connection freed
  #    beyond N is closed, so with N below the requests in flight nginx opens (and closes) a
  #    backend connection for many requests: with the old `keepalive 64` at c=256 its kernel
  #    CPU per request nearly doubled and p99 went to ~15-27 ms. N = UPSTREAM_IDLE.
  #  - keepalive_requests / keepalive_timeout (upstream, nginx >= 1.15.3): defaults 1000
  #    requests / 60 s would recycle upstream connections mid-run; the origin allows more.
  #  - proxy_http_version 1.1 and proxy_set_header Connection "": without them nginx speaks
  #    HTTP/1.0 upstream with "Connection: close" and no connection is ever reused.
  nginx_conf "$1" "upstream origin { server 127.0.0.1:${PORT[direct]}; keepalive $UPSTREAM_IDLE;
    keepalive_requests 100000000; keepalive_timeout 300s; }
  server { listen 127.0.0.1:$2; ${3:-}
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
}
haproxy_cfg() { # $1 name, $2 bind line contents
  # As HAProxy's configuration manual advises for a proxy in front of one trusted server:
  #  - nbthread 1: one thread, the 1-worker comparison (pinned to PROXY_CPU by taskset).
  #  - maxconn (global and defaults): HAProxy refuses connections past it (default derived
  #    from the fd limit); set as high as the fd limit allows (2 fds per proxied connection).
  #  - http-reuse always: idle server connections are shared by all client connections
  #    (the default, safe, never gives a client's first request an idle connection another
  #    client used); "always" is the documented choice when the server is known to be a
  #    keep-alive HTTP server, as here, and is what nginx and switchyard do.
  #  - server pool-max-conn -1 (unlimited idle server connections, the default, spelled out)
  #    and pool-purge-delay 300s: the default 5 s purges half of the idle connections every
  #    5 s, so they would be reopened at the start of every row.
  #  - option http-keep-alive (the default), timeout http-keep-alive / http-request / client /
  #    server 300s: nothing closed between rows or during the memory phase.
  cat > "$work/$1.cfg" <<CONF
global
  nbthread 1
  maxconn $HA_MAXCONN
defaults
  mode http
  maxconn $HA_MAXCONN
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 300s
  timeout server 300s
  timeout http-request 300s
  timeout http-keep-alive 300s
frontend fe
  bind $2
  default_backend origin
backend origin
  server origin 127.0.0.1:${PORT[direct]} pool-max-conn -1 pool-purge-delay 300s
CONF
}
sy_conf() { # $1 name, $2 port, $3 "tls" for a TLS listener
  # pool.max_idle_per_backend (default 64) = UPSTREAM_IDLE, as for nginx; idle_timeout 300 s
  # as for the others; probes off (nginx and HAProxy do not probe the origin either).
  {
    echo "listen:"
    echo "  address: 127.0.0.1:$2"
    [[ ${3:-} != tls ]] || printf '  tls:\n    certificates:\n      - {cert: %s, key: %s}\n' "$work/cert.pem" "$work/key.pem"
    cat <<CONF
workers: 1
mode: thread
backends: [127.0.0.1:${PORT[direct]}]
health: {probes: false}
pool: {max_idle_per_backend: $UPSTREAM_IDLE, idle_timeout: 300s}
timeouts: {client_header: 300s, client_idle: 300s}
CONF
  } > "$work/$1.yaml"
}
start() { # $1 name (its kind from the prefix), $2 port, $3 "tls" -> PID[$1], pinned to PROXY_CPU
  local name=$1 port=$2 tls=${3:-}
  case $name in
    switchyard-before*) sy_conf "$name" "$port" "$tls"
      taskset -c "$PROXY_CPU" "$BIN_BEFORE" -c "$work/$name.yaml" --log-level error 2> "$work/$name.err" & ;;
    switchyard*) sy_conf "$name" "$port" "$tls"
      taskset -c "$PROXY_CPU" "$BIN" -c "$work/$name.yaml" --log-level error 2> "$work/$name.err" & ;;
    nginx*)
      # TLS: ssl_protocols, because nginx 1.22's default leaves out TLSv1.3, which switchyard
      # and HAProxy negotiate; http2 on the listener for the h2 rows (wrk offers no ALPN, so
      # it gets HTTP/1.1 there as before)
      if [[ -n $tls ]]; then
        nginx_proxy "$name" "$port ssl http2" "ssl_certificate $work/cert.pem;
          ssl_certificate_key $work/key.pem; ssl_session_cache shared:SSL-$name:10m;
          ssl_protocols TLSv1.2 TLSv1.3;"
      else
        nginx_proxy "$name" "$port"
      fi
      taskset -c "$PROXY_CPU" nginx -p "$work" -e "$work/$name.err" -c "$work/$name.conf" & ;;
    haproxy*) haproxy_cfg "$name" "127.0.0.1:$port${tls:+ ssl crt $work/combined.pem}"
      taskset -c "$PROXY_CPU" haproxy -db -f "$work/$name.cfg" 2> "$work/$name.err" & ;;
    *) echo "start: unknown proxy $name" >&2; exit 1 ;;
  esac
  PID[$name]=$!; pids+=($!)
}
wait_ready() { # $1 URL, $2 name
  local i
  for i in $(seq 100); do
    curl -fs --cacert "$work/cert.pem" -o /dev/null "$1" 2>/dev/null && return
    ((i < 100)) || { echo "$2 did not answer at $1" >&2; cat "$work"/*.err >&2 || true; exit 1; }
    sleep 0.05
  done
}

taskset -c "$LOAD_CPU" nginx -p "$work" -e "$work/origin.err" -c "$work/origin.conf" & pids+=($!)
for row in "${ROWS[@]:1}"; do start "$row" "${PORT[$row]}"; done
if ((${#TLS_PROCS[@]})); then
  (cd "$work" && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout key.pem -out cert.pem) > "$work/openssl.log" 2>&1 ||
    { echo "openssl req failed:" >&2; cat "$work/openssl.log" >&2; exit 1; }
  cat "$work/cert.pem" "$work/key.pem" > "$work/combined.pem"
  for p in "${TLS_PROCS[@]}"; do start "$p" "${PORT[$p]}" tls; done
fi
for row in "${ROWS[@]}" "${TLS_PROCS[@]}"; do wait_ready "$(url "$row")" "$row"; done
# what a TLS client negotiates with each (openssl s_client, OpenSSL like wrk), and that every
# proxy serves the same certificate; the h2 rows record what h2load negotiated
declare -A TLS_INFO=(); : > "$work/tls_info.tsv"
for row in "${TLS_ROWS[@]}"; do
  hs=$(openssl s_client -connect "127.0.0.1:${PORT[$row]}" -servername localhost < /dev/null 2> /dev/null || true)
  fp=$(openssl x509 -noout -fingerprint -sha256 <<<"$hs" 2> /dev/null | sed 's/.*=//' || true)
  TLS_INFO[$row]="$(sed -n 's/^New, \(.*\), Cipher is \(.*\)/\1 \2/p' <<<"$hs" | head -1) ${fp:0:23}"
  echo "$row: ${TLS_INFO[$row]}" >&2
  printf '%s\t%s\n' "$row" "${TLS_INFO[$row]}" >> "$work/tls_info.tsv"
done

# --- helpers -------------------------------------------------------------------------------
ptree() { # $1 and all its descendants, one pid a line
  local p=$1 c kids
  echo "$p"
  kids=$(cat /proc/"$p"/task/*/children 2>/dev/null || true)
  for c in $kids; do ptree "$c"; done
}
ticks() { # "utime stime" in clock ticks, summed over the process tree of $1 (none: "0 0")
  local p u=0 s=0 f
  [[ -n $1 ]] || { echo "0 0"; return; }
  while read -r p; do
    read -ra f < "/proc/$p/stat"; u=$((u + f[13])); s=$((s + f[14]))
  done < <(ptree "$1")
  echo "$u $s"
}
# Load generators are backgrounded + waited on: they catch SIGINT themselves, and bash runs
# the INT trap while in `wait`, not after a foreground child that did.
wrk_run() { # $1 URL, $2 conns, $3 seconds, $4 output file
  taskset -c "$LOAD_CPU" wrk -t1 -c"$2" -d"$3s" --latency "$1" > "$4" 2>&1 &
  wrk_pid=$!
  wait "$wrk_pid" || true
}
h2_run() { # $1 URL, $2 seconds, $3 output file, $4 per-request log (optional)
  taskset -c "$LOAD_CPU" h2load -t1 -c"$H2_CONNS" -m"$H2_STREAMS" -D "$2" ${4:+--log-file="$4"} "$1" > "$3" 2>&1 &
  wrk_pid=$!
  wait "$wrk_pid" || true
}
snap() { # S=(proxy utime, proxy stime, others): others = the machine's busy ticks (user, nice,
  # system, irq, softirq) minus the proxy's, the origin's and this shell's children's (the
  # load generator): ~0 on a quiet box, so it flags rounds disturbed by other jobs
  # (ksoftirqd counts as other). Not to be called in a subshell: `times` must see this
  # shell's children.
  local p o k b
  times > "$work/times"
  read -ra p <<<"$(ticks "$1")"; read -ra o <<<"$(ticks "${pids[0]}")"
  k=$(awk -v hz="$HZ" 'NR == 2 { split($1, u, /[ms]/); split($2, s, /[ms]/)
    print int((u[1] * 60 + u[2] + s[1] * 60 + s[2]) * hz + 0.5) }' "$work/times")
  b=$(awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 }' /proc/stat)
  S=("${p[0]}" "${p[1]}" $((b - o[0] - o[1] - k - p[0] - p[1])))
}
origin_accepts() { # connections the origin has accepted so far (this status request included)
  curl -fs "http://127.0.0.1:${PORT[status]}/" | awk 'NR == 3 { print $1 }'
}
# wrk output -> "rps p50_ms p99_ms errors requests"
parse_wrk() {
  awk 'function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; return v * 1000 }
    /requests in/ { n = $1 } /Requests\/sec/ { rps = $2 }
    $1 == "50%" { p50 = ms($2) } $1 == "99%" { p99 = ms($2) }
    /Socket errors/ { err += $4 + $6 + $8 + $10 } /Non-2xx/ { err += $NF }
    END { printf "%s %s %s %d %d\n", rps + 0, p50 + 0, p99 + 0, err, n }'
}
# h2load output ($1) and its per-request log ($2: start us, status, duration us) -> same
parse_h2load() {
  python3 - "$1" "$2" <<'PY'
import re, sys
out = open(sys.argv[1]).read()
rps = re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", out)
req = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed", out)
d = sorted(int(l.split("\t")[2]) for l in open(sys.argv[2]) if l.count("\t") >= 2 and not l.split("\t")[1].startswith("-"))
pct = lambda q: d[min(len(d) - 1, int(q * len(d)))] / 1000 if d else 0
print(f"{float(rps.group(1)) if rps else 0} {pct(0.5)} {pct(0.99)} {int(req.group(3)) if req else 0} {int(req.group(1)) if req else 0}")
PY
}
measure() { # $1 row, $2 conns, $3 round -> one TSV line in runs.tsv
  local row=$1 c=$2 r=$3 pid=${PID[$(proc "$1")]:-} out=$work/load.out t0 res a0 a1
  if [[ $row == *-h2 ]]; then
    h2_run "$(url "$row")" 1 "$out" # warm-up burst
    snap "$pid"; t0=("${S[@]}"); a0=$(origin_accepts)
    h2_run "$(url "$row")" "$DURATION" "$out" "$work/h2.log"
    a1=$(origin_accepts); snap "$pid"
    res=$(parse_h2load "$out" "$work/h2.log")
    grep -q "^$row"$'\t' "$work/h2_info.tsv" 2>/dev/null ||
      printf '%s\t%s\n' "$row" "$(grep -E '^(TLS Protocol|Cipher|Application protocol):' "$out" |
        sed 's/^[^:]*: //' | paste -sd' ')" >> "$work/h2_info.tsv"
    grep -q '^Application protocol: h2$' "$out" || { echo "h2load did not get h2 from $row:" >&2; cat "$out" >&2; }
  else
    wrk_run "$(url "$row")" "$c" 1 "$out" # warm-up burst
    snap "$pid"; t0=("${S[@]}"); a0=$(origin_accepts)
    wrk_run "$(url "$row")" "$c" "$DURATION" "$out"
    a1=$(origin_accepts); snap "$pid"
    res=$(parse_wrk < "$out")
  fi
  [[ $res != 0\ * ]] || { echo "load run failed for $row c=$c:" >&2; cat "$out" >&2; }
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$row" "$c" "$r" "${res// /$'\t'}" \
    "$((S[0] - t0[0]))" "$((S[1] - t0[1]))" "$((S[2] - t0[2]))" "$((a1 - a0 - 1))" >> "$work/runs.tsv"
  printf 'round %s/%s c=%-4s %-22s %s req/s\n' "$r" "$ROUNDS" "$c" "$row" "${res%% *}" >&2
}

# --- load runs, interleaved -----------------------------------------------------------------
: > "$work/runs.tsv"
for ((r = 1; r <= ROUNDS; r++)); do
  for c in $CONNS; do
    for ((i = 0; i < ${#ROWS[@]}; i++)); do measure "${ROWS[(i + r - 1) % ${#ROWS[@]}]}" "$c" "$r"; done
  done
  if ((r <= TLS_ROUNDS)); then
    for ((i = 0; i < ${#TLS_ROWS[@]}; i++)); do
      measure "${TLS_ROWS[(i + r - 1) % ${#TLS_ROWS[@]}]}" "$TLS_CONNS" "$r"
    done
    for ((i = 0; i < ${#H2_ROWS[@]}; i++)); do
      measure "${H2_ROWS[(i + r - 1) % ${#H2_ROWS[@]}]}" "$H2_CONNS" "$r"
    done
  fi
done

# --- idle memory: fresh processes, one per proxy and case ------------------------------------
: > "$work/rss.jsonl"
if ((IDLE_CONNS > 0)); then
  k=0
  for proxy in "${MEM_PROXIES[@]}"; do
    for case in $MEM_CASES; do
      # own port per run: the previous run's client ports are still in TIME_WAIT
      name=$proxy-mem-$case port=$((MEM_PORT0 + k)); k=$((k + 1))
      start "$name" "$port"
      wait_ready "http://127.0.0.1:$port/" "$name"
      n=$IDLE_CONNS
      [[ $proxy != haproxy ]] || ((n <= HA_MAXCONN - 100)) || n=$((HA_MAXCONN - 100))
      mapfile -t tree < <(ptree "${PID[$name]}")
      echo "memory: $n $case connections to $proxy" >&2
      taskset -c "$LOAD_CPU" python3 bench/idle_conns.py "$port" "$n" "$case" "${tree[@]}" |
        sed "s/^{/{\"proxy\": \"$proxy\", /" >> "$work/rss.jsonl"
      stop "${PID[$name]}"
      keep=(); for p in "${pids[@]}"; do [[ $p == "${PID[$name]}" ]] || keep+=("$p"); done; pids=("${keep[@]}")
    done
  done
fi

# --- report ---------------------------------------------------------------------------------
mkdir -p "$(dirname "$OUT")"
KERNEL=$(uname -r) NPROC=$(nproc) SECS=$(($(date +%s) - started))
CPU_MODEL=$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)
NGINX_V=$(nginx -v 2>&1) HAPROXY_V=$(haproxy -v | sed -n 1p) WRK_V=$(wrk -v 2>&1 | sed -n 1p || true)
H2LOAD_V=$(h2load --version 2>/dev/null | sed -n 1p || true)
ROWS_S=${ROWS[*]} TLS_ROWS_S=${TLS_ROWS[*]} H2_ROWS_S=${H2_ROWS[*]}
touch "$work/h2_info.tsv"
export OUT ROUNDS DURATION CONNS PROXY_CPU LOAD_CPU KERNEL NPROC HZ SECS CPU_MODEL NGINX_V HAPROXY_V WRK_V
export H2LOAD_V SY_V SY_BEFORE_V ROWS_S TLS_ROWS_S TLS_ROUNDS TLS_CONNS H2_ROWS_S H2_CONNS H2_STREAMS
export UPSTREAM_IDLE HA_MAXCONN IDLE_CONNS
python3 - "$work/runs.tsv" "$work/rss.jsonl" "$work/tls_info.tsv" "$work/h2_info.tsv" <<'PY'
import json, os, statistics as st, sys, time
E = os.environ
hz, dur = int(E["HZ"]), int(E["DURATION"])
runs = []
for line in open(sys.argv[1]):
    row, c, r, rps, p50, p99, err, n, ut, stt, oth, opened = line.rstrip("\n").split("\t")
    runs.append(dict(row=row, conns=int(c), round=int(r), rps=float(rps), p50_ms=float(p50),
                     p99_ms=float(p99), errors=int(err), requests=int(n), utime_ticks=int(ut), stime_ticks=int(stt),
                     origin_conns_opened=int(opened),
                     others_cpu_pct=round(100 * int(oth) / hz / dur / int(E["NPROC"]), 1)))
rss = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
tls_info = dict(l.rstrip("\n").split("\t", 1) for l in open(sys.argv[3]) if l.strip())
h2_info = dict(l.rstrip("\n").split("\t", 1) for l in open(sys.argv[4]) if l.strip())
def per100k(ticks, n): return ticks / hz / n * 1e5 if n else float("nan")
METRICS = dict(rps=lambda x: x["rps"], p50_ms=lambda x: x["p50_ms"], p99_ms=lambda x: x["p99_ms"],
               user_s_per_100k=lambda x: per100k(x["utime_ticks"], x["requests"]),
               kernel_s_per_100k=lambda x: per100k(x["stime_ticks"], x["requests"]),
               cpu_s_per_100k=lambda x: per100k(x["utime_ticks"] + x["stime_ticks"], x["requests"]),
               proxy_cpu_busy_pct=lambda x: 100 * (x["utime_ticks"] + x["stime_ticks"]) / hz / dur)
def summary(name, c):  # median, min and max over rounds of one row at c connections (None: no runs)
    rs = sorted((x for x in runs if x["row"] == name and x["conns"] == c), key=lambda x: x["round"])
    if not rs: return None
    d = dict(row=name, conns=c, rounds=len(rs), errors=sum(x["errors"] for x in rs),
             rounds_rps=[round(x["rps"]) for x in rs], origin_conns_opened_max=max(x["origin_conns_opened"] for x in rs))
    for k, f in METRICS.items():
        if name == "direct" and k not in ("rps", "p50_ms", "p99_ms"): continue
        v = [f(x) for x in rs]
        d[k], d[k + "_min"], d[k + "_max"] = st.median(v), min(v), max(v)
    return d
def ratios(rows, refs):  # vs_<ref>: req/s ratio of medians; cpu_vs_ and p99_vs_ likewise
    for d in rows:
        base = {x["row"]: x for x in rows if x["conns"] == d["conns"]}
        for ref in refs:
            b = base.get(ref)
            key = ref.replace("-", "_")
            d["vs_" + key] = d["rps"] / b["rps"] if b and b["rps"] else None
            if "cpu_s_per_100k" in d and b and b.get("cpu_s_per_100k"):
                d["cpu_vs_" + key] = d["cpu_s_per_100k"] / b["cpu_s_per_100k"]
            if b and b["p99_ms"]:
                d["p99_vs_" + key] = d["p99_ms"] / b["p99_ms"]
conns = [int(x) for x in E["CONNS"].split()]
rows = [d for c in conns for d in (summary(n, c) for n in E["ROWS_S"].split()) if d]
ratios(rows, ["direct", "nginx", "haproxy", "switchyard-before"])
tls_conns, h2_conns = int(E["TLS_CONNS"]), int(E["H2_CONNS"])
tls_rows = [d for d in (summary(n, tls_conns) for n in E["TLS_ROWS_S"].split()) if d]
ratios(tls_rows, ["nginx-tls", "switchyard-before-tls"])
direct_rps = next((x["rps"] for x in rows if (x["row"], x["conns"]) == ("direct", tls_conns)), None)
for d in tls_rows:
    d["vs_direct"] = d["rps"] / direct_rps if direct_rps else None
    d["negotiated"] = tls_info.get(d["row"])
h2_rows = [d for d in (summary(n, h2_conns) for n in E["H2_ROWS_S"].split()) if d]
ratios(h2_rows, ["nginx-h2", "switchyard-before-h2"])
for d in h2_rows:
    d["streams_per_conn"] = int(E["H2_STREAMS"])
    d["negotiated"] = h2_info.get(d["row"])
versions = dict(switchyard=E["SY_V"], nginx=E["NGINX_V"], haproxy=E["HAPROXY_V"], wrk=E["WRK_V"], h2load=E["H2LOAD_V"])
if E["SY_BEFORE_V"]: versions["switchyard_before"] = E["SY_BEFORE_V"]
meta = dict(date=time.strftime("%Y-%m-%d %H:%M:%S %z"), nproc=int(E["NPROC"]), kernel=E["KERNEL"],
            cpu=E["CPU_MODEL"], versions=versions, rounds=int(E["ROUNDS"]), duration_s=dur, conns=E["CONNS"],
            proxy_cpu=int(E["PROXY_CPU"]), load_cpu=int(E["LOAD_CPU"]), upstream_idle=int(E["UPSTREAM_IDLE"]),
            haproxy_maxconn=int(E["HA_MAXCONN"]), elapsed_s=int(E["SECS"]))
if tls_rows or h2_rows:
    meta["tls"] = dict(rounds=int(E["TLS_ROUNDS"]), conns=tls_conns, rows=E["TLS_ROWS_S"].split(),
                       certificate="self-signed EC P-256 (openssl req -x509), the same for every proxy",
                       note="wrk reuses keep-alive connections: steady-state TLS record cost, not handshakes")
if h2_rows:
    meta["h2"] = dict(rounds=int(E["TLS_ROUNDS"]), conns=h2_conns, streams_per_conn=int(E["H2_STREAMS"]),
                      rows=E["H2_ROWS_S"].split(), client=f"h2load -t1 -c{h2_conns} -m{E['H2_STREAMS']}, TLS, h2 by ALPN")
before = "switchyard-before" in E["ROWS_S"].split()
print(f"\n{meta['date']}; {meta['nproc']} CPUs ({meta['cpu']}), kernel {meta['kernel']}; {E['NGINX_V']}, {E['HAPROXY_V']}")
print(f"switchyard: {E['SY_V']}" + (f"\nswitchyard-before: {E['SY_BEFORE_V']}" if before else ""))
print(f"{meta['rounds']} interleaved rounds x {dur} s; per row the median over rounds and (min-max); "
      f"proxies on CPU {E['PROXY_CPU']}, wrk/h2load + origin on CPU {E['LOAD_CPU']}; "
      f"upstream idle connections kept: {E['UPSTREAM_IDLE']} (nginx keepalive, switchyard pool), HAProxy unlimited\n")
f2 = lambda v: "-" if v is None else f"{v:.2f}"
lat = lambda v: f"{v:.3f}" if v < 1 else f"{v:.2f}"
def rng(d, k, fmt):  # "median (min-max)", or just the median with one round
    if k not in d: return "-"
    if d["rounds"] == 1: return fmt(d[k])
    return f"{fmt(d[k])} ({fmt(d[k + '_min'])}-{fmt(d[k + '_max'])})"
rps_f = lambda v: f"{v:.0f}"
def table(rows, refs, cpu_ref):  # cpu_ref: the row CPU per request and p99 are compared with
    print("| row | conns | req/s | " + " | ".join("vs " + r for r in refs) + " | p50 ms | p99 ms "
          f"| CPU user s/100k req | CPU kernel s/100k | CPU total | CPU vs {cpu_ref} | p99 vs {cpu_ref} | errors "
          "| origin conns opened |")
    print("|---|---|---|" + "---|" * len(refs) + "---|---|---|---|---|---|---|---|---|")
    cref = cpu_ref.replace("-", "_")
    for d in rows:
        print(f"| {d['row']} | {d['conns']}{'x' + str(d['streams_per_conn']) if 'streams_per_conn' in d else ''} "
              f"| {rng(d, 'rps', rps_f)} | " + " | ".join(f2(d.get('vs_' + r.replace('-', '_'))) for r in refs)
              + f" | {lat(d['p50_ms'])} | {rng(d, 'p99_ms', lat)} | {rng(d, 'user_s_per_100k', f2)} "
              f"| {rng(d, 'kernel_s_per_100k', f2)} | {f2(d.get('cpu_s_per_100k'))} | {f2(d.get('cpu_vs_' + cref))} "
              f"| {f2(d.get('p99_vs_' + cref)) if d['row'] != 'direct' else '-'} "
              f"| {d['errors']} | {d['origin_conns_opened_max']} |")
def notes(rows):
    for d in rows:
        spread = max(d["rounds_rps"]) / max(min(d["rounds_rps"]), 1) - 1
        busy = [f"round {x['round']} {x['others_cpu_pct']:.0f}%" for x in runs
                if (x["row"], x["conns"]) == (d["row"], d["conns"]) and x["others_cpu_pct"] > 3]
        if spread > 0.10 or busy:
            print(f"note: {d['row']} c={d['conns']}: rounds spread {spread:.0%} (max/min)"
                  + (f"; machine CPU used by other processes/kernel threads: {', '.join(busy)}" if busy else ""))
print("Plain HTTP/1.1, wrk -t1 -cN --latency. CPU: the proxy's process tree over the measured run; "
      "CPU total and the ratios are of medians. origin conns opened: the most connections the origin accepted"
      " during one measured run (direct: wrk's own; a proxy keeping its upstream connections: 0, or up to the"
      " requests in flight when the warm-up run ended, if it drops the upstream connections of requests cut off).\n")
table(rows, ["direct", "nginx", "haproxy"], "nginx")
notes(rows)
def before_after(rows, after, before_row):
    pairs = [(d, b) for d in rows if d["row"] == after
             for b in rows if b["row"] == before_row and b["conns"] == d["conns"]]
    if not pairs: return
    print(f"\n{after} against {before_row} (ratios of medians; below 1 is better for CPU and p99)\n")
    print("| row | conns | req/s after / before | CPU after / before | user after / before | kernel after / before | p99 after / before |")
    print("|---|---|---|---|---|---|---|")
    for d, b in pairs:
        r = lambda k: f2(d[k] / b[k]) if b.get(k) else "-"
        print(f"| {after} | {d['conns']} | {r('rps')} | {r('cpu_s_per_100k')} | {r('user_s_per_100k')} "
              f"| {r('kernel_s_per_100k')} | {r('p99_ms')} |")
if tls_rows:
    tr = int(E["TLS_ROUNDS"])
    print(f"\nTLS termination: each proxy serves the same self-signed EC P-256 certificate and forwards plain HTTP to the"
          f" same origin; wrk -c{tls_conns} over https, {tr} interleaved round{'s' * (tr != 1)} x {dur} s"
          + (f" (rounds 1-{tr} of {meta['rounds']}: TLS_ROUNDS={tr})" if tr < meta["rounds"] else "") + "."
          f" wrk keeps its connections alive ({tls_conns} handshakes per run), so this is the steady-state cost of TLS"
          " records (decrypt request, encrypt response), not of handshakes.\n")
    table(tls_rows, ["nginx-tls"], "nginx-tls")
    print("\nvs the plain direct row: " + ", ".join(f"{d['row']} {f2(d['vs_direct'])}" for d in tls_rows))
    print("negotiated (openssl s_client; protocol, cipher, cert SHA-256 prefix): "
          + "; ".join(f"{d['row']} {d['negotiated'] or '?'}" for d in tls_rows))
    print("proxy CPU busy during the runs (median, of one core): "
          + ", ".join(f"{d['row']} {d['proxy_cpu_busy_pct']:.0f}%" for d in tls_rows))
    notes(tls_rows)
if h2_rows:
    tr = int(E["TLS_ROUNDS"])
    print(f"\nHTTP/2 clients: h2load -t1 -c{h2_conns} -m{E['H2_STREAMS']} over TLS (h2 by ALPN), same listeners and"
          f" certificate as the TLS rows, HTTP/1.1 to the same origin; {tr} interleaved round{'s' * (tr != 1)} x {dur} s."
          " Latency from h2load's per-request log.\n")
    table(h2_rows, ["nginx-h2"], "nginx-h2")
    print("\nnegotiated (h2load): " + "; ".join(f"{d['row']} {d['negotiated'] or '?'}" for d in h2_rows))
    print("proxy CPU busy during the runs (median, of one core): "
          + ", ".join(f"{d['row']} {d['proxy_cpu_busy_pct']:.0f}%" for d in h2_rows))
    notes(h2_rows)
if before:
    before_after(rows, "switchyard", "switchyard-before")
    before_after(tls_rows, "switchyard-tls", "switchyard-before-tls")
    before_after(h2_rows, "switchyard-h2", "switchyard-before-h2")
if rss:
    print("\nIdle memory: a fresh proxy process per proxy and case; N client connections held idle; "
          "per conn = (RSS with N - RSS before) / N, RSS = VmRSS over the process tree."
          " keepalive: one GET done, between requests; silent: accepted, no byte sent;"
          " partial: holds 'GET / HTTP/1.1\\r\\nHo'. peak: the same from VmHWM (high-water mark, summed over the"
          " tree), the cost at the worst moment while they were opened.\n")
    cases = list(dict.fromkeys(x["case"] for x in rss))
    print("| proxy | " + " | ".join(f"{c} KiB/conn" for c in cases) + " |")
    print("|---|" + "---|" * len(cases))
    for p in dict.fromkeys(x["proxy"] for x in rss):
        cell = {x["case"]: x for x in rss if x["proxy"] == p}
        print(f"| {p} | " + " | ".join(f2(cell[c]["per_conn_kib"]) if c in cell else "-" for c in cases) + " |")
    print("\n| proxy | case | N | RSS before MiB | RSS with N MiB | per conn KiB | peak per conn KiB | after close MiB "
          "| fds added | failed | closed by proxy | still working |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for x in rss:
        print(f"| {x['proxy']} | {x['case']} | {x['opened']} | {x['before_kib']/1024:.1f} | {x['with_kib']/1024:.1f} "
              f"| {f2(x['per_conn_kib'])} | {f2(x['peak_per_conn_kib'])} | {x['after_close_kib']/1024:.1f} | {x['fds_with'] - x['fds_before']} "
              f"| {x['failed']} | {x['closed_by_proxy']} | {x['checked'] - x['check_failed']}/{x['checked']} |")
    if any(x["proxy"] == "haproxy" and x["conns"] < int(E["IDLE_CONNS"]) for x in rss):
        print(f"\nhaproxy: N capped by its maxconn ({E['HA_MAXCONN']}, from the fd limit: 2 fds per connection)")
json.dump(dict(meta=meta, rows=rows, tls_rows=tls_rows, h2_rows=h2_rows, runs=runs, rss=rss), open(E["OUT"], "w"), indent=1)
print(f"\nJSON: {E['OUT']}  ({meta['elapsed_s']} s)")
PY
