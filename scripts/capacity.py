#!/usr/bin/env python3
"""capacity.py - the capacity sweep: how much ringcached holds, and how well,
against memcached at the same -t and -m (issue "1/4 Capacity").

For every cell (-t, -m, value sizes) each server is started fresh on a free
127.0.0.1 port with the same flags and fed the SAME request sequence:

  1. prefill: every key of a fixed, evenly spread subset of the key space is
     set once (pipelined `set ... noreply`, a `version` round trip every
     50 000 sets) until the items sent add up to --prefill x -m, so that the
     cache is full and evicting before any get is counted;
  2. warm-up: --warmup x C requests of a Zipf(--alpha) stream, read-through
     style: a batch of --batch keys as one `get k1 ... kN`, then one
     `set ... noreply` for every key of the batch that missed. Not counted;
     it lets the eviction policy settle;
  3. measured: --measure x C more requests of the same stream, counted. The
     miss ratio is misses / requests of this part (a key asked twice in one
     batch and missing is two misses, and is set once).

C is the estimated number of items -m holds (-m / (mean value + key + 50 B)),
and the key space is --keys-factor x C keys, so every cell is under memory
pressure whatever -m is. Each key's value length is a deterministic function
of the key (missratio.Values), so both servers store the same bytes. The
stream of a (-m, values) pair is generated once and replayed for every -t
and both servers.

At the end of the measured part it reads `stats` (curr_items = items held,
`bytes` = bytes held, evictions) and the server's VmRSS, then stops it. It
prints one line per run as it goes and the table at the end: ringcached (rc),
memcached (mc) and rc/mc for each figure, with PASS/FAIL marks against the
targets of the issue:
  items held  rc >= mc in every cell, rc >= 1.3 x mc with fixed 100 B values
  miss ratio  rc < mc
  RSS         rc <= 1.10 x mc
The marks are figures, not a test: the exit status is 0 when the sweep ran,
1 when a server failed, 2 on a bad command line.

The policy is not fully at steady state after the warm-up: with Zipf(0.99)
the miss ratio of both servers keeps drifting down by ~0.01 over another
10 x C requests. The figures compare the two servers on one stream; they
are not asymptotic miss ratios.

On this 2-core machine the full sweep (24 cells, 48 runs) takes ~10.5 min,
--quick (8 cells) ~1.5 min; most of it is the -m 256 cells.

Pure standard library, raw sockets; the server and stream helpers come from
missratio.py. Servers are stopped by their pid on every way out. The client
is one connection (so the sequence is the same for both servers); it keeps
up with either server on this 2-core machine at ~0.5 M gets/s.

  scripts/capacity.py [--quick] [-t 1,2,4,8] [-m 16,64,256] [--values 100,100-1000]
                      [--only ringcached|memcached] [--ringcached build/ringcached]
                      [--memcached /usr/bin/memcached]
"""
import argparse
import atexit
import os
import random
import re
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from missratio import (ROOT, Client, Values, _on_signal, key_of,  # noqa: E402
                       make_stream, rss_kib, start_server, stop, stop_all,
                       zipf_cum_weights)

MIB = 1 << 20
KEY_LEN = len(key_of(0))
ITEM_OVERHEAD = 50          # bytes per item assumed by the capacity estimate
PREFILL_BATCH = 1000        # sets per send during the prefill
PREFILL_SYNC = 50           # sends between two round trips during the prefill
# Values are runs of "v" and keys are "mr:" + hex, so "VALUE " only starts
# a reply line (an unanchored search is ~9x faster than a multi-line one).
HIT = re.compile(rb"VALUE (\S+) ")

FULL = {"threads": "1,2,4,8", "mem": "16,64,256", "values": "100,100-1000"}
QUICK = {"threads": "2,4", "mem": "16,64", "values": "100,100-1000"}

