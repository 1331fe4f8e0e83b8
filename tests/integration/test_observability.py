"""Observability: stats latency, stats shards, the Prometheus endpoint
(-o metrics_port) and its behaviour under hostile HTTP, and the -v / -vv
logs.

Counts are exact: every measured command is counted once (a get once per
key), so after `stats reset` the histogram counts must equal what the test
sent, both in `stats latency` and in /metrics (which shows what workers
published, at most ~100 ms old: the tests poll for it).
"""
import json
import os
import random
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from conftest import Conn, ROOT, THREADS, free_port

PROMTOOL = shutil.which("promtool")
LOADGEN = ROOT / "build" / "rc-loadgen"


def families(c):
    return c.stats("latency")


def run_mix(c, n):
    """n of each family, keys spread over every shard."""
    for i in range(n):
        assert c.cmd("set k%d 0 0 2\r\nv%d\r\n" % (i, i % 10)) == "STORED"
    for i in range(n):
        assert c.get_values("get k%d\r\n" % i)
    for i in range(n):
        assert c.cmd("touch k%d 100\r\n" % i) == "TOUCHED"
    for i in range(n):
        c.cmd("incr n%d 1\r\n" % i)
    for i in range(n):
        assert c.cmd("ms m%d 1\r\nx\r\n" % i) == "HD"
    for i in range(n):
        assert c.cmd("mg m%d v\r\n" % i) == "VA 1"
        assert c.line() == "x"
    for i in range(n):
        assert c.cmd("ma m%d\r\n" % i) in ("CLIENT_ERROR cannot increment or decrement non-numeric value", "NF", "HD")
    for i in range(n):
        assert c.cmd("md m%d\r\n" % i) in ("HD", "NF")
    for i in range(n):
        assert c.cmd("delete k%d\r\n" % i) == "DELETED"


FAMS = ["get", "set", "delete", "incr_decr", "touch", "mg", "ms", "md", "ma"]


@pytest.mark.parametrize("threads", THREADS, ids=lambda t: "t%d" % t)
def test_stats_latency_counts(server_factory, threads):
    s = server_factory(threads=threads)
    c = Conn(s.connect())
    assert c.cmd("stats reset\r\n") == "RESET"
    st = families(c)
    for f in FAMS:
        assert st["%s_count" % f] == "0"
    run_mix(c, 50)
    # a multi-get counts one per key, as cmd_get does
    c.get_values("get k1 k2 k3 k4\r\n")
    st = families(c)
    for f in FAMS:
        want = 54 if f == "get" else 50
        assert int(st["%s_count" % f]) == want, (f, st)
        p = [int(st["%s_%s_us" % (f, q)]) for q in ("p50", "p90", "p99", "p999", "max")]
        assert p == sorted(p), (f, p)
        assert p[-1] < 5_000_000
    # stats reset zeroes them again
    assert c.cmd("stats reset\r\n") == "RESET"
    assert families(c)["get_count"] == "0"
    c.close()


@pytest.mark.parametrize("threads", THREADS, ids=lambda t: "t%d" % t)
def test_stats_latency_within_loadgen(server_factory, threads):
    """rc-loadgen closed loop, -c 50 (scripts/latagree.py prints the
    figures). A request's server time is a part of its client time (from
    after its bytes arrived to its reply being queued), and both count the
    same requests, so every server percentile is at most the client's,
    times the server's bucket rounding (1/16; the client's is upwards)."""
    if not (LOADGEN.is_file() and os.access(LOADGEN, os.X_OK)):
        pytest.skip("build/rc-loadgen not built")
    s = server_factory(threads=threads)
    n = 20000
    p = subprocess.run([str(LOADGEN), "-s", "127.0.0.1:%d" % s.port, "-c", "50", "-n", str(n),
                        "-r", "9:1", "--seed", "1", "-q", "--json"],
                       capture_output=True, text=True, timeout=300)
    r = json.loads(p.stdout)
    assert r["errors"] == 0 and r["requests"] == n, p.stdout + p.stderr
    c = Conn(s.connect())
    st = c.stats("latency")
    c.close()
    for fam in ("get", "set"):
        client = r["latency_us"][fam]
        assert int(st[fam + "_count"]) == client["count"] > 0, fam
        for k in ("p50", "p90", "p99", "p999", "max"):
            assert int(st["%s_%s_us" % (fam, k)]) <= client[k] * (1 + 1 / 16), (fam, k, st, client)
    for fam in FAMS:
        if fam not in ("get", "set"):
            assert st[fam + "_count"] == "0", fam


