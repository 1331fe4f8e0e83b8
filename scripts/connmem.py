#!/usr/bin/env python3
"""connmem.py - what client connections cost in memory, ringcached against
memcached in the same run.

Two cases, each on a freshly started server (free 127.0.0.1 port, -t 4 and
-m 64 by default, -c raised for the connections):

  idle     --idle connections (3000) each make one `get` (a miss) and then
           stay open doing nothing. VmRSS of the server before (with one
           connection open) and after, once it is stable for 2 s; printed
           as KiB per connection.
  partial  --partial connections (900) each send `set kN 0 0 1000000` and
           900 KB of the value, then wait without sending the rest. The
           server's VmRSS is followed while they send (the peak) and once
           it has settled; meanwhile another connection checks that a
           set/get round trip still works. Printed: peak and settled RSS in
           MiB, how many of the partial sets were refused with
           SERVER_ERROR (ringcached refuses what its connection budget,
           -o conn_mem_max, cannot hold), and whether the other client was
           served.

Then the ratio ringcached / memcached of each figure.

Pure standard library, raw sockets; helpers from missratio.py. Servers are
stopped by their pid on every way out.

  scripts/connmem.py [--ringcached build/ringcached] [--memcached /usr/bin/memcached]
                     [--idle 3000] [--partial 900] [-m 64] [-t 4] [--only ringcached]
"""
import argparse
import atexit
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import missratio  # noqa: E402
from missratio import (ROOT, Client, _on_signal, free_port, rss_kib,  # noqa: E402
                       server_argv, stop, stop_all)

SETTLE_TIMEOUT = 30.0
VALUE_LEN = 1000000
SENT_LEN = 900000


def start(kind, path, threads, mem, conns):
    """Starts a server allowing `conns` connections; waits (bounded) until
    it answers `version`. Returns (Popen, port)."""
    port = free_port()
    argv = server_argv(kind, path, port, threads, mem) + ["-c", str(conns + 64)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    missratio._running.append(proc)
    deadline = time.monotonic() + missratio.START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            missratio._running.remove(proc)
            raise RuntimeError("%s exited %s at start: %s" % (
                kind, proc.returncode, proc.stderr.read().decode(errors="replace")))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"version\r\n")
                if s.recv(100).startswith(b"VERSION"):
                    return proc, port
        except OSError:
            pass
        time.sleep(0.02)  # bounded polling of the listener, not a sync point
    stop(proc)
    raise RuntimeError("%s did not answer within %.0f s" % (kind, missratio.START_TIMEOUT))


def roundtrip(c, key=b"probe", value=b"v" * 100):
    """A set and a get on connection c; True if both answered right."""
    c.sock.sendall(b"set %s 0 0 %d\r\n%s\r\nget %s\r\n" % (key, len(value), value, key))
    got = c.recv_until_ends(1)
    return got == b"STORED\r\nVALUE %s 0 %d\r\n%s\r\nEND\r\n" % (key, len(value), value)


def settled_rss(pid, timeout=SETTLE_TIMEOUT, interval=0.1):
    """Polls VmRSS until three readings `interval` s apart agree within 1 %%
    (bounded by `timeout`); returns (last, peak) in KiB."""
    deadline = time.monotonic() + timeout
    last = []
    peak = 0
    while time.monotonic() < deadline:
        r = rss_kib(pid)
        peak = max(peak, r)
        last = (last + [r])[-3:]
        if len(last) == 3 and max(last) - min(last) <= max(last) // 100:
            break
        time.sleep(interval)
    return last[-1], peak


def idle_case(kind, path, args):
    proc, port = start(kind, path, args.threads, args.mem, args.idle)
    socks = []
    try:
        c0 = Client(port)
        assert roundtrip(c0)
        before, _ = settled_rss(proc.pid)
        for i in range(args.idle):
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.sendall(b"get idle%d\r\n" % i)
            socks.append(s)
        for s in socks:
            buf = b""
            while not buf.endswith(b"END\r\n"):
                chunk = s.recv(100)
                if not chunk:
                    raise RuntimeError("%s closed an idle connection" % kind)
                buf += chunk
        assert roundtrip(c0)
        # Over a few seconds: ringcached's workers free the blocks their
        # free lists kept for the burst of gets once they stay unused for
        # a second (net/connmem.h).
        after, _ = settled_rss(proc.pid, interval=1.0)
        c0.close()
    finally:
        for s in socks:
            s.close()
        stop(proc)
    per = (after - before) / float(args.idle)
    print("  %-10s idle: RSS %.1f -> %.1f MiB with %d connections: %.2f KiB/connection"
          % (kind, before / 1024.0, after / 1024.0, args.idle, per), flush=True)
    return per