TARGET_ITEMS_FIXED = 1.3    # rc/mc items held with fixed 100 B values
TARGET_ITEMS = 1.0          # rc/mc items held otherwise
TARGET_RSS = 1.10           # rc/mc RSS at most


# ---- options ---------------------------------------------------------------

def int_list(text, what, lo, hi):
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("%s: expected a comma-separated list of "
                                         "integers, got %r" % (what, text))
    if not out or any(not lo <= x <= hi for x in out):
        raise argparse.ArgumentTypeError("%s: every value must be in %d..%d, got %r"
                                         % (what, lo, hi, text))
    return out


def value_specs(text):
    """'100,100-1000' -> [(100, 100), (100, 1000)]."""
    out = []
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise argparse.ArgumentTypeError("--values: expected N or LO-HI items, "
                                             "got %r" % part)
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        if not 1 <= lo <= hi <= 100000:
            raise argparse.ArgumentTypeError("--values: need 1 <= LO <= HI <= 100000, "
                                             "got %r" % part)
        out.append((lo, hi))
    return out


def vlabel(lo, hi):
    return "%d" % lo if lo == hi else "%d-%d" % (lo, hi)


# ---- the key space of one (-m, values) pair --------------------------------

class Workload:
    """Key space, prefill set and request stream of one (-m, values) pair;
    the same object is replayed against every server and -t."""

    def __init__(self, mem, lo, hi, args):
        self.mem, self.lo, self.hi = mem, lo, hi
        self.values = Values(lo, hi)
        mean = (lo + hi) / 2.0
        self.capacity = int(mem * MIB / (mean + KEY_LEN + ITEM_OVERHEAD))
        self.n_keys = int(self.capacity * args.keys_factor)
        self.n_warmup = round(self.capacity * args.warmup / args.batch) * args.batch
        self.n_measure = max(args.batch,
                             round(self.capacity * args.measure / args.batch) * args.batch)
        self.prefill = self._prefill_ids(args.prefill * mem * MIB)
        cum = zipf_cum_weights(self.n_keys, args.alpha)
        rng = random.Random(args.seed * 1000 + mem * 7 + lo * 13 + hi)
        stream = make_stream(rng, cum, self.n_warmup + self.n_measure, 0, 0)
        del cum
        # One `get k1 ... kN` line per batch, rendered once for all replays.
        self.batches = []
        for start in range(0, len(stream), args.batch):
            ids = stream[start:start + args.batch]
            self.batches.append((ids, b"get " + b" ".join([key_of(i) for i in ids])
                                 + b"\r\n"))
        self.warmup_batches = self.n_warmup // args.batch

    def _prefill_ids(self, budget):
        """Key ids spread evenly over the popularity ranks (a stride
        coprime with the key count), until the items add up to budget."""
        n = self.n_keys
        stride = int(n * 0.6180339887) | 1
        while _gcd(stride, n) != 1:
            stride += 2
        vlen = self.values.length
        out = []
        total = 0
        j = 0
        while total < budget and j < n:
            i = (j * stride) % n
            out.append(i)
            total += vlen(i) + KEY_LEN + ITEM_OVERHEAD
            j += 1
        return out


def _gcd(a, b):
    while b:
        a, b = b, a % b
    return a


# ---- one run ---------------------------------------------------------------

def sync(c):
    """A round trip: every earlier request of this connection is done."""
    c.sock.sendall(b"version\r\n")
    c.recv_until_ends(1, b"\r\n")


def prefill(c, wl):
    blob = wl.values.blob
    vlen = wl.values.length
    ids = wl.prefill
    for n, start in enumerate(range(0, len(ids), PREFILL_BATCH)):
        out = []
        for i in ids[start:start + PREFILL_BATCH]:
            v = vlen(i)
            out.append(b"set %s 0 0 %d noreply\r\n%s\r\n" % (key_of(i), v, blob[:v]))
        c.sock.sendall(b"".join(out))
        if n % PREFILL_SYNC == PREFILL_SYNC - 1:
            sync(c)
    sync(c)