def test_stats_latency_pipelined_remote(server_factory):
    """A pipeline whose keys live on other shards: counted when the reply
    comes back, once each (lent reads off: every remote get goes to its
    owner)."""
    s = server_factory("-o", "lend=0", threads=4)
    c = Conn(s.connect())
    n = 400
    c.send("".join("set p%d 0 0 1 noreply\r\nx\r\n" % i for i in range(n)))
    c.send("".join("get p%d\r\n" % i for i in range(n)))
    for i in range(n):
        assert c.read_values() == {"p%d" % i: (0, b"x")}
    st = families(c)
    assert int(st["set_count"]) == n and int(st["get_count"]) == n
    sh = c.stats("shards")
    assert sum(int(sh["shard%d_xreq_sent" % i]) for i in range(4)) >= n
    c.close()


def test_stats_shards_move(server_factory):
    s = server_factory(threads=2)
    c = Conn(s.connect())
    a = c.stats("shards")
    assert set(a) == {"shard%d_%s" % (i, k) for i in range(2) for k in
                      ("items", "bytes", "evictions", "hits", "misses",
                       "xreq_sent", "xreq_received", "direct_replies",
                       "direct_partial", "loop_turns", "sends", "poll_yields",
                       "poll_hits", "parked", "borrowed", "lend_waits",
                       "lend_wait_us", "connections")}
    for i in range(100):
        c.cmd("set s%d 0 0 3\r\nabc\r\n" % i)
        c.get_values("get s%d\r\n" % i)
        c.get_values("get none%d\r\n" % i)
    b = c.stats("shards")
    tot = lambda d, k: sum(int(d["shard%d_%s" % (i, k)]) for i in range(2))
    assert tot(b, "items") == 100
    assert tot(b, "hits") - tot(a, "hits") == 100
    assert tot(b, "misses") - tot(a, "misses") == 100
    assert tot(b, "bytes") > tot(a, "bytes")
    assert all(int(b["shard%d_items" % i]) > 0 for i in range(2))
    assert tot(b, "xreq_sent") > tot(a, "xreq_sent")
    # the `stats shards` fan-out itself may be counted as received by the
    # other shard before its sender's counters were copied (one message)
    assert 0 <= tot(b, "xreq_received") - tot(b, "xreq_sent") <= 1
    assert all(int(b["shard%d_loop_turns" % i]) > int(a["shard%d_loop_turns" % i])
               for i in range(2))
    # time is counted only for wake-ups that waited for their lent shard
    assert all(int(b["shard%d_lend_wait_us" % i]) == 0 or
               int(b["shard%d_lend_waits" % i]) > 0 for i in range(2))
    c.close()


