#!/usr/bin/env python3
"""missratio.py - the miss ratio of ringcached against memcached on the same
key streams, at the same -m and -t.

Each server is started fresh for each stream on a free 127.0.0.1 port and is
fed the SAME request sequence with set-on-miss, the way a read-through cache
client uses it: a batch of pipelined `get`s, then one `set ... noreply` for
every key of the batch that missed. Every key has a fixed value length (a
function of the key), so both servers store exactly the same bytes.

Streams (seeded, so every run and both servers see identical sequences):
  A  Zipf(alpha) over --keys keys (default 0.99 over 1M).
  B  the stream A distribution, with a one-off scan of --scan-len keys that
     are never requested again every --scan-every requests (scan keys count
     as requests; the "zipf part" figure leaves them out, which is where
     scan resistance shows).

The first --warmup fraction of each stream fills the cache and is not
counted. The cache should hold only a part of the key space: with the
defaults (-m 64, values 100..500 bytes, 1M keys) the key space is about
360 MB of items, so 64 MB holds roughly 15-20 % of the keys.

Pure standard library; only raw sockets. The servers are stopped by their
pid on every way out (normal end, exception, SIGINT, SIGTERM).

  scripts/missratio.py [--ringcached build/ringcached] [--memcached /usr/bin/memcached]
                       [-t 4] [-m 64] [--requests 3000000] [--quick]
"""
import argparse
import atexit
import bisect
import os
import random
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START_TIMEOUT = 10.0
IO_TIMEOUT = 30.0

# ---- servers ---------------------------------------------------------------

_running = []  # Popen objects this script started and has not stopped yet


def stop(proc):
    """Stops one server by its pid: SIGTERM, then SIGKILL after 5 s."""
    if proc in _running:
        _running.remove(proc)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)


def stop_all():
    for p in list(_running):
        stop(p)


def _on_signal(signum, frame):
    raise SystemExit(128 + signum)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_argv(kind, path, port, threads, mem):
    argv = [path, "-l", "127.0.0.1", "-p", str(port), "-t", str(threads),
            "-m", str(mem)]
    if kind == "memcached":
        argv += ["-U", "0"]
        if os.geteuid() == 0:
            argv += ["-u", "root"]
    return argv


