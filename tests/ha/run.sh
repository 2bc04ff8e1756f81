#!/usr/bin/env bash
# An HA pair of switchyard instances under keepalived (VRRP), in network namespaces.
#
#   sudo tests/ha/run.sh                      # builds target/release/switchyard
#   SWITCHYARD_BIN=/path/to/switchyard tests/ha/run.sh
#
# Needs root, `ip netns`, Debian's keepalived and curl. Every address lives inside the
# namespaces created here (10.213.0.0/24); nothing touches the host's interfaces. All of
# it (processes, namespaces, links) is removed on exit, also on failure or Ctrl-C.
#
#   ns "sw": bridge br0 with a veth to each of the others
#   ns "a":  10.213.0.11, switchyard (sticky :8080, consistent-hash :8081) + keepalived
#   ns "b":  10.213.0.12, the same, lower priority
#   ns "be": 10.213.0.21-23, three echo backends be-1..be-3
#   ns "c":  10.213.0.2, the client; the VIP is 10.213.0.100
#
# keepalived runs examples/keepalived/keepalived-lb{1,2}.conf as shipped, addresses
# rewritten from 10.0.0.x, plus a notify script that logs state changes with a time.
# Their vrrp_script checks the sticky service's /healthz (admin 127.0.0.1:9090).
# Load: 4 curl loops in "c" on http://VIP:8080/, a new connection per request, 0.5 s to
# connect, 1 s in all; a request fails when it gets no 200 in that time.
#
# Checks (any failure exits 1, after the summary; a setup problem exits 2):
#   1. both instances pick the same backend for the same sticky cookie and the same
#      consistent-hash key (asked directly at 10.213.0.11 and .12, and through the VIP);
#      binding the VIP itself needs net.ipv4.ip_nonlocal_bind on the backup;
#   2. phase 1: SIGKILL switchyard on the master (a) under load: its vrrp_script fails,
#      the VIP moves to b; reports failed requests and the failover time; the cookies and
#      keys still go to the same backends through the VIP;
#   3. phase 2: switchyard on a is back (a stays BACKUP: nopreempt); SIGKILL keepalived
#      on b under load: a takes over after the VRRP master-down timer; reports when a
#      answers its first request, failed requests, and that b keeps a stale VIP until its
#      keepalived starts again (which this checks it removes);
#   4. phase 3: a planned switch-over: SIGTERM keepalived on a, the master again; b takes
#      over after its skew time.
# HA_KEEP_LOGS=1 keeps the logs (kept anyway when something fails).
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$PWD

# ---------------------------------------------------------------------------- setup
die() { echo "ha: $*" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || die "needs root (network namespaces, keepalived)"
KEEPALIVED=$(command -v keepalived || echo /usr/sbin/keepalived)
[[ -x $KEEPALIVED ]] || die "keepalived not found (apt-get install keepalived)"
command -v curl >/dev/null || die "curl not found"
command -v ip >/dev/null || die "ip (iproute2) not found"

if [[ -n ${SWITCHYARD_BIN:-} ]]; then
  BIN=$SWITCHYARD_BIN
else
  echo "ha: building target/release/switchyard (set SWITCHYARD_BIN to use another binary)"
  cargo build --release --locked
  BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/switchyard
fi
[[ -x $BIN ]] || die "no switchyard binary at $BIN"
BIN=$(realpath "$BIN")
SECONDS=0 # the summary gives the test's own time, not the build's

# Unique per run, so two runs on one machine do not share namespace names.
TAG=syha$$
NS_SW=$TAG-sw NS_A=$TAG-a NS_B=$TAG-b NS_BE=$TAG-be NS_C=$TAG-c
NSS=("$NS_SW" "$NS_A" "$NS_B" "$NS_BE" "$NS_C")
NET=10.213.0
VIP=$NET.100
IP_A=$NET.11 IP_B=$NET.12 IP_C=$NET.2
BACKENDS=("$NET.21:8080" "$NET.22:8080" "$NET.23:8080")
WORK=$(mktemp -d /tmp/syha.XXXXXX)   # 0700, root's: keepalived's script security accepts it
chmod 0700 "$WORK"
KA_DEAD=       # nodes whose keepalived was killed
KEEP_WORK=${HA_KEEP_LOGS:-0}  # HA_KEEP_LOGS=1 keeps the logs of a passing run too

cleanup() {
  local rc=$?
  set +e
  # Every process this script started lives in one of its namespaces (the client loops
  # too), so killing what is inside them stops exactly those, by pid.
  local ns p
  for ns in "${NSS[@]}"; do
    [[ -e /run/netns/$ns ]] || continue
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null; done
  done
  # Deleting a namespace deletes its links (the veth pairs and the bridge).
  for ns in "${NSS[@]}"; do
    [[ -e /run/netns/$ns ]] && ip netns del "$ns"
  done
  if ((rc != 0 || KEEP_WORK)); then
    echo "ha: logs kept in $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { echo "$EPOCHREALTIME"; }
# ms between two EPOCHREALTIME stamps
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", (b - a) * 1000 }'; }

# Polls COMMAND every 50 ms for at most SECONDS; returns 1 when it never succeeded.
wait_for() {
  local secs=$1; shift
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < end)) || return 1
    sleep 0.05
  done
}