@pytest.mark.parametrize("threads", [1, 4], ids=lambda t: "t%d" % t)
def test_stats_shards_poll(server_factory, threads):
    """A get whose remote keys are on several shards is not a direct line:
    its reply waits for the batches' hand-backs, so before the home worker
    sleeps it polls for them (a hit, or yields), at most once a loop pass
    and WORKER_POLL_YIELDS (4) yields each time (lent reads off: a lent
    get leaves nothing in flight). At -t 1 nothing is ever in flight."""
    s = server_factory("-o", "lend=0", threads=threads)
    c = Conn(s.connect())
    keys = ["poll%d" % i for i in range(40)]
    for k in keys:
        assert c.cmd("set %s 0 0 %d\r\n%s\r\n" % (k, len(k), k)) == "STORED"
    tot = lambda d: sum(int(d["shard%d_poll_%s" % (i, k)])
                        for i in range(threads) for k in ("hits", "yields"))
    a = c.stats("shards")
    for _ in range(20):
        assert c.get_values("get %s\r\n" % " ".join(keys)) == {
            k: (0, k.encode()) for k in keys}
    b = c.stats("shards")
    if threads == 1:
        assert tot(b) == tot(a) == 0
    else:
        assert tot(b) - tot(a) >= 1
    for i in range(threads):
        turns = int(b["shard%d_loop_turns" % i])
        assert int(b["shard%d_poll_hits" % i]) <= turns
        assert int(b["shard%d_poll_yields" % i]) <= 4 * turns
    c.close()


@pytest.mark.parametrize("threads", [2, 4], ids=lambda t: "t%d" % t)
def test_connections_dealt_round_robin(server_factory, threads):
    """Connections go round robin over the workers, as memcached's
    dispatcher deals them, whichever worker's accept the kernel completed:
    a burst of connects used to land on one worker."""
    s = server_factory(threads=threads)
    per = 8
    socks = [socket.socket() for _ in range(threads * per)]
    for k in socks:  # a burst of connects, as a client pool opens them
        k.setblocking(False)
        k.connect_ex(s.addr)
    conns = []
    for k in socks:
        k.settimeout(10)
        conns.append(Conn(k))
    for c in conns:
        assert c.cmd("version\r\n").startswith("VERSION ")  # adopted by now
    c = Conn(s.connect())
    want = threads * per + 1
    deadline = time.monotonic() + 5
    while True:  # the readiness probe's connection may still be closing
        sh = c.stats("shards")
        n = [int(sh["shard%d_connections" % i]) for i in range(threads)]
        if sum(n) == want or time.monotonic() > deadline:
            break
    assert sum(n) == want, n
    assert max(n) - min(n) <= 1, n
    for k in conns:
        assert k.cmd("get nothing\r\n") == "END"
        k.close()
    c.close()


# ---- Prometheus ------------------------------------------------------------

def scrape(port, path="/metrics", method="GET"):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), method=method)
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, r.headers, r.read().decode()


def parse(text):
    out = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            continue
        name, value = line.rsplit(" ", 1)
        out[name] = float(value)
    return out


