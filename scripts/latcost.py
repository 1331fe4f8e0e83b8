#!/usr/bin/env python3
"""The cost of the latency histograms: ringcached against the same build
with -DRINGCACHE_NO_LATENCY (net/worker.h: no clock read, no recording),
on the same fixed request streams (rc-loadgen with a fixed seed and request
count, -c 50, every key space prefilled first and not measured).

1. Instructions (valgrind --tool=callgrind, every thread of the daemon,
   user space only: system calls are not counted, and under valgrind
   clock_gettime is one), less the shard's background work (the calls to
   shard_tick: sweeps and compaction that run on a timer and in bursts, so
   that one stream's window may hold more of them than another's, about a
   fifth of the total under valgrind; the latency code never runs inside
   it): counters zeroed before each stream and dumped
   after it with callgrind_control, every stream sent once unmeasured
   first (the first streams after a prefill also pay for background work
   such as an index rebuild); -c 1, so that every pass sees the same
   requests; -t 1, because with several workers the
   daemon hardly moves under valgrind (a worker waiting in io_uring_enter
   keeps the others from running). Repeatable to a fraction of a percent.
2. CPU time (utime + stime from /proc/PID/stat before and after each
   stream): both daemons running side by side, -t 2 (the cross-shard path
   included), the streams sent to one then the other, the order flipped
   every round (A B, B A, ...). On shared cores a single figure moves by a
   few percent; the median of the per-round ratios is printed with their
   range.

A ratio is with / without. Exits 1 when an instruction ratio exceeds
--bound (1.02), 0 otherwise; the CPU ratios are printed, not judged.

    scripts/latcost.py --with build/ringcached --without build/nolat/ringcached
    make latcost    (builds both, then runs this)
"""
import argparse
import glob
import os
import re
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rcserver import Daemon, loadgen  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = ["-v", 100, "-k", 100000, "--key-prefix", "lc:"]
WORKLOADS = {
    "get90-P1": ["-r", "9:1", "-P", 1],
    "get90-P16": ["-r", "9:1", "-P", 16],
    "set50-P1": ["-r", "1:1", "-P", 1],
    "set50-P16": ["-r", "1:1", "-P", 16],
}


def stream(args, d, workload, n, conns):
    r = loadgen(args.loadgen, d.server,
                ["-c", conns, "-n", n, "--seed", 1, *KEYS, *WORKLOADS[workload]])
    if r["requests"] != n or r["errors"]:
        raise RuntimeError("%s: %d of %d requests, %d errors"
                           % (workload, r["requests"], n, r["errors"]))
    return r


def prefill(args, d):
    loadgen(args.loadgen, d.server, ["--prefill", "-n", 0, *KEYS])


def callgrind_cost(out):
    """Instructions in the newest dump of callgrind output `out`, less
    those inside shard_tick (the cost lines of the calls to it)."""
    dumps = glob.glob(out + ".*")
    newest = max(dumps, key=lambda p: int(p.rsplit(".", 1)[1]))
    names, callee, in_call = {}, None, False
    total = background = None
    with open(newest) as f:
        for line in f:
            if in_call:
                if callee == "shard_tick":
                    background = (background or 0) + int(line.split()[-1])
                in_call = False
            elif line.startswith(("fn=(", "cfn=(")):
                m = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line)
                if m.group(2):
                    names[m.group(1)] = m.group(2).strip()
                if line.startswith("cfn="):
                    callee = names.get(m.group(1))
            elif line.startswith("calls="):
                in_call = True
            elif line.startswith(("summary:", "totals:")):
                total = int(line.split()[1])
    if total is None or background is None:
        raise RuntimeError("no totals or no shard_tick in " + newest)
    return total - background


def loop_turns(d):
    return sum(int(v) for k, v in d.stats("shards").items() if k.endswith("_loop_turns"))