# Starts a command in namespace NS as its own process group (setsid: the kills below
# take a master with its workers, keepalived with its VRRP child); logs to WORK/NAME.log,
# the pid (= process group id) to WORK/NAME.pid.
spawn() {
  local ns=$1 name=$2; shift 2
  setsid ip netns exec "$ns" "$@" >"$WORK/$name.log" 2>&1 </dev/null &
  local pid=$!
  disown "$pid" # no "Killed" job notices when cleanup kills it
  echo "$pid" >"$WORK/$name.pid"
}
pid_of() { cat "$WORK/$1.pid"; }

FAILED=()
within() { [[ $1 -ge 0 && $1 -le $2 ]]; } # within MS LIMIT: 0 <= MS <= LIMIT
check() { # check "what" command...
  local what=$1; shift
  if "$@"; then echo "  ok    $what"; else echo "  FAIL  $what"; FAILED+=("$what"); fi
}

# ------------------------------------------------------------------------- network
echo "ha: namespaces $TAG-{sw,a,b,be,c}, net $NET.0/24, VIP $VIP; logs in $WORK"
for ns in "${NSS[@]}"; do
  ip netns add "$ns"
  ip -n "$ns" link set lo up
done
ip -n "$NS_SW" link add br0 type bridge
ip -n "$NS_SW" link set br0 up
# veth pairs are created inside the switch namespace, so no name is ever on the host.
link() { # link NS PORTNAME ADDR...
  local ns=$1 port=$2; shift 2
  ip -n "$NS_SW" link add "$port" type veth peer name eth0 netns "$ns"
  ip -n "$NS_SW" link set "$port" master br0 up
  for a in "$@"; do ip -n "$ns" addr add "$a/24" dev eth0; done
  ip -n "$ns" link set eth0 up
}
link "$NS_A" to-a "$IP_A"
link "$NS_B" to-b "$IP_B"
link "$NS_BE" to-be "$NET.21" "$NET.22" "$NET.23"
link "$NS_C" to-c "$IP_C"

# ------------------------------------------------------------------------ backends
for i in 1 2 3; do
  spawn "$NS_BE" "be-$i" "$BIN" backend --listen "${BACKENDS[i - 1]}" --name "be-$i"
done