def wait_for(port, pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        m = parse(scrape(port)[2])
        if pred(m) or time.monotonic() > deadline:
            return m
        time.sleep(0.05)


@pytest.fixture
def metrics_server(server_factory):
    port = free_port()
    s = server_factory("-o", "metrics_port=%d" % port, threads=2)
    s.metrics_port = port
    return s


def test_metrics_off_by_default(server_factory):
    s = server_factory(threads=1)
    assert "metrics" not in s.output()


# memcached_exporter's metrics (github.com/prometheus/memcached_exporter,
# pkg/exporter/exporter.go at 17e002c) that /metrics serves: name -> type,
# help, label names. Types are those the exporter gives the values it reads,
# but for uptime: a counter there, which promtool's lint refuses without a
# _total suffix. Its other metrics have no source in ringcached (README,
# Monitoring).
EXPORTER = {
    "memcached_up": ("gauge", "Could the memcached server be reached.", ()),
    "memcached_uptime_seconds": ("gauge", "Number of seconds since the server started.", ()),
    "memcached_time_seconds": ("gauge", "current UNIX time according to the server.", ()),
    "memcached_version": ("gauge", "The version of this memcached server.", ("version",)),
    "memcached_process_user_cpu_seconds_total":
        ("counter", "Accumulated user time for this process.", ()),
    "memcached_process_system_cpu_seconds_total":
        ("counter", "Accumulated system time for this process.", ()),
    "memcached_read_bytes_total":
        ("counter", "Total number of bytes read by this server from network.", ()),
    "memcached_written_bytes_total":
        ("counter", "Total number of bytes sent by this server to network.", ()),
    "memcached_current_connections": ("gauge", "Current number of open connections.", ()),
    "memcached_max_connections": ("gauge", "Maximum number of clients allowed.", ()),
    "memcached_connections_total":
        ("counter", "Total number of connections opened since the server started running.", ()),
    "memcached_connections_rejected_total":
        ("counter", "Total number of connections rejected due to hitting the memcached's -c "
         "limit in maxconns_fast mode.", ()),
    "memcached_connections_listener_disabled_total":
        ("counter", "Number of times that memcached has hit its connections limit and "
         "disabled its listener.", ()),
    "memcached_current_bytes": ("gauge", "Current number of bytes used to store items.", ()),
    "memcached_limit_bytes":
        ("gauge", "Number of bytes this server is allowed to use for storage.", ()),
    "memcached_commands_total":
        ("counter", "Total number of all requests broken down by command (get, set, etc.) "
         "and status.", ("command", "status")),
    "memcached_current_items": ("gauge", "Current number of items stored by this instance.", ()),
    "memcached_items_total":
        ("counter", "Total number of items stored during the life of this instance.", ()),
    "memcached_items_evicted_total":
        ("counter", "Total number of valid items removed from cache to free memory for new "
         "items.", ()),
    "memcached_items_reclaimed_total":
        ("counter", "Total number of times an entry was stored using memory from an expired "
         "entry.", ()),
    "memcached_malloced_bytes":
        ("gauge", "Number of bytes of memory allocated to slab pages.", ()),
    "memcached_slab_current_items":
        ("gauge", "Number of items currently stored in this slab class.", ("slab",)),
    "memcached_slab_items_evicted_total":
        ("counter", "Total number of times an item had to be evicted from the LRU before it "
         "expired.", ("slab",)),
    "memcached_slab_items_reclaimed_total":
        ("counter", "Total number of items reclaimed.", ("slab",)),
    "memcached_slab_items_expired_unfetched_total":
        ("counter", "Total number of valid items evicted from the LRU which were never touched "
         "after being set.", ("slab",)),
    "memcached_slab_items_evicted_unfetched_total":
        ("counter", "Total nmber of items evicted and never fetched.", ("slab",)),
}
# The label values the exporter gives memcached_commands_total.
COMMANDS = {(c, st) for c in ("get", "delete", "incr", "decr", "cas", "touch")
            for st in ("hit", "miss")} | {("cas", "badval"), ("flush", "hit"), ("set", "hit")}


def exposition(text):
    """{family: [type, help, {label-name tuples}, [label dicts]]}."""
    fams = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, help_ = line[7:].split(" ", 1)
            fams.setdefault(name, [None, None, set(), []])[1] = help_
        elif line.startswith("# TYPE "):
            name, type_ = line[7:].split(" ", 1)
            fams.setdefault(name, [None, None, set(), []])[0] = type_
        elif line:
            series = line.rsplit(" ", 1)[0]
            name, _, labels = series.partition("{")
            pairs = dict(kv.split("=", 1) for kv in labels.rstrip("}").split(",")) if labels else {}
            pairs = {k: v.strip('"') for k, v in pairs.items()}
            base = name if name in fams else name.rsplit("_", 1)[0]  # histogram parts
            fams[base][2].add(tuple(sorted(pairs)))
            fams[base][3].append(pairs)
    return fams


def test_metrics_exporter_names(metrics_server):
    body = scrape(metrics_server.metrics_port)[2]
    fams = exposition(body)
    ours = {n for n in fams if n.startswith("memcached_")}
    assert ours == set(EXPORTER), (ours - set(EXPORTER), set(EXPORTER) - ours)
    for name, (type_, help_, labels) in EXPORTER.items():
        assert fams[name][0] == type_, name
        assert fams[name][1] == help_, name
        assert fams[name][2] == {tuple(sorted(labels))}, name
    cmds = {(d["command"], d["status"]) for d in fams["memcached_commands_total"][3]}
    assert cmds == COMMANDS
    # a slab class per shard, numbered from 1 as in `stats items`
    assert sorted(d["slab"] for d in fams["memcached_slab_current_items"][3]) == ["1", "2"]


def test_metrics_promtool_and_names(metrics_server):
    port = metrics_server.metrics_port
    status, headers, body = scrape(port)
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    if not PROMTOOL:
        pytest.skip("promtool not installed (Debian package prometheus)")
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=body.encode(),
                       capture_output=True, timeout=30)
    assert p.returncode == 0, p.stdout.decode() + p.stderr.decode()
    m = parse(body)
    for name in ("memcached_up", "memcached_current_items", "memcached_items_evicted_total",
                 "memcached_current_bytes", "memcached_limit_bytes",
                 "memcached_current_connections", "memcached_connections_total",
                 'memcached_commands_total{command="get",status="hit"}',
                 'memcached_commands_total{command="set",status="hit"}',
                 'ringcache_request_duration_seconds_count{family="get"}',
                 'ringcache_shard_items{shard="1"}'):
        assert name in m, name
    assert m["memcached_up"] == 1
    assert m["memcached_limit_bytes"] == 64 << 20


