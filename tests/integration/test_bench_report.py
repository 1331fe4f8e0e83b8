"""scripts/bench_report.py on results written here: the medians and ratios,
the context-switch table, the instruction table, the bounds printed under a
missed target, the floor target's best rounds, the store floor's figures,
the open-loop targets' paired rounds, the two controls (ringcached run
twice a round in the open loop, the floor in the closed loop), the floor's
open-loop tails against memcached's, results from
before the switch columns, and the exit status on runs with errors.
"""
import os
import subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
REPORT = os.path.join(ROOT, "scripts", "bench_report.py")
OLD = ("threads mode rate workload server round rps p50_us p99_us server_cpu_s requests "
       "errors wrong lg_cpu_s p999_us steal_ms tries").split()
NEW = OLD + ["vcs", "ivcs"]
SPLIT = NEW + ["user_s", "sys_s"]


def row(server, workload, rps, cpu_s, vcs=None, ivcs=None, errors=0, rnd=1,
        user_s=None):
    r = {"threads": "1", "mode": "closed", "rate": "0", "workload": workload,
         "server": server, "round": str(rnd), "rps": str(rps), "p50_us": "40",
         "p99_us": "100", "server_cpu_s": str(cpu_s), "requests": "100000",
         "errors": str(errors), "wrong": "0", "lg_cpu_s": "0.3", "p999_us": "200",
         "steal_ms": "7", "tries": "1"}
    if vcs is not None:
        r.update(vcs=str(vcs), ivcs=str(ivcs))
    if user_s is not None:
        r.update(user_s=str(user_s), sys_s=str(round(cpu_s - user_s, 6)))
    return r


def write(path, cols, rows):
    with open(path, "w") as f:
        f.write("\t".join(cols) + "\n")
        for r in rows:
            f.write("\t".join(r[c] for c in cols) + "\n")