# ---------------------------------------------------------------------- switchyard
# Two services per node: sticky on :8080 (admin :9090), consistent hash on :8081 (admin
# :9091). Both bind 0.0.0.0, so the VIP needs no ip_nonlocal_bind. Node b lists the
# backends in the opposite order: picks must not depend on it.
write_configs() { # node, backends...
  local node=$1; shift
  local list
  list=$(printf '  - %s\n' "$@")
  for svc in sticky hash; do
    local port=8080 admin=9090 strategy=sticky extra="sticky: {cookie: SWITCHYARD_BACKEND}"
    if [[ $svc == hash ]]; then
      port=8081 admin=9091 strategy=consistent-hash
      extra="hash: {key: 'header:X-User', load_factor: 0}"
    fi
    cat >"$WORK/$node-$svc.yaml" <<EOF
listen: 0.0.0.0:$port
admin: 127.0.0.1:$admin
workers: 1
mode: process
strategy: $strategy
$extra
health: {path: /healthz, interval: 1s, timeout: 500ms}
backends:
$list
EOF
    "$BIN" check -c "$WORK/$node-$svc.yaml" >/dev/null
  done
}
write_configs a "${BACKENDS[@]}"
write_configs b "${BACKENDS[2]}" "${BACKENDS[1]}" "${BACKENDS[0]}"

start_switchyard() { # node ns
  for svc in sticky hash; do
    spawn "$2" "sy-$1-$svc" "$BIN" -c "$WORK/$1-$svc.yaml"
  done
}
# Both admin /healthz answer 200 and /backends shows all three backends up.
all_up() { # ns admin-port
  local j
  j=$(ip netns exec "$1" curl -sf -m 1 "http://127.0.0.1:$2/backends") || return 1
  [[ $(grep -o '"up":true' <<<"$j" | wc -l) -eq 3 ]]
}
wait_switchyard() { # node ns
  for adm in 9090 9091; do
    wait_for 15 all_up "$2" "$adm" || { KEEP_WORK=1; die "switchyard on $1 (admin :$adm) not serving with 3 backends up"; }
  done
}
start_switchyard a "$NS_A"
start_switchyard b "$NS_B"
wait_switchyard a "$NS_A"
wait_switchyard b "$NS_B"

# ----------------------------------------------------------------------- keepalived
# examples/keepalived/ as shipped (unicast peers, both BACKUP + nopreempt, a vrrp_script
# on /healthz with no weight, so a failure is FAULT, which gives the VIP up at once with
# a priority-0 advert), with the addresses moved to 10.213.0.0/24 and a notify script
# added that logs each state change with a time.
cat >"$WORK/notify.sh" <<'EOF'
#!/bin/bash
# notify TYPE NAME STATE PRIORITY
echo "$EPOCHREALTIME $3" >>"$(dirname "$0")/state-$NODE"
EOF
chmod 0755 "$WORK/notify.sh"
for node in a b; do
  example=examples/keepalived/keepalived-lb1.conf
  [[ $node == b ]] && example=examples/keepalived/keepalived-lb2.conf
  sed -e 's/10\.0\.0\./10.213.0./g' \
    -e "/^ *track_script {/i\\  notify \"/usr/bin/env NODE=$node $WORK/notify.sh\" root" \
    "$example" >"$WORK/keepalived-$node.conf"
  grep -q "notify.*$WORK/notify.sh" "$WORK/keepalived-$node.conf" || die "could not add notify to keepalived-$node.conf"
  # keepalived 2.2.7's config test ends with SIGTERM to itself (exit 143) whenever a
  # vrrp_script is set, good config or not; a bad one prints why and exits 4-6 first.
  rc=0
  # (The braces send bash's "Terminated" notice to the file too.)
  { "$KEEPALIVED" -t -f "$WORK/keepalived-$node.conf"; } >"$WORK/keepalived-$node.check" 2>&1 || rc=$?
  if [[ ($rc -ne 0 && $rc -ne 143) ]] || grep -qv '^Terminated$' "$WORK/keepalived-$node.check"; then
    cat "$WORK/keepalived-$node.check"
    die "keepalived -t refuses keepalived-$node.conf (from $example): exit $rc"
  fi
done