def instructions(args, binary):
    """(instructions, loop passes) per request of each workload, one daemon
    for all."""
    with tempfile.TemporaryDirectory(prefix="rc-latcost-") as tmp:
        out = os.path.join(tmp, "cg.out")
        d = Daemon(binary, "-t", 1, "-m", 256, "-U", 0,
                   wrapper=["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out])
        try:
            prefill(args, d)
            for w in WORKLOADS:  # the background work a prefill leaves
                stream(args, d, w, args.cg_requests, args.cg_conns)
            ir = {}
            for w in WORKLOADS:
                ctl = ["callgrind_control", str(d.proc.pid)]
                turns = loop_turns(d)
                subprocess.run(ctl[:1] + ["-z"] + ctl[1:], check=True, capture_output=True)
                stream(args, d, w, args.cg_requests, args.cg_conns)
                subprocess.run(ctl[:1] + ["-d"] + ctl[1:], check=True, capture_output=True)
                ir[w] = (callgrind_cost(out) / args.cg_requests,
                         (loop_turns(d) - turns) / args.cg_requests)
        finally:
            d.stop()
    return ir


def cpu(args):
    """CPU us per request: {build: {workload: [per round]}}."""
    builds = {"without": args.without, "with": args.with_}
    ds = {b: Daemon(p, "-t", 2, "-m", 256, "-U", 0) for b, p in builds.items()}
    res = {b: {w: [] for w in WORKLOADS} for b in builds}
    try:
        for d in ds.values():
            prefill(args, d)
        for rnd in range(args.rounds):
            order = list(builds) if rnd % 2 == 0 else list(builds)[::-1]
            for w in WORKLOADS:
                for b in order:
                    before = ds[b].cpu_seconds()
                    stream(args, ds[b], w, args.cpu_requests, 50)
                    res[b][w].append((ds[b].cpu_seconds() - before) * 1e6 / args.cpu_requests)
    finally:
        for d in ds.values():
            d.stop()
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--with", dest="with_", default=os.path.join(ROOT, "build/ringcached"))
    ap.add_argument("--without", default=os.path.join(ROOT, "build/nolat/ringcached"))
    ap.add_argument("--loadgen", default=os.path.join(ROOT, "build/rc-loadgen"))
    ap.add_argument("--cg-requests", type=int, default=40000)
    ap.add_argument("--cg-reps", type=int, default=2, help="callgrind runs per build")
    ap.add_argument("--cg-conns", type=int, default=1)
    ap.add_argument("--cpu-requests", type=int, default=300000)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--bound", type=float, default=1.02)
    ap.add_argument("--no-cpu", action="store_true", help="instructions only")
    args = ap.parse_args()

    ir = {"without": [], "with": []}
    for _ in range(args.cg_reps):
        for b, p in (("without", args.without), ("with", args.with_)):
            ir[b].append(instructions(args, p))
    print("instructions per request (callgrind, -t 1, -c %d, %d requests, %d runs each,"
          " A B A B; loop passes per request in brackets)"
          % (args.cg_conns, args.cg_requests, args.cg_reps))
    print("%-10s %30s %30s %7s" % ("workload", "without", "with", "ratio"))
    over = False
    for w in WORKLOADS:
        a = [r[w] for r in ir["without"]]
        b = [r[w] for r in ir["with"]]
        ratio = statistics.median(x[0] for x in b) / statistics.median(x[0] for x in a)
        over |= ratio > args.bound
        print("%-10s %30s %30s %7.4f" % (
            w, " ".join("%.1f (%.2f)" % x for x in a), " ".join("%.1f (%.2f)" % x for x in b),
            ratio))
    if not args.no_cpu:
        res = cpu(args)
        print("\nCPU us per request (/proc/PID/stat, -t 2, %d requests, %d rounds)"
              % (args.cpu_requests, args.rounds))
        print("%-10s %9s %9s %7s  %s" % ("workload", "without", "with", "ratio",
                                         "per-round ratios"))
        for w in WORKLOADS:
            rs = [b / a for a, b in zip(res["without"][w], res["with"][w])]
            print("%-10s %9.2f %9.2f %7.3f  %s" % (
                w, statistics.median(res["without"][w]), statistics.median(res["with"][w]),
                statistics.median(rs), " ".join("%.3f" % r for r in rs)))
    if over:
        print("\nan instruction ratio exceeds %.2f" % args.bound)
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main())