def replay(c, wl):
    """Replays the stream with set-on-miss; returns (requests, misses) of
    the measured part."""
    sock = c.sock
    recv = c.recv_until_ends
    blob = wl.values.blob
    vlen = wl.values.length
    findall = HIT.findall
    req = miss = 0
    for b, (ids, line) in enumerate(wl.batches):
        sock.sendall(line)
        hits = set(findall(recv(1)))
        out = []
        sent = set()
        n_miss = 0
        for i, k in zip(ids, line[4:-2].split(b" ")):
            if k in hits:
                continue
            n_miss += 1
            if k in sent:
                continue  # asked twice in this batch: set once
            sent.add(k)
            v = vlen(i)
            out.append(k)
            out.append(b" 0 0 %d noreply\r\n%s\r\nset " % (v, blob[:v]))
        if out:
            sock.sendall(b"set " + b"".join(out)[:-4])
        if b >= wl.warmup_batches:
            req += len(ids)
            miss += n_miss
    sync(c)
    return req, miss


def status_kib(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def run_one(kind, path, threads, wl):
    t0 = time.monotonic()
    proc, port = start_server(kind, path, threads, wl.mem)
    try:
        c = Client(port)
        prefill(c, wl)
        t1 = time.monotonic()
        st_fill = c.stats()
        req, miss = replay(c, wl)
        t2 = time.monotonic()
        st = c.stats()
        rss = rss_kib(proc.pid)
        hwm = status_kib(proc.pid, "VmHWM")
        c.close()
        if proc.poll() is not None:
            raise RuntimeError("%s exited %s during the run" % (kind, proc.returncode))
    finally:
        stop(proc)
    r = {"items": int(st["curr_items"]), "bytes": int(st["bytes"]),
         "evictions": int(st.get("evictions", 0)),
         "fill_evictions": int(st_fill.get("evictions", 0)),
         "miss": miss / max(1, req), "requests": req, "rss": rss, "hwm": hwm,
         "fill_s": t1 - t0, "replay_s": t2 - t1, "total_s": time.monotonic() - t0}
    print("  %-10s -t %d -m %-3d values %-8s items %8d  bytes %6.1f MiB  miss %.4f  "
          "RSS %6.1f MiB (peak %6.1f)  evictions %d (%d after prefill)  "
          "%.1f s (prefill %.1f, %.0f k gets/s)"
          % (kind, threads, wl.mem, vlabel(wl.lo, wl.hi), r["items"], r["bytes"] / MIB,
             r["miss"], rss / 1024.0, hwm / 1024.0, r["evictions"], r["fill_evictions"],
             r["total_s"], r["fill_s"],
             (wl.n_warmup + wl.n_measure) / 1000.0 / max(1e-9, r["replay_s"])),
          flush=True)
    if r["fill_evictions"] == 0:
        print("  %-10s WARNING: no eviction after the prefill; raise --prefill" % kind)
    return r


# ---- the table -------------------------------------------------------------

def ratio(a, b):
    return a / b if b else float("nan")


def mark(ok):
    return "PASS" if ok else "FAIL"


def print_table(rows):
    """rows: (threads, mem, lo, hi, {kind: result})."""
    both = any(len(r[4]) == 2 for r in rows)
    print()
    print("capacity: rc = ringcached, mc = memcached; items = curr_items, bytes = "
          "`bytes` stat, at the end; miss = measured part; RSS = VmRSS at the end")
    hdr1 = "%2s %4s %-8s | %-29s | %-21s | %-27s | %-25s" % (
        "-t", "-m", "values", "items held", "bytes held MiB", "miss ratio", "RSS MiB")
    hdr2 = "%2s %4s %-8s | %8s %8s %6s %4s | %6s %6s %7s | %6s %6s %6s %6s | %6s %6s %6s %4s" % (
        "", "", "", "rc", "mc", "rc/mc", "", "rc", "mc", "rc/mc",
        "rc", "mc", "rc/mc", "", "rc", "mc", "rc/mc", "")
    print(hdr1)
    print(hdr2)
    print("-" * len(hdr2))
    tally = {"items": [0, 0], "miss": [0, 0], "rss": [0, 0]}

    def col(res, kind, key, fmt, scale=1.0):
        return fmt % (res[kind][key] / scale) if kind in res else "-"

    for threads, mem, lo, hi, res in rows:
        cells = [col(res, "ringcached", "items", "%8d"), col(res, "memcached", "items", "%8d")]
        line = "%2d %4d %-8s | %8s %8s " % ((threads, mem, vlabel(lo, hi)) + tuple(cells))
        if len(res) == 2:
            rc, mc = res["ringcached"], res["memcached"]
            target = TARGET_ITEMS_FIXED if lo == hi == 100 else TARGET_ITEMS
            ir, br = ratio(rc["items"], mc["items"]), ratio(rc["bytes"], mc["bytes"])
            mr, rr = ratio(rc["miss"], mc["miss"]), ratio(rc["rss"], mc["rss"])
            oks = {"items": ir >= target, "miss": rc["miss"] < mc["miss"],
                   "rss": rc["rss"] <= TARGET_RSS * mc["rss"]}
            for k, ok in oks.items():
                tally[k][0 if ok else 1] += 1
            line += "%6.2f %4s | %6.1f %6.1f %7.2f | %6.4f %6.4f %6.3f %6s | %6.1f %6.1f %6.2f %4s" % (
                ir, mark(oks["items"]), rc["bytes"] / MIB, mc["bytes"] / MIB, br,
                rc["miss"], mc["miss"], mr, mark(oks["miss"]),
                rc["rss"] / 1024.0, mc["rss"] / 1024.0, rr, mark(oks["rss"]))
        else:
            line += "%6s %4s | %6s %6s %7s | %6s %6s %6s %6s | %6s %6s %6s %4s" % (
                "", "", col(res, "ringcached", "bytes", "%6.1f", MIB),
                col(res, "memcached", "bytes", "%6.1f", MIB), "",
                col(res, "ringcached", "miss", "%6.4f"), col(res, "memcached", "miss", "%6.4f"),
                "", "", col(res, "ringcached", "rss", "%6.1f", 1024.0),
                col(res, "memcached", "rss", "%6.1f", 1024.0), "", "")
        print(line)
    if both:
        print("targets: items held rc >= %.1f x mc with 100 B values, >= %.1f x mc otherwise: "
              "%d PASS %d FAIL; miss ratio rc < mc: %d PASS %d FAIL; RSS rc <= %.2f x mc: "
              "%d PASS %d FAIL"
              % (TARGET_ITEMS_FIXED, TARGET_ITEMS, tally["items"][0], tally["items"][1],
                 tally["miss"][0], tally["miss"][1], TARGET_RSS, tally["rss"][0],
                 tally["rss"][1]))


# ---- main ------------------------------------------------------------------

def parse_args(argv):
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Full sweep: -t %s -m %s --values %s; --quick: -t %s -m %s --values %s."
        % (FULL["threads"], FULL["mem"], FULL["values"], QUICK["threads"], QUICK["mem"],
           QUICK["values"]))
    ap.add_argument("--ringcached", default=os.path.join(ROOT, "build", "ringcached"))
    ap.add_argument("--memcached", default="/usr/bin/memcached")
    ap.add_argument("--quick", action="store_true",
                    help="a subset: -t %s -m %s (flags given explicitly win)"
                    % (QUICK["threads"], QUICK["mem"]))
    ap.add_argument("-t", "--threads", type=lambda s: int_list(s, "-t", 1, 64),
                    help="worker threads, comma-separated [%s]" % FULL["threads"])
    ap.add_argument("-m", "--mem", type=lambda s: int_list(s, "-m", 8, 65536),
                    help="megabytes, comma-separated [%s]" % FULL["mem"])
    ap.add_argument("--values", type=value_specs,
                    help="value lengths: N (fixed) or LO-HI (uniform per key), "
                    "comma-separated [%s]" % FULL["values"])
    ap.add_argument("--only", choices=["ringcached", "memcached"])
    ap.add_argument("--alpha", type=float, default=0.99, help="Zipf exponent [0.99]")
    ap.add_argument("--keys-factor", type=float, default=4.0,
                    help="key space as a multiple of what -m holds [4]")
    ap.add_argument("--prefill", type=float, default=1.5,
                    help="prefill volume as a multiple of -m [1.5]")
    ap.add_argument("--warmup", type=float, default=6.0,
                    help="warm-up requests as a multiple of what -m holds [6]")
    ap.add_argument("--measure", type=float, default=4.0,
                    help="measured requests as a multiple of what -m holds [4]")
    ap.add_argument("--batch", type=int, default=100, help="keys per get [100]")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    if args.threads is None:
        args.threads = int_list(defaults["threads"], "-t", 1, 64)
    if args.mem is None:
        args.mem = int_list(defaults["mem"], "-m", 8, 65536)
    if args.values is None:
        args.values = value_specs(defaults["values"])
    if not 0 < args.alpha <= 3:
        ap.error("--alpha must be in (0, 3]")
    if args.keys_factor < 1.5:
        ap.error("--keys-factor must be at least 1.5 (every cell under memory pressure)")
    if args.prefill < 1.0 or args.warmup < 0 or args.measure <= 0:
        ap.error("need --prefill >= 1, --warmup >= 0, --measure > 0")
    if not 1 <= args.batch <= 1000:
        ap.error("--batch must be in 1..1000")
    args.servers = [(k, p) for k, p in (("ringcached", args.ringcached),
                                        ("memcached", args.memcached))
                    if args.only in (None, k)]
    for kind, path in args.servers:
        if not os.access(path, os.X_OK):
            ap.error("%s not found at %s" % (kind, path))
    return args