start_keepalived() { # node ns
  : >>"$WORK/state-$1"
  # -n: stay in the foreground (its pid is the group we kill); -R: a killed VRRP child
  # is not respawned; -G -l: log to the console (our log file), not syslog.
  spawn "$2" "keepalived-$1" "$KEEPALIVED" -n -R -G -l -D -P \
    -f "$WORK/keepalived-$1.conf" -p "$WORK/ka-$1.pid" -r "$WORK/ka-vrrp-$1.pid"
}
state_of() { tail -n 1 "$WORK/state-$1" 2>/dev/null | awk '{print $2}'; }
is_state() { [[ $(state_of "$1") == "$2" ]]; }
has_vip() { ip -n "$1" -4 addr show dev eth0 | grep -q "inet $VIP/"; }
no_vip() { ! has_vip "$1"; }
show_addrs() {
  local n
  for n in a b; do
    local ns=$NS_A
    [[ $n == b ]] && ns=$NS_B
    local st
    st=$(state_of "$n")
    [[ " $KA_DEAD " == *" $n "* ]] && st="keepalived not running; its last state: $st"
    printf '    %s (%s): %s\n' "$n" "$st" \
      "$(ip -n "$ns" -4 -o addr show dev eth0 | awk '{printf "%s ", $4}')"
  done
}

# a first: it starts BACKUP and takes the VIP after the master-down timer (~3.4 s); then
# b, which hears a's adverts and stays BACKUP. (Started together, a wins only by its
# shorter skew, 0.2 s: on a busy machine b could come up first and, with nopreempt, keep
# the VIP.)
start_keepalived a "$NS_A"
if ! wait_for 15 is_state a MASTER || ! wait_for 5 has_vip "$NS_A"; then
  tail -n 20 "$WORK/keepalived-a.log"
  die "a never became MASTER with the VIP"
fi
start_keepalived b "$NS_B"
wait_for 10 is_state b BACKUP || die "b is not BACKUP"
echo "ha: a is MASTER with the VIP:"
show_addrs

# -------------------------------------------------------------- picks on both nodes
# The client namespace asks; HOST is an address (a, b or the VIP).
# Both print nothing when there is no answer; the checks then fail with what they got.
backend_of() { # host:port curl-args... -> the X-Backend of the answer
  { ip netns exec "$NS_C" curl -s -m 2 -D - -o /dev/null "${@:2}" "http://$1/" || true; } |
    tr -d '\r' | awk -F': ' 'tolower($1) == "x-backend" { print $2 }'
}
cookie_of() { # host:port -> SWITCHYARD_BACKEND=VALUE set by the answer
  { ip netns exec "$NS_C" curl -s -m 2 -D - -o /dev/null "http://$1/" || true; } |
    tr -d '\r' | sed -n 's/^[Ss]et-[Cc]ookie: *\(SWITCHYARD_BACKEND=[^;]*\).*/\1/p'
}

# Three cookies from a (round-robin for cookie-less requests: one per backend).
declare -A COOKIE_BE=()  # cookie -> backend a gave it for
for _ in 1 2 3; do
  c=$(cookie_of "$IP_A:8080")
  [[ -n $c ]] || die "a set no SWITCHYARD_BACKEND cookie"
  COOKIE_BE[$c]=$(backend_of "$IP_A:8080" -H "Cookie: $c")
done
KEYS=(user-1 user-2 user-3 user-4 user-5 user-6 user-7 user-8 user-9 user-10)
declare -A KEY_BE=()     # key -> backend a picks
for k in "${KEYS[@]}"; do KEY_BE[$k]=$(backend_of "$IP_A:8081" -H "X-User: $k"); done

# All cookies and keys through HOST (sticky on :8080, hash on :8081) go where a sent them.
# Each cookie is asked 3 times in a row: a node that ignored it would go round-robin and
# could not hit the same backend 3 times out of 3.
picks_agree() { # host label
  local bad=0 c k got i
  for c in "${!COOKIE_BE[@]}"; do
    for i in 1 2 3; do
      got=$(backend_of "$1:8080" -H "Cookie: $c")
      [[ $got == "${COOKIE_BE[$c]}" ]] || { echo "    $2: cookie $c (ask $i) -> '$got', a said ${COOKIE_BE[$c]}"; bad=1; }
    done
  done
  for k in "${KEYS[@]}"; do
    got=$(backend_of "$1:8081" -H "X-User: $k")
    [[ $got == "${KEY_BE[$k]}" ]] || { echo "    $2: key $k -> '$got', a said ${KEY_BE[$k]}"; bad=1; }
  done
  return "$bad"
}
distinct() { printf '%s\n' "$@" | sort -u | grep -c .; }

