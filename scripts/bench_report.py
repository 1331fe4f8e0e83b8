#!/usr/bin/python3
"""bench_report.py - the table of scripts/bench.sh.

Reads the tab-separated results bench.sh wrote (one line per run: threads,
workload, server, round, rps, p99_us, server_cpu_s, requests, errors, wrong,
lg_cpu_s) and prints, for each -t value, one line per workload with the
median over the rounds of each server's requests/s, p99 and server CPU
seconds per million requests, and the ratios ringcached / memcached. The
median keeps one disturbed round from moving the figure; the spread of the
rounds is shown as min-max of the ratio of requests/s when there are 3 or
more rounds. The generator's own CPU per million requests (median over all
runs of the workload) is shown last, to check it stays below the servers'.
Runs with errors or wrong values are flagged under the table.

Usage: bench_report.py RESULTS.tsv
"""
import csv
import statistics
import sys
from collections import OrderedDict

A, B = "ringcached", "memcached"


def load(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def per_mreq(cpu_s, requests):
    return float(cpu_s) * 1e6 / int(requests) if int(requests) else float("nan")


def ratio(a, b):
    return a / b if b else float("nan")


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    rows = load(sys.argv[1])
    if not rows:
        print("bench_report.py: no results", file=sys.stderr)
        return 1
    # threads -> workload -> server -> list of runs, in first-seen order
    table = OrderedDict()
    for r in rows:
        table.setdefault(r["threads"], OrderedDict()).setdefault(
            r["workload"], {A: [], B: []}).setdefault(r["server"], []).append(r)
    bad = [r for r in rows if int(r["errors"]) or int(r["wrong"])]

    head = ("{:<15} {:>10} {:>10} {:>6} {:>11} | {:>8} {:>8} {:>6} | "
            "{:>8} {:>8} {:>6} | {:>8}")
    line = ("{:<15} {:>10.0f} {:>10.0f} {:>6.2f} {:>11} | {:>8.0f} {:>8.0f} {:>6.2f} | "
            "{:>8.2f} {:>8.2f} {:>6.2f} | {:>8.2f}")
    for t, workloads in table.items():
        nrounds = max(len(s[A]) for s in workloads.values())
        print(f"-t {t}: median of {nrounds} round(s); ratio = ringcached / memcached")
        print(head.format("workload", "rc req/s", "mc req/s", "ratio", "(min-max)",
                          "rc p99", "mc p99", "ratio",
                          "rc cpu", "mc cpu", "ratio", "gen cpu"))
        print(head.format("", "", "", "", "", "us", "us", "", "s/Mreq", "s/Mreq", "",
                          "s/Mreq"))
        for name, s in workloads.items():
            if not s[A] or not s[B]:
                continue
            rps = {k: [float(r["rps"]) for r in s[k]] for k in (A, B)}
            p99 = {k: statistics.median(float(r["p99_us"]) for r in s[k]) for k in (A, B)}
            cpu = {k: statistics.median(per_mreq(r["server_cpu_s"], r["requests"])
                                        for r in s[k]) for k in (A, B)}
            gen = statistics.median(per_mreq(r["lg_cpu_s"], r["requests"])
                                    for r in s[A] + s[B])
            med = {k: statistics.median(v) for k, v in rps.items()}
            pairs = [ratio(a, b) for a, b in zip(rps[A], rps[B])]
            spread = (f"{min(pairs):.2f}-{max(pairs):.2f}" if len(pairs) >= 3 else "")
            print(line.format(name, med[A], med[B], ratio(med[A], med[B]), spread,
                              p99[A], p99[B], ratio(p99[A], p99[B]),
                              cpu[A], cpu[B], ratio(cpu[A], cpu[B]), gen))
        print()
    if bad:
        print("runs with errors or wrong values (figures above include them):")
        for r in bad:
            print(f"  -t {r['threads']} {r['workload']} {r['server']} round {r['round']}: "
                  f"{r['errors']} errors, {r['wrong']} wrong values")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
