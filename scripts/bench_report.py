#!/usr/bin/python3
"""bench_report.py - the tables of scripts/bench.sh.

Reads the tab-separated results bench.sh wrote (one line per run: threads,
mode, rate, workload, server, round, rps, p50_us, p99_us, server_cpu_s,
requests, errors, wrong, lg_cpu_s, p999_us, steal_ms, tries, vcs, ivcs,
user_s, sys_s; mode is closed or open@FRACTION; vcs and ivcs are the
server's voluntary and involuntary context switches during the run, summed
over its threads from /proc/PID/task/*/status; user_s and sys_s split
server_cpu_s into user and kernel time; older files without the last four
are read too), and
optionally the instruction pass's insns.tsv (server, workload, callgrind
instructions per request at -t 1), and prints, for each -t value, tables of medians over the rounds, each with the ratio ringcached /
memcached and, when the run had the network floor (rc-floor, server
"floor"), its figures and the ratio ringcached / floor:

  closed loop: requests/s (and the min-max of the per-round ratio when there
  are 3 or more rounds), p99, and server CPU seconds per million requests;
  the generator's own CPU per million requests is shown last, to check it
  stays below the servers'. rc/fl is ringcached's requests/s and CPU per
  request as a multiple of the floor's: the floor's CPU per request is the
  kernel's TCP cost per message plus the least userspace work.
  open loop, one table per offered fraction of memcached's closed-loop
  requests/s: p50, p99 and p99.9 when all servers are offered the same rate,
  the host's steal time during the kept runs (median, ms; bench.sh retries
  runs with much of it), (with a floor) CPU per request of ringcached
  and the floor at that rate, and (with the control, server
  "ringcached-again": ringcached run a second time in each round) the
  control's p99 and p99.9 and ringcached's over them, rc/rc2: two runs of
  one server that differ only by the host.
  The closed-loop CPU multiple at pipeline 1 also measures batching: a
  faster server wakes for fewer requests at a time, so there the floor can
  cost more per request than a slower server; at the same offered rate the
  arrivals, and so the batches, are the same for both.
  When the run had the store floor (rc-floor --store, server "store": the
  network floor plus what a plain hash table store does), a table of its
  requests/s and CPU per request on its workloads, that CPU as a multiple
  of the floor's (sf/fl: where a store's own work begins) and ringcached's
  as a multiple of it (rc/sf).
  Under each table, context switches per request of each server, voluntary
  (a thread went to sleep, so each is a later wake-up) and involuntary (a
  thread was preempted), and under the last -t, when the instruction pass
  ran, instructions per request of each server and the ratios.

Then the issue's targets, each marked met or MISSED: ringcached's CPU per
request at most 0.8x memcached's on the non-pipelined 100-byte workload;
requests/s at least memcached's everywhere, and closed-loop p99 at most
memcached's on the multi-get workloads; open-loop p99 and p99.9 at most
memcached's everywhere; at -t 1, ringcached's CPU per request at most 1.10x
the floor's on the 100-byte get workloads at pipeline 1 and 16. The median
keeps one disturbed round from moving a figure; the floor targets also print
best round against best round, as each server's rounds can fall in one of
two modes (README) and the medians then pair a fast one with a slow one, and
the store floor's multiple of the floor beside ringcached's and (with the
control, server "floor-again") the floor's CPU per request over its own
second run in the same rounds; the open-loop targets say in how many
paired rounds ringcached's tail was at most memcached's, since the host
moves tails several-fold between rounds, (with the control) rc/rc2,
the ratio the host alone gave in the same rounds, and (with the floor) the
floor's tail over memcached's: a server that does no work of its own, so
above 1 the target measures the host, not the servers. Runs
with errors or wrong values are listed under the tables and make the exit
status 1. Under each MISSED target, what bounds it: the servers' CPU per
request, their context switches per request, the steal of those runs and
(for the floor targets) callgrind's instructions per request, so that a miss
says whether it is work, wake-ups or the host.

Usage: bench_report.py RESULTS.tsv [INSNS.tsv]
"""
import csv
import statistics
import sys
from collections import OrderedDict