echo "ha: picks (a, asked at $IP_A):"
for c in "${!COOKIE_BE[@]}"; do echo "    cookie $c -> ${COOKIE_BE[$c]}"; done
line=""
for k in "${KEYS[@]}"; do line+="$k->${KEY_BE[$k]} "; done
echo "    hash key X-User: $line"
check "a set cookies for all 3 backends" [ "$(distinct "${COOKIE_BE[@]}")" -eq 3 ]
check "a spreads the 10 hash keys over >= 2 backends" [ "$(distinct "${KEY_BE[@]}")" -ge 2 ]
check "a itself picks the same again" picks_agree "$IP_A" a
check "b directly ($IP_B) picks what a picks for every cookie and key" picks_agree "$IP_B" b
check "the VIP (a) picks the same" picks_agree "$VIP" "vip(a)"

# ------------------------------------------- binding the VIP itself (docs/ha.md)
# A third instance on b listens on VIP:8090 rather than 0.0.0.0. b is BACKUP and has no
# VIP, so the bind fails, until net.ipv4.ip_nonlocal_bind=1 (set in b's namespace only).
sed -e "s/^listen: .*/listen: $VIP:8090/" -e "s/^admin: .*/admin: 127.0.0.1:9092/" \
  "$WORK/b-sticky.yaml" >"$WORK/b-vip.yaml"
refused() { [[ $1 -ne 0 && $1 -ne 124 ]]; } # exit status of a run that did not serve (124: timeout)
rc=0
ip netns exec "$NS_B" timeout 5 "$BIN" -c "$WORK/b-vip.yaml" >"$WORK/sy-b-vip-refused.log" 2>&1 || rc=$?
check "b cannot listen on the VIP it does not hold (exit $rc: $(grep -m1 -io 'cannot assign[^,;]*' "$WORK/sy-b-vip-refused.log" || echo '?'))" \
  refused "$rc"
