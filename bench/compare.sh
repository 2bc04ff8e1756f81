#!/usr/bin/env bash
# Side-by-side benchmark: switchyard vs nginx vs HAProxy as reverse proxies in front of ONE
# common nginx origin (fixed 200 'hello'), plus wrk straight to the origin ("direct", the 100%
# line). Each proxy: one worker, upstream keep-alive, no access log, pinned to CPU 0; wrk and
# the origin pinned to CPU 1. Rounds are interleaved (every row once per round, row order
# rotated per round); each row reports medians over rounds: req/s, p50/p99 (wrk --latency),
# proxy CPU seconds per 100k requests (utime+stime of the proxy's whole process tree from
# /proc, kernel part in parentheses), ratios to direct/nginx/HAProxy, errors (wrk socket
# errors + non-2xx/3xx, summed over rounds) and every round's req/s; notes flag rows whose
# rounds spread > 10% or whose runs lost CPU to other processes (this box may be shared). Then
# RSS (VmRSS summed over the process tree) of each proxy before and with 10k idle keep-alive
# client connections (each did one complete GET first), on the same, warmed-up processes.
# TLS termination (TLS=0 skips it): rows switchyard-tls and nginx-tls (+ haproxy-tls with
# TLS_HAPROXY=1), separate proxy processes set up like the plain ones but with a listener
# serving one certificate made at run time (openssl, EC P-256, self-signed, the SAME cert/key
# for every proxy) in front of the same plain-HTTP origin; wrk -c64 over https, run in the same
# interleaved rounds (after the plain rows of each round, order rotated), printed as a second
# table with ratios to nginx-tls and to the plain direct row. wrk keeps its connections alive,
# so this measures steady-state TLS record cost (encrypt/decrypt per request), not handshakes.
#
#   bench/compare.sh                                  # ROUNDS=3 CONNS="64 256" DURATION=8
#   ROUNDS=5 CONNS="128" DURATION=10 OUT=/tmp/c.json bench/compare.sh
#   IDLE_CONNS=10000 (0 skips the RSS phase)  PROXY_CPU=0 LOAD_CPU=1
#   TLS=1 TLS_ROUNDS=$ROUNDS (<= ROUNDS: the TLS rows run in rounds 1..TLS_ROUNDS) TLS_HAPROXY=0
#
# Runs as root: apt-get installs wrk/nginx/haproxy/openssl if missing; ulimit -n is raised (to
# 65536 or the hard limit); builds switchyard (cargo build --release). Prints Markdown, writes
# JSON to $OUT (default bench/results/compare-<date>.json). Uses ports 18950-18956 (checked free
# first). Everything it starts it stops by PID on exit, Ctrl-C included. ~5 minutes with
# defaults (the TLS rows ~1 of them; TLS_HAPROXY=1 adds ~30 s), plus the build.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3} CONNS=${CONNS:-64 256} DURATION=${DURATION:-8} IDLE_CONNS=${IDLE_CONNS:-10000}
PROXY_CPU=${PROXY_CPU:-0} LOAD_CPU=${LOAD_CPU:-1}
TLS=${TLS:-1} TLS_ROUNDS=${TLS_ROUNDS:-$ROUNDS} TLS_HAPROXY=${TLS_HAPROXY:-0} TLS_CONNS=64
OUT=${OUT:-bench/results/compare-$(date +%F).json}
declare -A PORT=([direct]=18950 [switchyard]=18951 [nginx]=18952 [haproxy]=18953
  [switchyard-tls]=18954 [nginx-tls]=18955 [haproxy-tls]=18956) PID=()
ROWS=(direct switchyard nginx haproxy) TLS_ROWS=()
if [[ $TLS != 0 ]]; then
  TLS_ROWS=(switchyard-tls nginx-tls)
  [[ $TLS_HAPROXY == 0 ]] || TLS_ROWS+=(haproxy-tls)
  ((TLS_ROUNDS <= ROUNDS)) || TLS_ROUNDS=$ROUNDS
fi
url() { if [[ $1 == *-tls ]]; then echo "https://127.0.0.1:${PORT[$1]}/"; else echo "http://127.0.0.1:${PORT[$1]}/"; fi; }
started=$(date +%s) HZ=$(getconf CLK_TCK)