A, B, C, D = "ringcached", "memcached", "floor", "store"
E = "ringcached-again"  # the open loop's control: ringcached run twice a round
F = "floor-again"  # the floor targets' control: the floor run twice a round
CPU_TARGET_WORKLOAD = "get90-100B"
CPU_TARGET = 0.8
FLOOR_TARGET_WORKLOADS = ("get90-100B", "get90-100B-P16")
FLOOR_TARGET_THREADS = "1"
FLOOR_TARGET = 1.10


def load(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def load_insns(path):
    """(server, workload) -> instructions per request."""
    return {(r["server"], r["workload"]): float(r["insns"]) for r in load(path)}


def per_mreq(cpu_s, requests):
    return float(cpu_s) * 1e6 / int(requests) if int(requests) else float("nan")


def ratio(a, b):
    return a / b if b else float("nan")


def med(runs, field, fn=float):
    return statistics.median(fn(r[field]) for r in runs)


def group(rows):
    """threads -> mode -> workload -> server -> runs, in first-seen order."""
    table = OrderedDict()
    for r in rows:
        (table.setdefault(r["threads"], OrderedDict())
              .setdefault(r["mode"], OrderedDict())
              .setdefault(r["workload"], {A: [], B: [], C: [], D: [], E: [], F: []})
              .setdefault(r["server"], []).append(r))
    return table


def has_floor(workloads):
    return any(s[C] for s in workloads.values())


def cpu_per_mreq(runs):
    return statistics.median(per_mreq(r["server_cpu_s"], r["requests"]) for r in runs)


def switches(runs):
    """Medians of (voluntary, involuntary) context switches per request, or
    None for results written before bench.sh counted them."""
    if not runs or not runs[0].get("vcs"):
        return None
    return tuple(statistics.median(per_mreq(r[k], r["requests"]) / 1e6 for r in runs)
                 for k in ("vcs", "ivcs"))


SHORT = ((A, "rc"), (B, "mc"), (C, "fl"), (D, "sf"), (E, "rc2"), (F, "fl2"))


def switch_table(workloads):
    """Context switches per request of each server, under a results table."""
    servers = [(k, n) for k, n in SHORT if any(switches(s[k]) for s in workloads.values())]
    if not servers:
        return
    head = "{:<15}" + " | {:>8} {:>8}" * len(servers)
    print(head.format("switches/req", *[f"{n} {w}" for _, n in servers for w in ("vol", "invol")]))
    for name, s in workloads.items():
        cells = []
        for k, _ in servers:
            sw = switches(s[k])
            cells += [f"{x:.3f}" for x in sw] if sw else ["-", "-"]
        print(head.format(name, *cells))


def bounds(s, insns=None):
    """What bounds a missed target: per server, CPU per request (split into
    user and kernel time when the results have it: against the floor, the
    kernel's part is the network's cost and the user part the server's own
    work), context switches per request, steal, and callgrind's
    instructions per request when insns ({server: instructions}) has them."""
    parts = []
    for k, n in SHORT:
        if not s[k]:
            continue
        p = f"{n} {cpu_per_mreq(s[k]):.2f} us CPU/req"
        if s[k][0].get("user_s"):
            user, kern = (statistics.median(per_mreq(r[c], r["requests"]) for r in s[k])
                          for c in ("user_s", "sys_s"))
            p += f" (user {user:.2f} + sys {kern:.2f})"
        sw = switches(s[k])
        if sw:
            p += f", {sw[0]:.2f} vol + {sw[1]:.2f} invol switches/req"
        p += f", steal {med(s[k], 'steal_ms'):.0f} ms"
        if insns and k in insns:
            p += f", {insns[k]:.0f} instructions/req"
        parts.append(p)
    return "; ".join(parts)


def closed_table(workloads, targets, t, insns):
    """The old columns, then (with a floor) floor req/s, rc/fl, floor CPU, rc/fl."""
    fl = has_floor(workloads)
    head = ("{:<15} {:>9} {:>9} {:>6} {:>10}" + (" {:>9} {:>6}" if fl else "") +
            " | {:>7} {:>7} {:>6} | {:>7} {:>7} {:>6}" +
            (" {:>7} {:>6}" if fl else "") + " | {:>7}")
    num = ("{:<15} {:>9.0f} {:>9.0f} {:>6.2f} {:>10}" + (" {:>9.0f} {:>6.2f}" if fl else "") +
           " | {:>7.0f} {:>7.0f} {:>6.2f} | {:>7.2f} {:>7.2f} {:>6.2f}" +
           (" {:>7.2f} {:>6.2f}" if fl else "") + " | {:>7.2f}")
    cols = [["closed loop", "rc req/s", "mc req/s", "rc/mc", "(min-max)"],
            ["rc p99", "mc p99", "rc/mc", "rc cpu", "mc cpu", "rc/mc"], ["gen cpu"]]
    units = [["", "", "", "", ""], ["us", "us", "", "s/Mreq", "s/Mreq", ""], ["s/Mreq"]]
    if fl:
        cols[0] += ["fl req/s", "rc/fl"]
        cols[1] += ["fl cpu", "rc/fl"]
        units[0] += ["", ""]
        units[1] += ["s/Mreq", ""]
    print(head.format(*cols[0], *cols[1], *cols[2]))
    print(head.format(*units[0], *units[1], *units[2]))
    for name, s in workloads.items():
        if not s[A] or not s[B]:
            continue
        rps = {k: med(s[k], "rps") for k in (A, B)}
        p99 = {k: med(s[k], "p99_us") for k in (A, B)}
        cpu = {k: cpu_per_mreq(s[k]) for k in (A, B)}
        gen = statistics.median(per_mreq(r["lg_cpu_s"], r["requests"]) for r in s[A] + s[B])
        pairs = [ratio(float(a["rps"]), float(b["rps"])) for a, b in zip(s[A], s[B])]
        spread = f"{min(pairs):.2f}-{max(pairs):.2f}" if len(pairs) >= 3 else ""
        r_rps, r_cpu = ratio(rps[A], rps[B]), ratio(cpu[A], cpu[B])
        first = [name, rps[A], rps[B], r_rps, spread]
        second = [p99[A], p99[B], ratio(p99[A], p99[B]), cpu[A], cpu[B], r_cpu]
        f_cpu = None
        if fl:
            f_rps = med(s[C], "rps") if s[C] else float("nan")
            f_cpu = cpu_per_mreq(s[C]) if s[C] else float("nan")
            first += [f_rps, ratio(rps[A], f_rps)]
            second += [f_cpu, ratio(cpu[A], f_cpu)]
        print(num.format(*first, *second, gen))
        why = bounds(s)
        targets.append((f"-t {t} {name}: req/s ratio {r_rps:.2f} >= 1", r_rps >= 1.0, why))
        if name.startswith("mget"):
            r99 = ratio(p99[A], p99[B])
            targets.append((f"-t {t} {name}: closed-loop p99 ratio {r99:.2f} <= 1", r99 <= 1.0,
                            why))
        if name == CPU_TARGET_WORKLOAD:
            targets.append((f"-t {t} {name}: server CPU/request ratio {r_cpu:.3f} "
                            f"<= {CPU_TARGET}", r_cpu <= CPU_TARGET, why))
        if f_cpu and t == FLOOR_TARGET_THREADS and name in FLOOR_TARGET_WORKLOADS:
            m = ratio(cpu[A], f_cpu)
            # Each server's rounds fall in one of two modes on the VM
            # (README), so the medians can pair a fast one with a slow
            # one: the best rounds, side by side, say which it was.
            best = ratio(min(per_mreq(r["server_cpu_s"], r["requests"]) for r in s[A]),
                         min(per_mreq(r["server_cpu_s"], r["requests"]) for r in s[C]))
            ir = {k: v for (k, w), v in insns.items() if w == name}
            more = ""
            if s[D]:
                sf = cpu_per_mreq(s[D])
                more = (f"; the store floor's {ratio(sf, f_cpu):.3f}x, ringcached "
                        f"{ratio(cpu[A], sf):.3f}x the store floor's")
            if s[F]:
                # The control: the floor over itself, run again in the
                # same rounds, is how far the host alone moved the figure.
                more += (f"; the floor over itself run again "
                         f"{ratio(f_cpu, cpu_per_mreq(s[F])):.3f}x")
            targets.append((f"-t {t} {name}: server CPU/request {m:.3f}x the floor's "
                            f"<= {FLOOR_TARGET} (best round against best round "
                            f"{best:.3f}x{more})", m <= FLOOR_TARGET, bounds(s, ir)))
    store_table(workloads)
    switch_table(workloads)


def store_table(workloads):
    """The store floor's figures on its workloads, under the closed-loop table."""
    rows = [(n, s) for n, s in workloads.items() if s[A] and s[C] and s[D]]
    if not rows:
        return
    head = "{:<15} {:>9} {:>7} {:>6} {:>6}"
    print(head.format("store floor", "sf req/s", "sf cpu", "sf/fl", "rc/sf"))
    print(head.format("", "", "s/Mreq", "", ""))
    for name, s in rows:
        sf = cpu_per_mreq(s[D])
        print(head.format(name, f"{med(s[D], 'rps'):.0f}", f"{sf:.2f}",
                          f"{ratio(sf, cpu_per_mreq(s[C])):.2f}",
                          f"{ratio(cpu_per_mreq(s[A]), sf):.2f}"))


def open_table(mode, workloads, targets, t):
    """The servers' latencies at one offered rate; with a floor, its
    latencies and CPU per request; with the control (E), ringcached's second
    run's p99 and p99.9 and ringcached's first over it (rc/rc2)."""
    fl = has_floor(workloads)
    aa = any(s[E] for s in workloads.values())
    frac = mode.partition("@")[2] or "?"
    head = ("{:<15} {:>9} | {:>9} {:>9} | {:>7} {:>7} {:>6} | {:>7} {:>7} {:>6} | "
            "{:>7} {:>7} {:>6} | {:>5} {:>5}" + (" | {:>7} {:>7} {:>7} | {:>7} {:>7} {:>6}" if fl else "") +
            (" | {:>7} {:>6} {:>8} {:>6}" if aa else ""))
    line = ("{:<15} {:>9} | {:>9.0f} {:>9.0f} | {:>7.0f} {:>7.0f} {:>6.2f} | "
            "{:>7.0f} {:>7.0f} {:>6.2f} | {:>7.0f} {:>7.0f} {:>6.2f} | {:>5.0f} {:>5.0f}" +
            (" | {:>7.0f} {:>7.0f} {:>7.0f} | {:>7.2f} {:>7.2f} {:>6.2f}" if fl else "") +
            (" | {:>7.0f} {:>6.2f} {:>8.0f} {:>6.2f}" if aa else ""))
    print(head.format(f"open loop {frac}", "offered", "rc req/s", "mc req/s",
                      "rc p50", "mc p50", "rc/mc", "rc p99", "mc p99", "rc/mc",
                      "rc p999", "mc p999", "rc/mc", "rc st", "mc st",
                      *(["fl p50", "fl p99", "fl p999", "rc cpu", "fl cpu", "rc/fl"]
                        if fl else []),
                      *(["rc2 p99", "rc/rc2", "rc2 p999", "rc/rc2"] if aa else [])))
    print(head.format("", "req/s", "", "", "us", "us", "", "us", "us", "", "us", "us", "",
                      "ms", "ms",
                      *(["us", "us", "us", "s/Mreq", "s/Mreq", ""] if fl else []),
                      *(["us", "", "us", ""] if aa else [])))
    for name, s in workloads.items():
        if not s[A] or not s[B]:
            continue
        rps = {k: med(s[k], "rps") for k in (A, B)}
        p = {(k, q): med(s[k], q) for k in (A, B) for q in ("p50_us", "p99_us", "p999_us")}
        r = {q: ratio(p[A, q], p[B, q]) for q in ("p50_us", "p99_us", "p999_us")}
        extra = []
        if fl:
            extra = ([med(s[C], q) for q in ("p50_us", "p99_us", "p999_us")] if s[C]
                     else [float("nan")] * 3)
            rc_cpu = cpu_per_mreq(s[A])
            fl_cpu = cpu_per_mreq(s[C]) if s[C] else float("nan")
            extra += [rc_cpu, fl_cpu, ratio(rc_cpu, fl_cpu)]
        again = {q: med(s[E], q) if s[E] else float("nan") for q in ("p99_us", "p999_us")}
        if aa:
            for q in ("p99_us", "p999_us"):
                extra += [again[q], ratio(p[A, q], again[q])]
        cells = []
        for q in ("p50_us", "p99_us", "p999_us"):
            cells += [p[A, q], p[B, q], r[q]]
        steal = [med(s[k], "steal_ms") for k in (A, B)]
        print(line.format(name, s[A][0]["rate"], rps[A], rps[B], *cells, *steal, *extra))
        for q, label in (("p99_us", "p99"), ("p999_us", "p99.9")):
            # Round by round: how often ringcached's was at most
            # memcached's, which says whether a median's miss is one
            # server's or the host's (whose tails move several-fold
            # between rounds).
            pairs = [float(a[q]) <= float(b[q]) for a, b in zip(s[A], s[B])]
            # The control: ringcached over itself, run again in the same
            # rounds, is how far the host alone moved this figure.
            ctl = (f"; ringcached over itself run again {ratio(p[A, q], again[q]):.2f}"
                   if s[E] else "")
            # The floor, which does nothing, against memcached: above 1,
            # a server without any work of its own would miss this target
            # too, so the figure is the host's (scheduling, steal) and not
            # a server's.
            if s[C]:
                ctl += (f"; the floor against memcached "
                        f"{ratio(med(s[C], q), p[B, q]):.2f}")
            targets.append((f"-t {t} {name} at {frac}x: open-loop {label} ratio {r[q]:.2f} <= 1 "
                            f"(at most memcached's in {sum(pairs)} of {len(pairs)} rounds"
                            f"{ctl})", r[q] <= 1.0, bounds(s)))
    switch_table(workloads)


def insns_table(insns):
    names = list(OrderedDict.fromkeys(w for _, w in insns))
    print("instructions per request (callgrind, -t 1, user space of all the server's threads)")
    sf = any(k == D for k, _ in insns)
    head = "{:<15} {:>9} {:>9} {:>9} {:>6} {:>6}" + (" {:>9} {:>6}" if sf else "")
    print(head.format("workload", "rc", "mc", "fl", "rc/mc", "rc/fl",
                      *(["sf", "rc/sf"] if sf else [])))
    for w in names:
        v = [insns.get((k, w), float("nan")) for k in (A, B, C, D)]
        extra = [f"{v[3]:.0f}", f"{ratio(v[0], v[3]):.2f}"] if sf else []
        print(head.format(w, *[f"{x:.0f}" for x in v[:3]], f"{ratio(v[0], v[1]):.2f}",
                          f"{ratio(v[0], v[2]):.2f}", *extra))


def main():
    if len(sys.argv) not in (2, 3):
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    rows = load(sys.argv[1])
    insns = load_insns(sys.argv[2]) if len(sys.argv) == 3 else {}
    if not rows:
        print("bench_report.py: no results", file=sys.stderr)
        return 1
    bad = [r for r in rows if int(r["errors"]) or int(r["wrong"])]
    targets = []
    for t, modes in group(rows).items():
        nrounds = max(len(s[A]) for m in modes.values() for s in m.values())
        print(f"-t {t}: median of {nrounds} round(s); rc/mc = ringcached / memcached, "
              f"rc/fl = ringcached / floor (rc-floor, one thread)")
        if "closed" in modes:
            closed_table(modes["closed"], targets, t, insns)
        for mode, workloads in modes.items():
            if mode.startswith("open"):
                print()
                open_table(mode, workloads, targets, t)
        print()
    if insns:
        insns_table(insns)
        print()
    print("targets (reported, not asserted):")
    for what, met, why in targets:
        print(f"  {'met    ' if met else 'MISSED '} {what}")
        if not met:
            print(f"          bounds: {why}")
    if bad:
        print("\nruns with errors or wrong values (figures above include them):")
        for r in bad:
            print(f"  -t {r['threads']} {r['mode']} {r['workload']} {r['server']} "
                  f"round {r['round']}: {r['errors']} errors, {r['wrong']} wrong values")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