def test_metrics_counters_and_histograms_move(metrics_server):
    port = metrics_server.metrics_port
    c = Conn(metrics_server.connect())
    before = wait_for(port, lambda m: m["memcached_current_connections"] >= 1)
    n = 120
    run_mix(c, n)
    # counted in cmd_set, not in memcached_commands_total's set
    assert c.cmd("cas k0 0 0 1 1\r\nx\r\n") == "NOT_FOUND"
    want = dict.fromkeys(FAMS, n)
    want["set"] += 1
    key = 'ringcache_request_duration_seconds_count{family="%s"}'
    get_hit = 'memcached_commands_total{command="get",status="hit"}'
    set_hit = 'memcached_commands_total{command="set",status="hit"}'
    cas_miss = 'memcached_commands_total{command="cas",status="miss"}'
    del_hit = 'memcached_commands_total{command="delete",status="hit"}'
    # A cross-shard request is counted by its owner and timed by its home
    # worker, which publish apart: wait for both.
    m = wait_for(port, lambda m: all(m[key % f] == want[f] for f in FAMS)
                 and m[get_hit] - before[get_hit] >= 2 * n
                 and m[set_hit] - before[set_hit] >= 2 * n
                 and m[cas_miss] - before[cas_miss] >= 1 and m[del_hit] >= 2 * n)
    for f in FAMS:
        assert m[key % f] == want[f], f
        # +Inf equals _count; buckets are cumulative
        buckets = sorted(((float(k.split('le="')[1].split('"')[0]), v) for k, v in m.items()
                          if k.startswith('ringcache_request_duration_seconds_bucket{family="%s",' % f)))
        assert buckets[-1] == (float("inf"), want[f])
        vals = [v for _, v in buckets]
        assert vals == sorted(vals)
        assert m['ringcache_request_duration_seconds_sum{family="%s"}' % f] >= 0
    assert m[get_hit] - before[get_hit] == 2 * n  # get and mg
    assert m[set_hit] - before[set_hit] == 2 * n  # set, ms (not cas)
    assert m[cas_miss] - before[cas_miss] == 1
    for name in ("memcached_read_bytes_total", "memcached_written_bytes_total"):
        assert m[name] > before[name], name
    assert m[del_hit] == 2 * n  # delete, md
    assert m["memcached_current_items"] == sum(
        m['ringcache_shard_items{shard="%d"}' % i] for i in range(2))
    assert m["memcached_current_items"] == sum(
        m['memcached_slab_current_items{slab="%d"}' % i] for i in (1, 2))
    c.close()