work=$(mktemp -d)
pids=() wrk_pid=
alive() { [[ -r /proc/$1/stat && $(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) != Z ]]; }
cleanup() { # TERM, up to 5 s to exit, then KILL
  local p i
  for p in "${pids[@]}" $wrk_pid; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for ((i = 0; i < 50; i++)); do if alive "$p"; then sleep 0.1; else break; fi; done
    kill -9 "$p" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT; trap 'exit 130' INT; trap 'exit 143' TERM

# --- tools, limits, ports, build ---------------------------------------------------------
pkgs=()
for t in wrk nginx haproxy python3 curl; do command -v "$t" >/dev/null || pkgs+=("$t"); done
command -v taskset >/dev/null || pkgs+=(util-linux)
((${#TLS_ROWS[@]} == 0)) || command -v openssl >/dev/null || pkgs+=(openssl)
if ((${#pkgs[@]})); then
  echo "installing ${pkgs[*]}" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >&2
fi
NOFILE=65536 hard=$(ulimit -Hn) # raising the hard limit needs CAP_SYS_RESOURCE: else use it
[[ $hard == unlimited ]] || ((hard >= NOFILE)) || NOFILE=$hard
ulimit -n "$NOFILE"
# HAProxy insists on 2 fds per connection: its maxconn (and its idle-connection count) is capped
HA_MAXCONN=$((NOFILE >= 40200 ? 20000 : (NOFILE - 100) / 2))
((IDLE_CONNS + 200 <= NOFILE)) || { echo "IDLE_CONNS=$IDLE_CONNS needs ulimit -n > $NOFILE" >&2; exit 1; }
for row in "${ROWS[@]}" "${TLS_ROWS[@]}"; do
  [[ -z $(ss -Hltn "sport = :${PORT[$row]}") ]] || { echo "port ${PORT[$row]} is in use" >&2; exit 1; }
done
cargo build --release -q


# --- origin and peers (configs generated into $work) ---------------------------------------
nginx_conf() { # $1 name, $2 extra http-block contents
  cat > "$work/$1.conf" <<CONF
worker_processes 1; daemon off; pid $work/$1.pid; error_log $work/$1.err error;
worker_rlimit_nofile $NOFILE;
events { worker_connections 20000; }
http { access_log off; keepalive_requests 100000000; keepalive_timeout 120s; $2 }
CONF
}
nginx_conf origin "server { listen 127.0.0.1:${PORT[direct]}; location / { return 200 'hello'; } }"
nginx_proxy() { # $1 name, $2 listen parameters (port and flags), $3 extra server-block contents
  nginx_conf "$1" "upstream origin { server 127.0.0.1:${PORT[direct]}; keepalive 64; keepalive_requests 100000000; }
  server { listen 127.0.0.1:$2; ${3:-}
    location / { proxy_pass http://origin; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
}
nginx_proxy nginx "${PORT[nginx]}"
haproxy_cfg() { # $1 name, $2 bind line contents
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
  timeout client 120s
  timeout server 120s
  timeout http-keep-alive 120s
frontend fe
  bind $2
  default_backend origin
backend origin
  server origin 127.0.0.1:${PORT[direct]}
CONF
}
haproxy_cfg haproxy "127.0.0.1:${PORT[haproxy]}"

taskset -c "$LOAD_CPU" nginx -p "$work" -e "$work/origin.err" -c "$work/origin.conf" & pids+=($!)
taskset -c "$PROXY_CPU" ./target/release/switchyard -l "127.0.0.1:${PORT[switchyard]}" \
  -b "127.0.0.1:${PORT[direct]}" -w 1 --mode thread --log-level error & PID[switchyard]=$!
taskset -c "$PROXY_CPU" nginx -p "$work" -e "$work/nginx.err" -c "$work/nginx.conf" & PID[nginx]=$!
taskset -c "$PROXY_CPU" haproxy -db -f "$work/haproxy.cfg" & PID[haproxy]=$!
pids+=("${PID[switchyard]}" "${PID[nginx]}" "${PID[haproxy]}")

# TLS termination: one certificate for all; each proxy terminates TLS, origin stays plain HTTP
if ((${#TLS_ROWS[@]})); then
  (cd "$work" && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
    -subj /CN=localhost -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout key.pem -out cert.pem) > "$work/openssl.log" 2>&1 ||
    { echo "openssl req failed:" >&2; cat "$work/openssl.log" >&2; exit 1; }
  cat > "$work/switchyard-tls.yaml" <<CONF
listen:
  address: 127.0.0.1:${PORT[switchyard-tls]}
  tls:
    certificates:
      - {cert: $work/cert.pem, key: $work/key.pem}
workers: 1
mode: thread
backends:
  - 127.0.0.1:${PORT[direct]}
health: {probes: false}
CONF
  # ssl_protocols: nginx 1.22's default leaves out TLSv1.3, which switchyard and HAProxy negotiate
  nginx_proxy nginx-tls "${PORT[nginx-tls]} ssl" "ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem; ssl_session_cache shared:SSL:10m;
    ssl_protocols TLSv1.2 TLSv1.3;"
  taskset -c "$PROXY_CPU" ./target/release/switchyard -c "$work/switchyard-tls.yaml" --log-level error &
  PID[switchyard-tls]=$!
  taskset -c "$PROXY_CPU" nginx -p "$work" -e "$work/nginx-tls.err" -c "$work/nginx-tls.conf" & PID[nginx-tls]=$!
  pids+=("${PID[switchyard-tls]}" "${PID[nginx-tls]}")
  if [[ $TLS_HAPROXY != 0 ]]; then
    cat "$work/cert.pem" "$work/key.pem" > "$work/combined.pem"
    haproxy_cfg haproxy-tls "127.0.0.1:${PORT[haproxy-tls]} ssl crt $work/combined.pem"
    taskset -c "$PROXY_CPU" haproxy -db -f "$work/haproxy-tls.cfg" & PID[haproxy-tls]=$!
    pids+=("${PID[haproxy-tls]}")
  fi
fi
for row in "${ROWS[@]}" "${TLS_ROWS[@]}"; do
  for i in $(seq 100); do
    curl -fs --cacert "$work/cert.pem" -o /dev/null "$(url "$row")" && break
    ((i < 100)) || { echo "$row did not answer on ${PORT[$row]}" >&2; cat "$work"/*.err >&2 || true; exit 1; }
    sleep 0.05
  done
done
# what a TLS client negotiates with each (openssl s_client, OpenSSL like wrk), and that every
# proxy serves the same certificate
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
wrk_run() { # $1 URL, $2 conns, $3 seconds, $4 output file. Backgrounded + wait: wrk catches
  # SIGINT itself, and bash runs the INT trap while in `wait`, not after a foreground child that did.
  taskset -c "$LOAD_CPU" wrk -t1 -c"$2" -d"$3s" --latency "$1" > "$4" 2>&1 &
  wrk_pid=$!
  wait "$wrk_pid" || true
}
snap() { # S=(proxy utime, proxy stime, others): others = the machine's busy ticks (user, nice,
  # system, irq, softirq) minus the proxy's, the origin's and this shell's children's (wrk):
  # ~0 on a quiet box, so it flags rounds disturbed by other jobs (ksoftirqd counts as other).
  # Not to be called in a subshell: `times` must see this shell's children.
  local p o k b
  times > "$work/times"
  read -ra p <<<"$(ticks "$1")"; read -ra o <<<"$(ticks "${pids[0]}")"
  k=$(awk -v hz="$HZ" 'NR == 2 { split($1, u, /[ms]/); split($2, s, /[ms]/)
    print int((u[1] * 60 + u[2] + s[1] * 60 + s[2]) * hz + 0.5) }' "$work/times")
  b=$(awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 }' /proc/stat)
  S=("${p[0]}" "${p[1]}" $((b - o[0] - o[1] - k - p[0] - p[1])))
}
# wrk output -> "rps p50_ms p99_ms errors requests"
parse_wrk() {
  awk 'function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; return v * 1000 }
    /requests in/ { n = $1 } /Requests\/sec/ { rps = $2 }
    $1 == "50%" { p50 = ms($2) } $1 == "99%" { p99 = ms($2) }
    /Socket errors/ { err += $4 + $6 + $8 + $10 } /Non-2xx/ { err += $NF }
    END { printf "%s %s %s %d %d\n", rps + 0, p50 + 0, p99 + 0, err, n }'
}
measure() { # $1 row, $2 conns, $3 round -> one TSV line in runs.tsv
  local row=$1 c=$2 r=$3 pid=${PID[$1]:-} out=$work/wrk.out t0 res
  wrk_run "$(url "$row")" "$c" 1 "$out" # warm-up burst
  snap "$pid"; t0=("${S[@]}")
  wrk_run "$(url "$row")" "$c" "$DURATION" "$out"
  snap "$pid"
  res=$(parse_wrk < "$out")
  [[ $res != 0\ * ]] || { echo "wrk failed for $row c=$c:" >&2; cat "$out" >&2; }
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$row" "$c" "$r" "${res// /$'\t'}" \
    "$((S[0] - t0[0]))" "$((S[1] - t0[1]))" "$((S[2] - t0[2]))" >> "$work/runs.tsv"
  printf 'round %s/%s c=%-4s %-14s %s req/s\n' "$r" "$ROUNDS" "$c" "$row" "${res%% *}" >&2
}

# --- load runs, interleaved -----------------------------------------------------------------
for ((r = 1; r <= ROUNDS; r++)); do
  for c in $CONNS; do
    for ((i = 0; i < ${#ROWS[@]}; i++)); do measure "${ROWS[(i + r - 1) % ${#ROWS[@]}]}" "$c" "$r"; done
  done
  if ((r <= TLS_ROUNDS)); then
    for ((i = 0; i < ${#TLS_ROWS[@]}; i++)); do
      measure "${TLS_ROWS[(i + r - 1) % ${#TLS_ROWS[@]}]}" "$TLS_CONNS" "$r"
    done
  fi
done

# --- RSS with idle keep-alive client connections --------------------------------------------
cat > "$work/idle.py" <<'PY'
import json, re, select, socket, sys, time
port, n, pids = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
def rss_kib():
    return sum(int(l.split()[1]) for p in pids for l in open(f"/proc/{p}/status") if l.startswith("VmRSS:"))
def get(s):  # one complete request/response on s; True if 200
    s.sendall(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
    buf = b""
    while chunk := s.recv(65536):
        buf += chunk
        head, sep, body = buf.partition(b"\r\n\r\n")
        m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        if sep and (len(body) >= int(m.group(1)) if m else body.endswith(b"0\r\n\r\n")):
            return head.startswith(b"HTTP/1.1 200")
    return False
before, socks, bad = rss_kib(), [], 0
for _ in range(n):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5); socks.append(s)
        bad += not get(s)
    except OSError:
        bad += 1
time.sleep(2)
with_conns = rss_kib()
poll = select.poll()
for s in socks: poll.register(s, select.POLLIN)
closed = len(poll.poll(0))  # readable while idle = closed by the proxy
for s in socks: s.close()
time.sleep(1)
print(json.dumps(dict(port=port, conns=n, failed=bad, closed_by_proxy=closed,
                      before_kib=before, with_kib=with_conns, after_close_kib=rss_kib())))
PY
: > "$work/rss.jsonl"
if ((IDLE_CONNS > 0)); then
  for row in switchyard nginx haproxy; do
    n=$IDLE_CONNS
    [[ $row != haproxy ]] || ((n <= HA_MAXCONN - 100)) || n=$((HA_MAXCONN - 100))
    mapfile -t tree < <(ptree "${PID[$row]}")
    echo "RSS: $n idle connections to $row" >&2
    taskset -c "$LOAD_CPU" python3 "$work/idle.py" "${PORT[$row]}" "$n" "${tree[@]}" |
      sed "s/^{/{\"proxy\": \"$row\", /" >> "$work/rss.jsonl"
  done
fi

# --- report ---------------------------------------------------------------------------------
mkdir -p "$(dirname "$OUT")"
KERNEL=$(uname -r) NPROC=$(nproc) SECS=$(($(date +%s) - started))
CPU_MODEL=$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)
NGINX_V=$(nginx -v 2>&1) HAPROXY_V=$(haproxy -v | sed -n 1p) WRK_V=$(wrk -v 2>&1 | sed -n 1p || true)
SY_V=$(git describe --always --dirty 2>/dev/null || echo unknown)
TLS_ROWS_S=${TLS_ROWS[*]}
export OUT ROUNDS DURATION CONNS PROXY_CPU LOAD_CPU KERNEL NPROC HZ SECS CPU_MODEL NGINX_V HAPROXY_V WRK_V SY_V
export TLS_ROWS_S TLS_ROUNDS TLS_CONNS
python3 - "$work/runs.tsv" "$work/rss.jsonl" "$work/tls_info.tsv" <<'PY'
import json, os, statistics as st, sys, time
E = os.environ
runs = []
for line in open(sys.argv[1]):
    row, c, r, rps, p50, p99, err, n, ut, stt, oth = line.rstrip("\n").split("\t")
    runs.append(dict(row=row, conns=int(c), round=int(r), rps=float(rps), p50_ms=float(p50),
                     p99_ms=float(p99), errors=int(err), requests=int(n), utime_ticks=int(ut), stime_ticks=int(stt),
                     others_cpu_pct=round(100 * int(oth) / int(E["HZ"]) / int(E["DURATION"]) / int(E["NPROC"]), 1)))
rss = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
hz = int(E["HZ"])
def per100k(ticks, n): return ticks / hz / n * 1e5 if n else float("nan")
def summary(name, c):  # medians over rounds of one row at c connections (None: no runs)
    rs = sorted((x for x in runs if x["row"] == name and x["conns"] == c), key=lambda x: x["round"])
    if not rs: return None
    med = lambda k: st.median(k(x) for x in rs)
    d = dict(row=name, conns=c, rps=med(lambda x: x["rps"]), p50_ms=med(lambda x: x["p50_ms"]),
             p99_ms=med(lambda x: x["p99_ms"]), errors=sum(x["errors"] for x in rs),
             rounds_rps=[round(x["rps"]) for x in rs])
    if name != "direct":
        d["cpu_s_per_100k"] = med(lambda x: per100k(x["utime_ticks"] + x["stime_ticks"], x["requests"]))
        d["kernel_s_per_100k"] = med(lambda x: per100k(x["stime_ticks"], x["requests"]))
        d["proxy_cpu_busy_pct"] = med(lambda x: 100 * (x["utime_ticks"] + x["stime_ticks"]) / hz / int(E["DURATION"]))
    return d
rows = [d for c in [int(x) for x in E["CONNS"].split()]
        for d in (summary(n, c) for n in ["direct", "switchyard", "nginx", "haproxy"]) if d]
for d in rows:
    base = {x["row"]: x["rps"] for x in rows if x["conns"] == d["conns"]}
    for ref in ["direct", "nginx", "haproxy"]:
        d["vs_" + ref] = d["rps"] / base[ref] if base.get(ref) else None
tls_conns = int(E["TLS_CONNS"])
tls_rows = [d for d in (summary(n, tls_conns) for n in E["TLS_ROWS_S"].split()) if d]
tls_info = dict(l.rstrip("\n").split("\t", 1) for l in open(sys.argv[3]) if l.strip())
direct_rps = next((x["rps"] for x in rows if (x["row"], x["conns"]) == ("direct", tls_conns)), None)
nginx_tls_rps = next((x["rps"] for x in tls_rows if x["row"] == "nginx-tls"), None)
for d in tls_rows:
    d["vs_direct"] = d["rps"] / direct_rps if direct_rps else None
    d["vs_nginx_tls"] = d["rps"] / nginx_tls_rps if nginx_tls_rps else None
    d["negotiated"] = tls_info.get(d["row"])
meta = dict(date=time.strftime("%Y-%m-%d %H:%M:%S %z"), nproc=int(E["NPROC"]), kernel=E["KERNEL"],
            cpu=E["CPU_MODEL"], versions=dict(switchyard=E["SY_V"], nginx=E["NGINX_V"], haproxy=E["HAPROXY_V"], wrk=E["WRK_V"]),
            rounds=int(E["ROUNDS"]), duration_s=int(E["DURATION"]), conns=E["CONNS"], elapsed_s=int(E["SECS"]))
if tls_rows:
    meta["tls"] = dict(rounds=int(E["TLS_ROUNDS"]), conns=tls_conns, rows=E["TLS_ROWS_S"].split(),
                       certificate="self-signed EC P-256 (openssl req -x509), the same for every proxy",
                       note="wrk reuses keep-alive connections: steady-state TLS record cost, not handshakes")
print(f"\n{meta['date']}; {meta['nproc']} CPUs ({meta['cpu']}), kernel {meta['kernel']}; switchyard {meta['versions']['switchyard']},"
      f" {meta['versions']['nginx']}, {meta['versions']['haproxy']}")
print(f"{meta['rounds']} interleaved rounds x {meta['duration_s']} s, medians; proxies on CPU {E['PROXY_CPU']}, wrk + origin on CPU {E['LOAD_CPU']}\n")
print("| row | conns | req/s (median) | vs direct | vs nginx | vs haproxy | p50 ms | p99 ms "
      "| proxy CPU s / 100k req (of it kernel) | errors | rounds req/s |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
f2 = lambda v: "-" if v is None else f"{v:.2f}"
lat = lambda v: f"{v:.3f}" if v < 1 else f"{v:.2f}"
for d in rows:
    cpu = f"{d['cpu_s_per_100k']:.2f} ({d['kernel_s_per_100k']:.2f})" if "cpu_s_per_100k" in d else "-"
    print(f"| {d['row']} | {d['conns']} | {d['rps']:.0f} | {f2(d['vs_direct'])} | {f2(d['vs_nginx'])} | {f2(d['vs_haproxy'])} "
          f"| {lat(d['p50_ms'])} | {lat(d['p99_ms'])} | {cpu} | {d['errors']} | {d['rounds_rps']} |")
def notes(rows):
    for d in rows:
        spread = max(d["rounds_rps"]) / max(min(d["rounds_rps"]), 1) - 1
        busy = [f"round {x['round']} {x['others_cpu_pct']:.0f}%" for x in runs
                if (x["row"], x["conns"]) == (d["row"], d["conns"]) and x["others_cpu_pct"] > 3]
        if spread > 0.10 or busy:
            print(f"note: {d['row']} c={d['conns']}: rounds spread {spread:.0%} (max/min)"
                  + (f"; machine CPU used by other processes/kernel threads: {', '.join(busy)}" if busy else ""))
notes(rows)
if tls_rows:
    tr = int(E["TLS_ROUNDS"])
    print(f"\nTLS termination: each proxy serves the same self-signed EC P-256 certificate and forwards plain HTTP to the"
          f" same origin; wrk -c{tls_conns} over https, {tr} interleaved round{'s' * (tr != 1)} x {meta['duration_s']} s"
          + (f" (rounds 1-{tr} of {meta['rounds']}: TLS_ROUNDS={tr})" if tr < meta["rounds"] else "") + ", medians."
          f" wrk keeps its connections alive ({tls_conns} handshakes per run), so this is the steady-state cost of TLS"
          " records (decrypt request, encrypt response), not of handshakes. vs direct: the plain-HTTP direct row.\n")
    print("| row | conns | req/s (median) | vs direct | vs nginx-tls | p50 ms | p99 ms "
          "| proxy CPU s / 100k req (of it kernel) | errors | rounds req/s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for d in tls_rows:
        print(f"| {d['row']} | {d['conns']} | {d['rps']:.0f} | {f2(d['vs_direct'])} | {f2(d['vs_nginx_tls'])} "
              f"| {lat(d['p50_ms'])} | {lat(d['p99_ms'])} | {d['cpu_s_per_100k']:.2f} ({d['kernel_s_per_100k']:.2f}) "
              f"| {d['errors']} | {d['rounds_rps']} |")
    print("\nnegotiated (openssl s_client; protocol, cipher, cert SHA-256 prefix): "
          + "; ".join(f"{d['row']} {d['negotiated'] or '?'}" for d in tls_rows))
    print("proxy CPU busy during the runs (median, of one core): "
          + ", ".join(f"{d['row']} {d['proxy_cpu_busy_pct']:.0f}%" for d in tls_rows))
    notes(tls_rows)
if rss:
    print("\nRSS (VmRSS over the process tree) with N idle keep-alive client connections, after the load runs\n")
    print("| proxy | N | RSS before MiB | RSS with N MiB | per conn KiB | after close MiB | failed | closed by proxy |")
    print("|---|---|---|---|---|---|---|---|")
    for x in rss:
        print(f"| {x['proxy']} | {x['conns']} | {x['before_kib']/1024:.1f} | {x['with_kib']/1024:.1f} | {(x['with_kib']-x['before_kib'])/x['conns']:.2f} "
              f"| {x['after_close_kib']/1024:.1f} | {x['failed']} | {x['closed_by_proxy']} |")
json.dump(dict(meta=meta, rows=rows, tls_rows=tls_rows, runs=runs, rss=rss), open(E["OUT"], "w"), indent=1)
print(f"\nJSON: {E['OUT']}  ({meta['elapsed_s']} s)")
PY