def main(argv):
    args = parse_args(argv)
    atexit.register(stop_all)
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)

    t0 = time.monotonic()
    print("capacity: -t %s, -m %s, values %s; Zipf(%.2f), key space %.1f x what -m holds, "
          "prefill %.1f x -m, warm-up %.1f x and measured %.1f x what -m holds, "
          "gets in batches of %d, set on miss"
          % (",".join(map(str, args.threads)), ",".join(map(str, args.mem)),
             ",".join(vlabel(lo, hi) for lo, hi in args.values), args.alpha,
             args.keys_factor, args.prefill, args.warmup, args.measure, args.batch),
          flush=True)
    rows = []
    failed = False
    for mem in args.mem:
        for lo, hi in args.values:
            tw = time.monotonic()
            wl = Workload(mem, lo, hi, args)
            print("-m %d values %s: ~%d items fit, %d keys, %d prefill sets, %d warm-up + "
                  "%d measured gets (stream built in %.1f s)"
                  % (mem, vlabel(lo, hi), wl.capacity, wl.n_keys, len(wl.prefill),
                     wl.n_warmup, wl.n_measure, time.monotonic() - tw), flush=True)
            for threads in args.threads:
                res = {}
                for kind, path in args.servers:
                    try:
                        res[kind] = run_one(kind, path, threads, wl)
                    except (RuntimeError, OSError, EOFError, KeyError) as e:
                        failed = True
                        print("  %-10s -t %d -m %d: FAILED: %s" % (kind, threads, mem, e),
                              flush=True)
                if res:
                    rows.append((threads, mem, lo, hi, res))
            del wl
    rows.sort(key=lambda r: (r[2] != r[3], r[0], r[1]))
    print_table(rows)
    print("total %.0f s" % (time.monotonic() - t0))
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    finally:
        stop_all()