def report(*paths):
    p = subprocess.run(["/usr/bin/python3", REPORT, *map(str, paths)],
                       capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout


def report_rows(tmp_path, cols, rows):
    """The report of these rows; it must succeed."""
    res = tmp_path / "results.tsv"
    write(res, cols, rows)
    rc, out = report(res)
    assert rc == 0, out
    return out


def lines_after(out, head):
    lines = out.splitlines()
    i = next(i for i, l in enumerate(lines) if l.startswith(head))
    return lines[i:]


def test_switches_insns_and_bounds(tmp_path):
    rows = []
    for rnd in (1, 2, 3):
        # P1: ringcached 0.40 s per 100000 requests = 4.0 us, floor 4.0: met.
        rows += [row("ringcached", "get90-100B", 250000, 0.40, 20000, 1000, rnd=rnd),
                 row("memcached", "get90-100B", 200000, 0.60, 90000, 500, rnd=rnd),
                 row("floor", "get90-100B", 260000, 0.40, 100, 0, rnd=rnd)]
        # P16: 0.06 against the floor's 0.04 = 1.5x: missed.
        # The same kernel time (0.035 s), so the gap is user time.
        rows += [row("ringcached", "get90-100B-P16", 2000000, 0.06, 300, 40, rnd=rnd,
                     user_s=0.025),
                 row("memcached", "get90-100B-P16", 300000, 0.45, 6000, 600, rnd=rnd,
                     user_s=0.15),
                 row("floor", "get90-100B-P16", 3000000, 0.04, 100, 0, rnd=rnd,
                     user_s=0.005)]
    for r in rows:
        r.setdefault("user_s", "0.1")
        r.setdefault("sys_s", "0.3")
    res = tmp_path / "results.tsv"
    write(res, SPLIT, rows)
    ins = tmp_path / "insns.tsv"
    ins.write_text("server\tworkload\tinsns\n"
                   "ringcached\tget90-100B\t2200\nmemcached\tget90-100B\t2900\n"
                   "floor\tget90-100B\t640\nringcached\tget90-100B-P16\t1450\n"
                   "memcached\tget90-100B-P16\t2870\nfloor\tget90-100B-P16\t390\n")
    rc, out = report(res, ins)
    assert rc == 0, out
    sw = lines_after(out, "switches/req")
    assert sw[1].split() == ["get90-100B", "|", "0.200", "0.010", "|", "0.900", "0.005",
                             "|", "0.001", "0.000"], sw
    assert sw[2].split()[:4] == ["get90-100B-P16", "|", "0.003", "0.000"], sw
    ir = lines_after(out, "instructions per request")
    assert ir[2].split() == ["get90-100B", "2200", "2900", "640", "0.76", "3.44"], ir
    t = lines_after(out, "targets")
    p1 = next(l for l in t if "get90-100B: server CPU/request 1.000x the floor's" in l)
    assert p1.split()[0] == "met"
    i = next(i for i, l in enumerate(t) if "get90-100B-P16: server CPU/request 1.500x" in l)
    assert t[i].split()[0] == "MISSED"
    b = t[i + 1]
    assert b.split()[0] == "bounds:", t
    assert "rc 0.60 us CPU/req (user 0.25 + sys 0.35), 0.00 vol + 0.00 invol " \
           "switches/req, steal 7 ms, 1450 instructions/req" in b, b
    assert "fl 0.40 us CPU/req (user 0.05 + sys 0.35)" in b, b
    assert "fl 0.40 us CPU/req" in b and "390 instructions/req" in b, b
    # a met target has no bounds line under it
    j = t.index(p1)
    assert not t[j + 1].strip().startswith("bounds:"), t


def test_floor_best_rounds(tmp_path):
    """The floor target's line also gives best round against best round,
    which the medians hide when the servers' rounds fall in different
    modes."""
    rows = []
    for rnd, fl_cpu in ((1, 0.40), (2, 0.40), (3, 0.30)):
        rows += [row("ringcached", "get90-100B-P16", 2000000, 0.044, rnd=rnd),
                 row("memcached", "get90-100B-P16", 300000, 0.45, rnd=rnd),
                 row("floor", "get90-100B-P16", 3000000, fl_cpu / 10, rnd=rnd)]
    t = lines_after(report_rows(tmp_path, OLD, rows), "targets")
    line = next(l for l in t if "get90-100B-P16: server CPU/request" in l)
    assert "1.100x the floor's <= 1.1 (best round against best round 1.467x)" in line, line
    assert line.split()[0] == "met"


def test_floor_control(tmp_path):
    """With the floor run again in each round (the control, server
    "floor-again"): the floor's CPU per request over its second run's in
    the floor target's line, and the second run in the bounds."""
    rows = []
    for rnd, fl2_cpu in ((1, 0.050), (2, 0.030), (3, 0.050)):
        rows += [row("ringcached", "get90-100B-P16", 2000000, 0.048, rnd=rnd),
                 row("memcached", "get90-100B-P16", 300000, 0.45, rnd=rnd),
                 row("floor", "get90-100B-P16", 3000000, 0.040, rnd=rnd),
                 row("floor-again", "get90-100B-P16", 3000000, fl2_cpu, rnd=rnd)]
    t = lines_after(report_rows(tmp_path, OLD, rows), "targets")
    i = next(i for i, l in enumerate(t) if "get90-100B-P16: server CPU/request" in l)
    assert t[i].split()[0] == "MISSED", t
    # 0.40 us against the control's median 0.50: 0.800x
    assert ("1.200x the floor's <= 1.1 (best round against best round 1.200x; "
            "the floor over itself run again 0.800x)") in t[i], t[i]
    assert "fl2 0.50 us CPU/req" in t[i + 1], t[i + 1]


def test_store_floor(tmp_path):
    """With the store floor's runs (server "store"): its table, its multiple
    of the floor and ringcached's of it in the floor target's line, its
    bounds and its instructions."""
    rows = []
    for rnd in (1, 2, 3):
        # CPU per 100000 requests: rc 0.048, floor 0.040, store 0.044:
        # rc 1.200x the floor, store 1.100x the floor, rc 1.091x the store.
        rows += [row("ringcached", "get90-100B-P16", 2000000, 0.048, rnd=rnd, user_s=0.012),
                 row("memcached", "get90-100B-P16", 300000, 0.45, rnd=rnd, user_s=0.15),
                 row("floor", "get90-100B-P16", 3000000, 0.040, rnd=rnd, user_s=0.004),
                 row("store", "get90-100B-P16", 2500000, 0.044, rnd=rnd, user_s=0.008)]
    rows.append(row("ringcached", "set50-100B", 1, 1.0, user_s=0.5))
    rows.append(row("memcached", "set50-100B", 1, 1.0, user_s=0.5))
    for r in rows:
        r.update(vcs="100", ivcs="0")
    res = tmp_path / "results.tsv"
    write(res, SPLIT, rows)
    ins = tmp_path / "insns.tsv"
    ins.write_text("server\tworkload\tinsns\n"
                   "ringcached\tget90-100B-P16\t1100\nmemcached\tget90-100B-P16\t3000\n"
                   "floor\tget90-100B-P16\t400\nstore\tget90-100B-P16\t600\n")
    rc, out = report(res, ins)
    assert rc == 0, out
    sf = lines_after(out, "store floor")
    assert sf[2].split() == ["get90-100B-P16", "2500000", "0.44", "1.10", "1.09"], sf
    assert not sf[3].startswith("set50"), sf  # only workloads it ran
    ir = lines_after(out, "instructions per request")
    assert ir[1].split() == ["workload", "rc", "mc", "fl", "rc/mc", "rc/fl", "sf", "rc/sf"]
    assert ir[2].split() == ["get90-100B-P16", "1100", "3000", "400", "0.37", "2.75",
                             "600", "1.83"], ir
    t = lines_after(out, "targets")
    i = next(i for i, l in enumerate(t) if "get90-100B-P16: server CPU/request 1.200x" in l)
    assert t[i].split()[0] == "MISSED"
    assert "the store floor's 1.100x, ringcached 1.091x the store floor's" in t[i], t[i]
    assert "sf 0.44 us CPU/req (user 0.08 + sys 0.36)" in t[i + 1], t[i + 1]
    assert "600 instructions/req" in t[i + 1], t[i + 1]


def open_row(server, workload, rnd, p99, p999, frac="0.5"):
    """One open-loop run at 50000 req/s offered (FRAC of memcached's)."""
    r = row(server, workload, 50000, 0.6, rnd=rnd)
    r.update(mode=f"open@{frac}", rate="50000", p99_us=str(p99), p999_us=str(p999))
    return r


def test_open_loop_paired_rounds(tmp_path):
    """An open-loop target gives the median ratio and in how many rounds
    ringcached's tail was at most memcached's."""
    rows = [open_row(server, "get90-100B", rnd, p99, p999)
            for rnd, rc99, mc99 in ((1, 300, 200), (2, 150, 200), (3, 500, 200))
            for server, p99, p999 in (("ringcached", rc99, 100), ("memcached", mc99, 200))]
    t = lines_after(report_rows(tmp_path, OLD, rows), "targets")
    p99 = next(l for l in t if "at 0.5x: open-loop p99 ratio" in l)
    assert p99.split()[0] == "MISSED", t
    assert "ratio 1.50 <= 1 (at most memcached's in 1 of 3 rounds)" in p99, p99
    p999 = next(l for l in t if "at 0.5x: open-loop p99.9 ratio" in l)
    assert p999.split()[0] == "met", t
    assert "ratio 0.50 <= 1 (at most memcached's in 3 of 3 rounds)" in p999, p999


def test_open_loop_control(tmp_path):
    """With ringcached run again in each open-loop round (the control,
    server "ringcached-again"): its p99 and p99.9 and ringcached's over
    them in the table, and in each open-loop target's line."""
    rows = [open_row(server, "get90-100B", rnd, p99, p999)
            for rnd, rc99, again99 in ((1, 300, 200), (2, 150, 600), (3, 500, 400))
            for server, p99, p999 in (("ringcached", rc99, 1000), ("memcached", 200, 800),
                                      ("ringcached-again", again99, 2000))]
    out = report_rows(tmp_path, OLD, rows)
    table = lines_after(out, "open loop 0.5")
    assert table[0].split("|")[-1].split() == ["rc2", "p99", "rc/rc2", "rc2", "p999",
                                               "rc/rc2"], table
    # rc p99 median 300 over the control's 400; p99.9 1000 over 2000
    assert table[2].split("|")[-1].split() == ["400", "0.75", "2000", "0.50"], table
    t = lines_after(out, "targets")
    p99 = next(l for l in t if "at 0.5x: open-loop p99 ratio" in l)
    assert p99.split()[0] == "MISSED", t
    assert ("ratio 1.50 <= 1 (at most memcached's in 1 of 3 rounds; ringcached over "
            "itself run again 0.75)") in p99, p99
    p999 = next(l for l in t if "at 0.5x: open-loop p99.9 ratio" in l)
    assert "ratio 1.25 <= 1 (at most memcached's in 0 of 3 rounds; ringcached over " \
        "itself run again 0.50)" in p999, p999
    # the control's own figures are in the bounds, beside the two servers'
    assert "rc2 6.00 us CPU/req" in t[t.index(p99) + 1], t


def test_open_loop_floor_against_memcached(tmp_path):
    """With the floor in the open loop, each open-loop target's line gives
    the floor's tail over memcached's (medians): a server that does no work
    of its own, so above 1 the target measured the host."""
    rows = [open_row(server, "set50-100B", rnd, p99, p999, frac="0.8")
            for rnd, fl99, fl999 in ((1, 100, 3000), (2, 300, 900), (3, 200, 1500))
            for server, p99, p999 in (("ringcached", 150, 1000), ("memcached", 400, 1000),
                                      ("floor", fl99, fl999))]
    t = lines_after(report_rows(tmp_path, OLD, rows), "targets")
    p99 = next(l for l in t if "at 0.8x: open-loop p99 ratio" in l)
    assert p99.split()[0] == "met", t
    # the floor's median p99 200 over memcached's 400
    assert ("ratio 0.38 <= 1 (at most memcached's in 3 of 3 rounds; the floor against "
            "memcached 0.50)") in p99, p99
    p999 = next(l for l in t if "at 0.8x: open-loop p99.9 ratio" in l)
    # ringcached's is at most memcached's; the floor's median 1500 is over it
    assert p999.split()[0] == "met", t
    assert "the floor against memcached 1.50)" in p999, p999


def test_results_without_switch_columns(tmp_path):
    res = tmp_path / "old.tsv"
    write(res, OLD, [row("ringcached", "mget10-100B", 50000, 1.0),
                     row("memcached", "mget10-100B", 60000, 1.2)])
    rc, out = report(res)
    assert rc == 0, out
    assert "switches/req" not in out and "instructions per request" not in out
    t = lines_after(out, "targets")
    miss = next(i for i, l in enumerate(t) if "mget10-100B: req/s ratio 0.83 >= 1" in l)
    assert t[miss].split()[0] == "MISSED"
    assert t[miss + 1].split()[0] == "bounds:"
    assert "rc 10.00 us CPU/req, steal 7 ms; mc 12.00 us CPU/req" in t[miss + 1], t


def test_errors_make_it_fail(tmp_path):
    res = tmp_path / "bad.tsv"
    write(res, NEW, [row("ringcached", "get90-100B", 1, 1.0, 1, 1, errors=3),
                     row("memcached", "get90-100B", 1, 1.0, 1, 1)])
    rc, out = report(res)
    assert rc == 1
    assert "ringcached round 1: 3 errors, 0 wrong values" in out
