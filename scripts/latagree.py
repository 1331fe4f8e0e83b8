#!/usr/bin/env python3
"""`stats latency` against rc-loadgen's percentiles for the same run.

Starts a fresh ringcached (-t 2 by default) on a free loopback port, fills
the key space (rc-loadgen --prefill), zeroes the histograms (stats reset),
runs rc-loadgen closed loop (-c 50, a fixed number of requests, 9:1 gets to
sets), then reads `stats latency` and prints, per family (get, set), the
count and p50 / p90 / p99 / p99.9 / max of both, and client / server.

The server's time is a part of the client's for every request (it starts
after the request's bytes have arrived and ends when its reply is queued),
so each server percentile is at most the client's (times 1.0625, the
server's bucket rounding); how much smaller it is, is the time a request
spends outside the server's loop pass: in the kernel, on loopback, queued
in the socket, and in the generator.

    scripts/latagree.py [--requests N] [--conns C] [--threads T] [--pipeline P]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rcserver import Daemon, loadgen  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PCTS = [("p50", "p50"), ("p90", "p90"), ("p99", "p99"), ("p999", "p99.9"), ("max", "max")]


def run(binary, lg, requests, conns, threads, pipeline):
    """(server, client): {family: {count, p50, ..., max}} in microseconds."""
    keys = ["-k", 100000, "-v", 100]
    d = Daemon(binary, "-t", threads, "-m", 256, "-U", 0)
    try:
        loadgen(lg, d.server, ["--prefill", "-n", 0, *keys])
        if d.command("stats reset") != "RESET":
            raise RuntimeError("stats reset failed")
        r = loadgen(lg, d.server, ["-c", conns, "-P", pipeline, "-n", requests,
                                   "-r", "9:1", "--seed", 1, *keys])
        st = d.stats("latency")
    finally:
        rc = d.stop()
    if rc != 0:
        raise RuntimeError("ringcached exited %s" % rc)
    if r["errors"] or r["requests"] != requests:
        raise RuntimeError("rc-loadgen: %d of %d requests, %d errors"
                           % (r["requests"], requests, r["errors"]))
    server = {f: {"count": int(st[f + "_count"]),
                  **{k: float(st["%s_%s_us" % (f, k)]) for k, _ in PCTS}}
              for f in ("get", "set")}
    client = {f: {"count": r["latency_us"][f]["count"],
                  **{k: r["latency_us"][f][k] for k, _ in PCTS}}
              for f in ("get", "set")}
    return server, client


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "build/ringcached"))
    ap.add_argument("--loadgen", default=os.path.join(ROOT, "build/rc-loadgen"))
    ap.add_argument("--requests", type=int, default=200000)
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pipeline", type=int, default=1)
    a = ap.parse_args()
    server, client = run(a.bin, a.loadgen, a.requests, a.conns, a.threads, a.pipeline)
    print("closed loop, -t %d -c %d -P %d, %d requests (9:1); microseconds"
          % (a.threads, a.conns, a.pipeline, a.requests))
    print("%-4s %-7s %8s %10s %10s %10s %10s %10s"
          % ("fam", "", "count", *[n for _, n in PCTS]))
    for f in ("get", "set"):
        for who, v in (("server", server[f]), ("client", client[f])):
            print("%-4s %-7s %8d %10.1f %10.1f %10.1f %10.1f %10.1f"
                  % (f, who, v["count"], *[v[k] for k, _ in PCTS]))
        print("%-4s %-7s %8s %10s %10s %10s %10s %10s" % (
            f, "c/s", "", *["%.1f" % (client[f][k] / server[f][k]) if server[f][k] else "-"
                            for k, _ in PCTS]))


if __name__ == "__main__":
    sys.exit(main())
