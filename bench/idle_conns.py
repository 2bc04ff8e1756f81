#!/usr/bin/env python3
"""Memory a proxy spends per idle client connection, for one kind of idle connection.

Used by bench/idle_rss.sh (switchyard alone) and bench/compare.sh (memory phase, every
proxy); not meant to be run by hand, but it can be:

    python3 bench/idle_conns.py PORT N CASE PID [PID...]

CASE is one of
  keepalive  each connection makes one complete GET, reads the whole response, then stays
             open and silent (a keep-alive connection between requests);
  silent     each connection is accepted and never sends a byte;
  partial    each connection sends a partial head, b"GET / HTTP/1.1\\r\\nHo", and stops.

The proxy should be a fresh process. One priming GET on its own connection first (so lazy
start-up allocations and the first backend connection are paid before "before"), then RSS
(VmRSS summed over PIDs: pass the proxy's whole process tree) and open fds are read, N
connections are opened in the chosen state, and after a 2 s settle RSS and fds are read
again. Then: how many connections the proxy had closed (readable while idle), and, on up to
1000 of them, whether the connection still works (the request is completed and must get a
200). Prints one JSON object:

  case, conns (asked), opened, failed (connect errors or a first GET that was not 200),
  before_kib, with_kib, per_conn_kib ((with - before) / opened), peak_kib and
  peak_per_conn_kib (VmHWM, the high-water mark, summed over PIDs: what opening them cost at
  the worst moment, e.g. before a proxy shrinks idle connections), fds_before, fds_with
  (the proxy's open fds: with - before ~ opened shows the proxy accepted them all),
  closed_by_proxy, checked, check_failed, after_close_kib (1 s after closing them all).
"""
import json
import os
import re
import select
import socket
import sys
import time

port, n, case, pids = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4:]
assert case in ("keepalive", "silent", "partial"), case
GET = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
PARTIAL = b"GET / HTTP/1.1\r\nHo"
REST = b"st: bench\r\n\r\n"  # completes PARTIAL into GET


def rss_kib(field="VmRSS:"):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                total += sum(int(l.split()[1]) for l in f if l.startswith(field))
        except OSError:
            pass
    return total


def fds():
    total = 0
    for p in pids:
        try:
            total += len(os.listdir(f"/proc/{p}/fd"))
        except OSError:
            pass
    return total


def response_ok(s):
    """Read one response on s; True if it is a complete 200."""
    buf = b""
    while chunk := s.recv(65536):
        buf += chunk
        head, sep, body = buf.partition(b"\r\n\r\n")
        if not sep:
            continue
        m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
        if len(body) >= int(m.group(1)) if m else body.endswith(b"0\r\n\r\n"):
            return head.startswith(b"HTTP/1.1 200")
    return False


def request_ok(s, data):
    s.sendall(data)
    return response_ok(s)


with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
    primed = request_ok(s, GET)
time.sleep(0.5)
before, fds_before = rss_kib(), fds()
for p in pids:  # reset VmHWM to the current RSS (clear_refs 5), so the peak is this phase's
    try:
        with open(f"/proc/{p}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass

socks, failed = [], 0
for _ in range(n):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
    except OSError:
        failed += 1
        continue
    socks.append(s)
    try:
        if case == "keepalive":
            failed += not request_ok(s, GET)
        elif case == "partial":
            s.sendall(PARTIAL)
    except OSError:
        failed += 1
time.sleep(2)
with_conns, fds_with, peak = rss_kib(), fds(), rss_kib("VmHWM:")

poll = select.poll()
for s in socks:
    poll.register(s, select.POLLIN)
closed = len(poll.poll(0))  # readable while idle = closed (or answered) by the proxy

# Do they still work? Finish a request on a sample (spread over the whole set).
sample = socks[:: max(1, len(socks) // 1000)][:1000]
check_failed = 0
for s in sample:
    try:
        check_failed += not request_ok(s, {"keepalive": GET, "silent": GET, "partial": REST}[case])
    except OSError:
        check_failed += 1
for s in socks:
    s.close()
time.sleep(1)
opened = len(socks)
print(json.dumps(dict(
    case=case, port=port, conns=n, opened=opened, failed=failed, primed=primed,
    before_kib=before, with_kib=with_conns,
    per_conn_kib=round((with_conns - before) / opened, 3) if opened else None,
    peak_kib=peak, peak_per_conn_kib=round((peak - before) / opened, 3) if opened else None,
    fds_before=fds_before, fds_with=fds_with, closed_by_proxy=closed,
    checked=len(sample), check_failed=check_failed, after_close_kib=rss_kib())))