def start_server(kind, path, threads, mem):
    """Starts a server, waits (bounded polling) until it answers `version`.
    Returns (Popen, port)."""
    port = free_port()
    proc = subprocess.Popen(server_argv(kind, path, port, threads, mem),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _running.append(proc)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace")
            _running.remove(proc)
            raise RuntimeError("%s exited %s at start: %s" % (kind, proc.returncode, err))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"version\r\n")
                if s.recv(100).startswith(b"VERSION"):
                    return proc, port
        except OSError:
            pass
        time.sleep(0.02)  # bounded polling of the listener, not a sync point
    stop(proc)
    raise RuntimeError("%s did not answer within %.0f s" % (kind, START_TIMEOUT))


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Client:
    """A raw text-protocol connection with a receive buffer."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def recv_until_ends(self, count, marker=b"END\r\n"):
        """Reads until the buffer holds `count` replies ending in `marker`
        (our values never contain it) and the buffer ends with one.
        Returns the bytes and empties the buffer."""
        buf = self.buf
        recv = self.sock.recv
        while True:
            if buf.endswith(marker) and buf.count(marker) >= count:
                self.buf = b""
                return buf
            chunk = recv(1 << 20)
            if not chunk:
                raise EOFError("server closed the connection")
            buf += chunk

    def stats(self):
        self.sock.sendall(b"stats\r\n")
        raw = self.recv_until_ends(1)
        out = {}
        for line in raw.split(b"\r\n"):
            p = line.split(b" ")
            if len(p) == 3 and p[0] == b"STAT":
                out[p[1].decode()] = p[2].decode()
        return out

    def close(self):
        self.sock.close()


# ---- streams ---------------------------------------------------------------

def zipf_cum_weights(n, alpha):
    w = 0.0
    cum = []
    append = cum.append
    for r in range(1, n + 1):
        w += r ** -alpha
        append(w)
    return cum


def make_stream(rng, cum, n_requests, scan_every, scan_len):
    """A list of key ids. Zipf ranks are 0..n-1; scan keys are ids from
    len(cum) upwards, each used once. The popularity rank is shuffled onto
    ids by the key format (hashing spreads them anyway)."""
    n = len(cum)
    total = cum[-1]
    rnd = rng.random
    bis = bisect.bisect_left
    out = []
    scan_id = n
    zipf_left = n_requests
    while len(out) < n_requests:
        take = min(scan_every, n_requests - len(out)) if scan_every else zipf_left
        out.extend(bis(cum, rnd() * total) for _ in range(take))
        if scan_every and len(out) < n_requests:
            k = min(scan_len, n_requests - len(out))
            out.extend(range(scan_id, scan_id + k))
            scan_id += k
    return out


def key_of(i):
    return b"mr:%08x" % (i * 0x9E3779B1 & 0xFFFFFFFF)


class Values:
    """The value of key i: a deterministic length in [lo, hi]."""

    def __init__(self, lo, hi):
        self.lo, self.span = lo, hi - lo + 1
        self.blob = b"v" * hi

    def length(self, i):
        return self.lo + ((i * 2654435761) >> 7) % self.span


# ---- one run ---------------------------------------------------------------

def replay(port, stream, keycmd, values, batch, warmup, n_keys):
    """Replays the stream with set-on-miss. Returns a dict of counts."""
    c = Client(port)
    sock = c.sock
    blob = values.blob
    vlen = values.length
    counted_from = int(len(stream) * warmup)
    req = miss = zreq = zmiss = 0
    sets = 0
    t0 = time.monotonic()
    for start in range(0, len(stream), batch):
        ids = stream[start:start + batch]
        sock.sendall(b"".join([keycmd(i) for i in ids]))
        raw = c.recv_until_ends(len(ids))
        replies = raw.split(b"END\r\n")
        # replies has len(ids)+1 entries, the last one empty: a miss is an
        # empty reply, a hit starts with VALUE.
        out = []
        counted = start + len(ids) > counted_from
        for j, i in enumerate(ids):
            if replies[j]:
                continue
            n = vlen(i)
            out.append(b"set %s 0 0 %d noreply\r\n%s\r\n" % (key_of(i), n, blob[:n]))
            if counted and start + j >= counted_from:
                miss += 1
                if i < n_keys:
                    zmiss += 1
        if counted:
            first = max(0, counted_from - start)
            req += len(ids) - first
            zreq += sum(1 for i in ids[first:] if i < n_keys)
        if out:
            sets += len(out)
            sock.sendall(b"".join(out))
    elapsed = time.monotonic() - t0
    st = c.stats()
    c.close()
    return {"requests": req, "misses": miss, "zipf_requests": zreq,
            "zipf_misses": zmiss, "sets": sets, "seconds": elapsed,
            "ops": (len(stream) + sets) / elapsed, "stats": st}


def run_stream(name, stream, args, servers, values, n_keys):
    cmds = {}

    def keycmd(i):
        c = cmds.get(i)
        if c is None:
            c = b"get %s\r\n" % key_of(i)
            if i < n_keys:
                cmds[i] = c
        return c

    res = {}
    for kind, path in servers:
        proc, port = start_server(kind, path, args.threads, args.mem)
        try:
            r = replay(port, stream, keycmd, values, args.batch, args.warmup, n_keys)
            r["rss_kib"] = rss_kib(proc.pid)
        finally:
            stop(proc)
        res[kind] = r
        st = r["stats"]
        print("  %-10s miss %.4f  (zipf part %.4f)  %d req counted, %d sets, "
              "%.0f ops/s, items %s, evictions %s, bytes %s, RSS %.1f MiB"
              % (kind, r["misses"] / max(1, r["requests"]),
                 r["zipf_misses"] / max(1, r["zipf_requests"]), r["requests"],
                 r["sets"], r["ops"], st.get("curr_items"), st.get("evictions"),
                 st.get("bytes"), r["rss_kib"] / 1024.0), flush=True)
    if len(res) == 2:
        rc, mc = res["ringcached"], res["memcached"]
        for label, m, q in (("all", "misses", "requests"),
                            ("zipf part", "zipf_misses", "zipf_requests")):
            a = rc[m] / max(1, rc[q])
            b = mc[m] / max(1, mc[q])
            print("  %-10s ringcached %.4f  memcached %.4f  diff %+.4f  ratio %.3f%s"
                  % (label, a, b, a - b, a / b if b else float("nan"),
                     "  (ringcached better)" if a < b else
                     "  (memcached better)" if a > b else ""))
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ringcached", default=os.path.join(ROOT, "build", "ringcached"))
    ap.add_argument("--memcached", default="/usr/bin/memcached")
    ap.add_argument("-t", "--threads", type=int, default=4)
    ap.add_argument("-m", "--mem", type=int, default=64, help="megabytes, both servers")
    ap.add_argument("--requests", type=int, default=3000000, help="per stream per server")
    ap.add_argument("--keys", type=int, default=1000000)
    ap.add_argument("--alpha", type=float, default=0.99)
    ap.add_argument("--vmin", type=int, default=100)
    ap.add_argument("--vmax", type=int, default=500)
    ap.add_argument("--scan-every", type=int, default=200000)
    ap.add_argument("--scan-len", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--warmup", type=float, default=0.25,
                    help="fraction of each stream not counted (default 0.25)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--only", choices=["ringcached", "memcached"])
    ap.add_argument("--quick", action="store_true",
                    help="500k requests per stream, for a smoke run")
    args = ap.parse_args()
    if args.quick:
        args.requests = min(args.requests, 500000)

    atexit.register(stop_all)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    servers = [(k, p) for k, p in (("ringcached", args.ringcached),
                                   ("memcached", args.memcached))
               if args.only in (None, k)]
    for kind, path in servers:
        if not os.access(path, os.X_OK):
            sys.exit("missratio: %s not found at %s" % (kind, path))

    t0 = time.monotonic()
    values = Values(args.vmin, args.vmax)
    cum = zipf_cum_weights(args.keys, args.alpha)
    mean_item = sum(values.length(i) for i in range(0, args.keys, 97)) / len(range(0, args.keys, 97))
    print("missratio: -m %d -t %d, %d keys Zipf(%.2f), values %d..%d B (mean %.0f), "
          "%d requests per stream, batches of %d gets, first %.0f%% warm-up"
          % (args.mem, args.threads, args.keys, args.alpha, args.vmin, args.vmax,
             mean_item, args.requests, args.batch, args.warmup * 100))
    print("  key space ~%.0f MB of key+value bytes; -m is %.0f%% of that"
          % (args.keys * (mean_item + 11) / 1e6,
             100.0 * args.mem * 1048576 / (args.keys * (mean_item + 11))))
    streams = [
        ("A: Zipf(%.2f)" % args.alpha, 0, 0),
        ("B: Zipf(%.2f) + a %d-key one-off scan every %d requests"
         % (args.alpha, args.scan_len, args.scan_every), args.scan_every, args.scan_len),
    ]
    for idx, (name, every, length) in enumerate(streams):
        rng = random.Random(args.seed * 1000 + idx)
        stream = make_stream(rng, cum, args.requests, every, length)
        print("stream %s" % name, flush=True)
        run_stream(name, stream, args, servers, values, args.keys)
    print("total %.0f s" % (time.monotonic() - t0))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        stop_all()