def partial_case(kind, path, args):
    proc, port = start(kind, path, args.threads, args.mem, args.partial)
    socks = []
    try:
        c0 = Client(port)
        assert roundtrip(c0)
        base = rss_kib(proc.pid)
        value = b"p" * SENT_LEN
        for i in range(args.partial):
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            s.setblocking(False)
            socks.append([s, b"set k%d 0 0 %d\r\n" % (i, VALUE_LEN) + value, b""])
        peak = base
        served = True
        deadline = time.monotonic() + 120
        pending = list(socks)
        n = 0
        while pending and time.monotonic() < deadline:
            _, writable, _ = select.select([], [e[0] for e in pending], [], 0.1)
            for s in writable:
                e = next(e for e in pending if e[0] is s)
                try:
                    k = s.send(e[1][:1 << 16])
                    e[1] = e[1][k:]
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    e[1] = b""
                if not e[1]:
                    pending.remove(e)
            n += 1
            if n % 20 == 0:
                peak = max(peak, rss_kib(proc.pid))
                served = served and roundtrip(c0)
        if pending:
            print("  %-10s partial: %d connections could not send their 900 KB in 120 s"
                  % (kind, len(pending)))
        settled, p2 = settled_rss(proc.pid)
        peak = max(peak, p2)
        served = served and roundtrip(c0)
        refused = 0
        for e in socks:
            try:
                data = e[0].recv(4096)
            except (BlockingIOError, InterruptedError):
                data = b""
            except OSError:
                data = b""
            if data.startswith(b"SERVER_ERROR"):
                refused += 1
        c0.close()
    finally:
        for e in socks:
            e[0].close()
        stop(proc)
    print("  %-10s partial: RSS %.1f MiB before, peak %.1f, settled %.1f MiB (-m %d); "
          "%d of %d sets refused; other client %s"
          % (kind, base / 1024.0, peak / 1024.0, settled / 1024.0, args.mem, refused,
             args.partial, "served throughout" if served else "NOT SERVED"), flush=True)
    return peak / 1024.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ringcached", default=os.path.join(ROOT, "build", "ringcached"))
    ap.add_argument("--memcached", default="/usr/bin/memcached")
    ap.add_argument("--idle", type=int, default=3000)
    ap.add_argument("--partial", type=int, default=900)
    ap.add_argument("-m", "--mem", type=int, default=64)
    ap.add_argument("-t", "--threads", type=int, default=4)
    ap.add_argument("--only", choices=["ringcached", "memcached"])
    args = ap.parse_args()
    atexit.register(stop_all)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(args.idle, args.partial) + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(want, hard), hard))

    print("connmem: %d idle connections; %d partial 1 MB sets; -m %d -t %d"
          % (args.idle, args.partial, args.mem, args.threads))
    res = {}
    for kind, path in (("ringcached", args.ringcached), ("memcached", args.memcached)):
        if args.only in (None, kind):
            if not os.access(path, os.X_OK):
                sys.exit("connmem: %s not found at %s" % (kind, path))
            res[kind] = (idle_case(kind, path, args), partial_case(kind, path, args))
    if len(res) == 2:
        (ri, rp), (mi, mp) = res["ringcached"], res["memcached"]
        print("  ratio ringcached/memcached: idle KiB/conn %.2f (%.2f vs %.2f), "
              "partial-set peak RSS %.2f (%.1f vs %.1f MiB)"
              % (ri / mi if mi > 0 else float("nan"), ri, mi,
                 rp / mp if mp > 0 else float("nan"), rp, mp))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        stop_all()