ip netns exec "$NS_B" sh -c 'echo 1 >/proc/sys/net/ipv4/ip_nonlocal_bind'
spawn "$NS_B" sy-b-vip "$BIN" -c "$WORK/b-vip.yaml"
vip_bound_up() { ip netns exec "$NS_B" curl -sf -m 1 http://127.0.0.1:9092/healthz; }
check "with net.ipv4.ip_nonlocal_bind=1 in b's namespace it binds the VIP and serves" wait_for 10 vip_bound_up

# --------------------------------------------------------------------- load helpers
# LOOPS client loops, each: one curl per request, 0.5 s connect timeout, 1 s total,
# ~10 ms apart; a line "start end http_code" per request. Bounded by a stop file and
# 30 s.
LOOPS=4
load_loop() { # url stopfile
  local end=$((SECONDS + 30)) t0 code
  while [[ ! -e $2 ]] && ((SECONDS < end)); do
    t0=$EPOCHREALTIME
    code=$(curl -s -o /dev/null -w '%{http_code}' --connect-timeout 0.5 -m 1 "$1" 2>/dev/null) || true
    echo "$t0 $EPOCHREALTIME ${code:-000}"
    sleep 0.01
  done
}
export -f load_loop
start_load() { # phase
  rm -f "$WORK/stop-$1"
  LOAD_PIDS=()
  for i in $(seq "$LOOPS"); do
    ip netns exec "$NS_C" bash -c 'load_loop "$@"' _ "http://$VIP:8080/" "$WORK/stop-$1" \
      >"$WORK/load-$1-$i.txt" 2>/dev/null &
    LOAD_PIDS+=($!)
  done
}
# True once the phase's loops have had at least N answers of 200 through the VIP.
answered() { # phase n
  [ "$(cat "$WORK"/load-"$1"-*.txt 2>/dev/null | awk '$3 == "200"' | wc -l)" -ge "$2" ]
}
stop_load() { # phase
  touch "$WORK/stop-$1"
  wait "${LOAD_PIDS[@]}" || true
  sort -n "$WORK"/load-"$1"-*.txt >"$WORK/load-$1.txt"
}
# Prints "requests failed first_failure_start last_failure_end first_success_end" for
# the requests that started after KILL (times in ms from KILL; -1 when none).
analyse() { # phase kill_time
  awk -v k="$2" '
    $1 >= k {
      n++
      if ($3 != "200") { f++; if (ff == "") ff = $1; if ($2 > lf) lf = $2 }
      else if (fo == "" || $2 < fo) fo = $2
    }
    END {
      printf "%d %d %.0f %.0f %.0f\n", n, f,
        (ff == "" ? -1 : (ff - k) * 1000), (lf == "" ? -1 : (lf - k) * 1000),
        (fo == "" ? -1 : (fo - k) * 1000)
    }' "$WORK/load-$1.txt"
}
# Successes among the last N requests (all loops) of a phase.
tail_ok() { tail -n "$2" "$WORK/load-$1.txt" | awk '$3 == "200"' | wc -l; }
requests_on() { # ns -> requests the sticky service has proxied (0 when it does not answer)
  { ip netns exec "$1" curl -sf -m 1 http://127.0.0.1:9090/metrics || true; } |
    awk '/^switchyard_requests_total/ { s += $NF } END { print s + 0 }'
}

# Whether the client has had 100 answers since SINCE (when the new node proxied its
# first request): the load stays on until then, so the last requests of a phase come
# after the failover.
recovered() { # phase since
  awk -v k="$2" '$1 > k && $3 == "200" { ok++ } END { exit !(ok >= 100) }' "$WORK"/load-"$1"-*.txt
}
served_within() { [[ -n $1 ]] && within "$(ms "$2" "$1")" "$3"; } # TIME KILL LIMIT_MS

# Polls the sticky service's request counter in NS until it passes BASE (at most 15 s);
# prints the time it did, or nothing.
first_served() { # ns base
  local end=$((SECONDS + 15))
  while ((SECONDS < end)); do
    if (($(requests_on "$1") > $2)); then now; return; fi
    sleep 0.05
  done
}

# ------------------------------------------------ phase 1: SIGKILL switchyard on a
echo
echo "ha: phase 1: $LOOPS client loops on http://$VIP:8080/, then SIGKILL switchyard on a (master)"
start_load p1
check "traffic flows through the VIP before phase 1" wait_for 10 answered p1 40
BASE_B=$(requests_on "$NS_B")
G1=$(pid_of sy-a-sticky) G2=$(pid_of sy-a-hash)
K1=$(now)
kill -KILL -- "-$G1" "-$G2" # each master with its worker and prober
T_B_SERVES=$(first_served "$NS_B" "$BASE_B")
wait_for 15 is_state b MASTER || echo "    b did not become MASTER within 15 s"
T_FAULT=$(awk -v k="$K1" '$1 > k && $2 == "FAULT" { print $1; exit }' "$WORK/state-a")
T_B_MASTER=$(awk -v k="$K1" '$1 > k && $2 == "MASTER" { print $1; exit }' "$WORK/state-b")
wait_for 10 recovered p1 "${T_B_SERVES:-$K1}" || true
stop_load p1
read -r P1_N P1_F P1_FF P1_LF P1_OK < <(analyse p1 "$K1")
P1_RATE=$(awk -v n="$P1_N" -v k="$K1" '{ e = $2 } END { printf "%.0f", n / (e - k) }' "$WORK/load-p1.txt")
echo "ha: after phase 1:"
show_addrs
echo "    a: FAULT at +$(ms "$K1" "${T_FAULT:-$K1}") ms; b: MASTER at +$(ms "$K1" "${T_B_MASTER:-$K1}") ms; b proxied its first request at +$(ms "$K1" "${T_B_SERVES:-$K1}") ms"
echo "    client: $P1_N requests started after the kill (~$P1_RATE/s), $P1_F failed; failures from +$P1_FF ms (start) to +$P1_LF ms (end); first success +$P1_OK ms"
check "a went FAULT (its vrrp_script saw /healthz fail)" [ -n "$T_FAULT" ]
check "b became MASTER" is_state b MASTER
check "the VIP is on b" has_vip "$NS_B"
check "the VIP is gone from a" no_vip "$NS_A"
check "b proxied requests within 10 s of the kill" served_within "$T_B_SERVES" "$K1" 10000
check "the client's first success after the kill came within 10 s" within "$P1_OK" 10000
check "the last 40 requests of phase 1 all succeeded" [ "$(tail_ok p1 40)" -eq 40 ]
check "through the VIP (now b) every cookie and key goes where a sent it" picks_agree "$VIP" "vip(b)"
check "b's instance bound to the VIP itself answers at $VIP:8090" [ -n "$(backend_of "$VIP:8090")" ]

# ------------------------------------------- phase 2: SIGKILL keepalived on b (master)
echo
echo "ha: phase 2: switchyard on a restarted (a stays BACKUP: nopreempt), then SIGKILL keepalived on b"
start_switchyard a "$NS_A"
wait_switchyard a "$NS_A"
wait_for 10 is_state a BACKUP || echo "    a did not go back to BACKUP within 10 s"
check "a is BACKUP again and did not take the VIP back (nopreempt)" is_state a BACKUP
check "b still MASTER" is_state b MASTER
start_load p2
check "traffic flows through the VIP before phase 2" wait_for 10 answered p2 40
BASE_A=$(requests_on "$NS_A")
G1=$(pid_of keepalived-b)
K2=$(now)
kill -KILL -- "-$G1" # keepalived and its VRRP child: no priority-0 advert, VIP left behind
KA_DEAD=b
T_A_SERVES=$(first_served "$NS_A" "$BASE_A")
wait_for 15 is_state a MASTER || echo "    a did not become MASTER within 15 s"
T_A_MASTER=$(awk -v k="$K2" '$1 > k && $2 == "MASTER" { print $1; exit }' "$WORK/state-a")
wait_for 10 recovered p2 "${T_A_SERVES:-$K2}" || true
stop_load p2
read -r P2_N P2_F P2_FF P2_LF _ < <(analyse p2 "$K2")
P2_RATE=$(awk -v n="$P2_N" -v k="$K2" '{ e = $2 } END { printf "%.0f", n / (e - k) }' "$WORK/load-p2.txt")
echo "ha: after phase 2 (b's keepalived died without removing its VIP):"
show_addrs
echo "    a: MASTER at +$(ms "$K2" "${T_A_MASTER:-$K2}") ms; a proxied its first request at +$(ms "$K2" "${T_A_SERVES:-$K2}") ms"
echo "    client: $P2_N requests started after the kill (~$P2_RATE/s), $P2_F failed$( ((P2_F)) && echo ", from +$P2_FF ms (start) to +$P2_LF ms (end)")"
check "a became MASTER" [ -n "$T_A_MASTER" ]
check "the VIP is on a" has_vip "$NS_A"
check "a proxied requests through the VIP within 10 s of the kill" served_within "$T_A_SERVES" "$K2" 10000
check "the last 40 requests of phase 2 all succeeded" [ "$(tail_ok p2 40)" -eq 40 ]
check "through the VIP (now a) every cookie and key goes where a first sent it" picks_agree "$VIP" "vip(a)"
STALE=no
has_vip "$NS_B" && STALE=yes
echo "    b still holds the VIP after its keepalived was killed: $STALE"
# keepalived starting in BACKUP removes a VIP it finds on its interface.
start_keepalived b "$NS_B"
KA_DEAD=
check "restarted keepalived on b removes the stale VIP" wait_for 10 no_vip "$NS_B"
check "the VIP is still on a" has_vip "$NS_A"

# --------------------------- phase 3: planned switch-over, SIGTERM keepalived on a
# The way to take a node out for maintenance: stop its keepalived (it sends a priority-0
# advert and removes the VIP), then stop switchyard once nothing comes in.
echo
echo "ha: phase 3: planned switch-over: SIGTERM keepalived on a (master; switchyard keeps running)"
wait_for 10 is_state b BACKUP || echo "    b is not BACKUP within 10 s"
start_load p3
check "traffic flows through the VIP before phase 3" wait_for 10 answered p3 40
BASE_B=$(requests_on "$NS_B")
G1=$(pid_of keepalived-a)
K3=$(now)
kill -TERM "$G1"
T_B_SERVES3=$(first_served "$NS_B" "$BASE_B")
wait_for 15 is_state b MASTER || echo "    b did not become MASTER within 15 s"
T_B_MASTER3=$(awk -v k="$K3" '$1 > k && $2 == "MASTER" { print $1; exit }' "$WORK/state-b")
wait_for 10 recovered p3 "${T_B_SERVES3:-$K3}" || true
stop_load p3
read -r P3_N P3_F P3_FF P3_LF _ < <(analyse p3 "$K3")
P3_RATE=$(awk -v n="$P3_N" -v k="$K3" '{ e = $2 } END { printf "%.0f", n / (e - k) }' "$WORK/load-p3.txt")
echo "ha: after phase 3:"
KA_DEAD=a
show_addrs
echo "    b: MASTER at +$(ms "$K3" "${T_B_MASTER3:-$K3}") ms; b proxied its first request at +$(ms "$K3" "${T_B_SERVES3:-$K3}") ms"
echo "    client: $P3_N requests started after the SIGTERM (~$P3_RATE/s), $P3_F failed$( ((P3_F)) && echo ", from +$P3_FF ms (start) to +$P3_LF ms (end)")"
check "b became MASTER" [ -n "$T_B_MASTER3" ]
check "the VIP is on b" has_vip "$NS_B"
check "the stopped keepalived removed the VIP from a" no_vip "$NS_A"
check "b proxied requests within 5 s of the SIGTERM" served_within "$T_B_SERVES3" "$K3" 5000
check "the last 40 requests of phase 3 all succeeded" [ "$(tail_ok p3 40)" -eq 40 ]

# -------------------------------------------------------------------------- summary
echo
echo "ha: summary"
printf '  phase 1, SIGKILL switchyard on the master: the client'"'"'s first success %s ms after the kill (b MASTER at %s ms); %s of %s requests failed, from +%s to +%s ms\n' \
  "$P1_OK" "$(ms "$K1" "${T_B_MASTER:-$K1}")" "$P1_F" "$P1_N" "$P1_FF" "$P1_LF"
printf '  phase 2, SIGKILL keepalived on the master: the other node MASTER after %s ms, proxying after %s ms; %s of %s requests failed\n' \
  "$(ms "$K2" "${T_A_MASTER:-$K2}")" "$(ms "$K2" "${T_A_SERVES:-$K2}")" "$P2_F" "$P2_N"
printf '  phase 3, SIGTERM keepalived on the master (planned): the other node MASTER after %s ms, proxying after %s ms; %s of %s requests failed\n' \
  "$(ms "$K3" "${T_B_MASTER3:-$K3}")" "$(ms "$K3" "${T_B_SERVES3:-$K3}")" "$P3_F" "$P3_N"
if ((${#FAILED[@]})); then
  KEEP_WORK=1
  echo "ha: FAILED: ${#FAILED[@]} check(s):"
  printf '  - %s\n' "${FAILED[@]}"
  exit 1
fi
echo "ha: all checks passed (${SECONDS} s)"
