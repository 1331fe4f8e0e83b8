#!/usr/bin/env python3
"""itemmem.py - memory per item of ringcached against memcached.

Starts each server fresh (-m large enough that nothing is evicted, -t 1 by
default) on a free 127.0.0.1 port, reads its VmRSS, loads N items (20-byte
keys, 100-byte values by default) with pipelined `set ... noreply`, waits
until the server has processed all of them (a `version` round trip on the
same connection), checks curr_items == N, reads VmRSS again once it is
stable (a hash table growth may still be finishing) and prints the
growth per item, the `bytes` stat per item, and the ratio ringcached /
memcached of the RSS growth. Target: ringcached's ratio <= 0.75.

Pure standard library, raw sockets. Servers are stopped by their pid on
every way out.

  scripts/itemmem.py [--ringcached build/ringcached] [--memcached /usr/bin/memcached]
                     [--items 1000000] [-m 1024] [-t 1] [--klen 20] [--vlen 100]
"""
import argparse
import atexit
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from missratio import (ROOT, Client, _on_signal, rss_kib, start_server,  # noqa: E402
                       stop, stop_all)

BATCH = 2000


def load(port, n, klen, vlen):
    """Stores n items; returns once the server has processed them all."""
    c = Client(port)
    value = b"x" * vlen
    fmt = b"%%0%dd" % klen
    for start in range(0, n, BATCH):
        c.sock.sendall(b"".join(
            [b"set %s 0 0 %d noreply\r\n%s\r\n" % (fmt % i, vlen, value)
             for i in range(start, min(n, start + BATCH))]))
        if (start // BATCH) % 50 == 49:
            sync(c)
    sync(c)
    return c


def sync(c):
    """A round trip: every earlier request of this connection is done."""
    c.sock.sendall(b"version\r\n")
    c.recv_until_ends(1, b"\r\n")


def settled_rss(pid, period=0.5, limit=10.0):
    """VmRSS once two reads `period` apart agree within 0.5 %: a server
    may still be finishing a hash table growth (memcached's expansion
    thread, ringcached's incremental rebuild) when the load ends."""
    deadline = time.monotonic() + limit
    last = rss_kib(pid)
    while time.monotonic() < deadline:
        time.sleep(period)
        now = rss_kib(pid)
        if abs(now - last) <= last * 0.005:
            return now
        last = now
    return last


def measure(kind, path, args):
    proc, port = start_server(kind, path, args.threads, args.mem)
    try:
        # The baseline includes one open connection, as the end figure does.
        c0 = Client(port)
        sync(c0)
        before = rss_kib(proc.pid)
        t0 = time.monotonic()
        c = load(port, args.items, args.klen, args.vlen)
        secs = time.monotonic() - t0
        at_end = rss_kib(proc.pid)
        after = settled_rss(proc.pid)
        st = c.stats()
        c.close()
        c0.close()
    finally:
        stop(proc)
    items = int(st.get("curr_items", 0))
    if items != args.items:
        print("  %s: WARNING curr_items %d != %d (evictions %s)"
              % (kind, items, args.items, st.get("evictions")))
    per = (after - before) * 1024.0 / max(1, items)
    print("  %-10s RSS %.1f -> %.1f MiB (%.1f right after the load): %.1f B/item; "
          "stats bytes %.1f B/item, hash_bytes %s; curr_items %d; loaded in %.1f s"
          % (kind, before / 1024.0, after / 1024.0, at_end / 1024.0, per,
             int(st.get("bytes", 0)) / max(1, items), st.get("hash_bytes", "-"),
             items, secs), flush=True)
    return per


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ringcached", default=os.path.join(ROOT, "build", "ringcached"))
    ap.add_argument("--memcached", default="/usr/bin/memcached")
    ap.add_argument("--items", type=int, default=1000000)
    ap.add_argument("-m", "--mem", type=int, default=1024)
    ap.add_argument("-t", "--threads", type=int, default=1)
    ap.add_argument("--klen", type=int, default=20)
    ap.add_argument("--vlen", type=int, default=100)
    ap.add_argument("--only", choices=["ringcached", "memcached"])
    args = ap.parse_args()
    atexit.register(stop_all)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    print("itemmem: %d items, %d-byte keys, %d-byte values, -m %d -t %d"
          % (args.items, args.klen, args.vlen, args.mem, args.threads))
    res = {}
    for kind, path in (("ringcached", args.ringcached), ("memcached", args.memcached)):
        if args.only in (None, kind):
            if not os.access(path, os.X_OK):
                sys.exit("itemmem: %s not found at %s" % (kind, path))
            res[kind] = measure(kind, path, args)
    if len(res) == 2:
        r, m = res["ringcached"], res["memcached"]
        print("  ratio ringcached/memcached %.3f (%+.1f B/item)%s"
              % (r / m, r - m, "  OK: <= 0.75" if r <= 0.75 * m else "  MISSES the 0.75 target"))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        stop_all()