def test_metrics_404_405(metrics_server):
    port = metrics_server.metrics_port
    for path, method, code in (("/", "GET", 404), ("/metricsx", "GET", 404),
                               ("/metrics", "POST", 405), ("/metrics", "PUT", 405),
                               ("/metrics", "DELETE", 405)):
        with pytest.raises(urllib.error.HTTPError) as e:
            scrape(port, path, method)
        assert e.value.code == code, (path, method)
    status, _, body = scrape(port, "/metrics", "HEAD")
    assert status == 200 and body == ""


def still_serving(s):
    c = Conn(s.connect())
    assert c.cmd("set alive 0 0 2\r\nok\r\n") == "STORED"
    assert c.get_values("get alive\r\n") == {"alive": (0, b"ok")}
    c.close()
    assert scrape(s.metrics_port)[0] == 200


def drain(k):
    """Half-close k and read until the server closes its end (or resets it),
    so the server no longer counts the connection against its limits."""
    try:
        k.shutdown(socket.SHUT_WR)
        while k.recv(65536):
            pass
    except OSError:  # a reset, or the socket's timeout
        pass


def test_metrics_hostile(metrics_server):
    s = metrics_server
    port = s.metrics_port
    scrape(port)
    rss0 = s.rss_kib()
    # a 1 MB header: refused, connection closed, memory bounded
    with socket.create_connection(("127.0.0.1", port), timeout=10) as k:
        try:
            k.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        try:
            reply = k.recv(4096)
        except ConnectionResetError:
            reply = b""
        assert not reply.startswith(b"HTTP/1.1 200"), reply[:100]
        drain(k)
    # random garbage on several connections, each closed by the server before
    # the next part (8 per address is the limit: a garbage connection still
    # open on the server's side would make the scrapes below be refused)
    rnd = random.Random(5)
    for _ in range(20):
        with socket.create_connection(("127.0.0.1", port), timeout=15) as k:
            try:
                k.sendall(bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(1, 5000))))
            except (BrokenPipeError, ConnectionResetError):
                pass
            drain(k)
    # many idle connections beyond the limit: scrapes still get through
    # once they time out or are refused, and the cache keeps serving
    idle = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(6)]
    # a slowloris: one byte a second for a bounded time
    slow = socket.create_connection(("127.0.0.1", port), timeout=10)
    req = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"b" * 100
    for i in range(4):
        slow.send(req[i:i + 1])
        still_serving(s)
        time.sleep(1)
    for k in idle:
        k.close()
    slow.close()
    still_serving(s)
    assert s.alive()
    assert s.rss_kib() - rss0 < 8 * 1024, (rss0, s.rss_kib())


# ---- logs -------------------------------------------------------------------

def test_logs_verbose(server_factory):
    quiet = server_factory(threads=1)
    c = Conn(quiet.connect())
    for i in range(20):
        c.cmd("set q%d 0 0 1\r\nx\r\n" % i)
    c.cmd("bogus\r\n")
    c.close()
    v = server_factory("-v", threads=1)
    vv = server_factory("-vv", threads=1)
    c = Conn(vv.connect())
    assert c.cmd("bogus\r\n") == "ERROR"
    c.cmd("set x 0 0 1\r\nx\r\n")
    c.close()
    # -vv logs the connection's lines as they happen; the quiet server's
    # connection came and went before them
    end = time.monotonic() + 10
    while "client fd" not in vv.output():
        assert time.monotonic() < end, vv.output()
        time.sleep(0.01)  # poll interval
    qo, vo, vvo = quiet.output(), v.output(), vv.output()
    assert "settings:" not in qo and "listening on" not in qo
    assert "bogus" not in qo and "client fd" not in qo
    assert "settings: -t 1" in vo and "listening on 127.0.0.1 port %d" % v.port in vo
    assert "client fd" not in vo
    assert "client fd" in vvo
