"""memcached's edges, checked against memcached 1.6.18 in the same run.

- Multi-gets of any length stream: 10 000 and 100 000 keys in a pipeline
  with other commands, at -t 1 and -t 4, answered in order with the
  connection's memory bounded (sampled from another connection while the
  get runs); a get line is answered while it is still arriving.
- Parser edges: long lines, HTTP, verbosity, storage commands missing an
  argument (memcached's t/cas.t), cache_memlimit's replies, shutdown with
  and without -A: the same bytes as memcached for the same input.
- cache_memlimit shrinks the cache at run time; stats items / slabs /
  detail / cachedump / conns and lru_crawler metadump list what is stored;
  libmemcached's memcdump and memcstat read them; the general stats both
  servers print come in memcached's order.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import Conn, free_port, wait_stat

from conftest import THREADS

MEMCACHED = "/usr/bin/memcached"


@pytest.fixture(params=THREADS, ids=lambda t: "t%d" % t)
def threads(request):
    return request.param


class Memcached:
    """The reference memcached on a free port, stopped by its pid."""

    def __init__(self, *args):
        self.port = free_port()
        argv = [MEMCACHED, "-U", "0", "-l", "127.0.0.1", "-p", str(self.port)]
        if os.geteuid() == 0:
            argv += ["-u", "nobody"]
        self.proc = subprocess.Popen(argv + list(args), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError("memcached did not start")

    def connect(self):
        return socket.create_connection(("127.0.0.1", self.port), 10)

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def memcached():
    if not os.access(MEMCACHED, os.X_OK):
        pytest.skip("no reference memcached")
    started = []

    def make(*args):
        m = Memcached(*args)
        started.append(m)
        return m

    yield make
    for m in started:
        m.stop()


def exchange(sock, data, settle=0.3):
    """Sends data, reads until the peer closes or is quiet for `settle` s;
    returns (bytes, closed). A quiet peer is then sent our EOF, and what
    it still answers (a stalled server answers all it has read, then
    closes) is read to its close: a stall costs no bytes, only `closed`
    needs the peer's own close within `settle`."""
    sock.settimeout(settle)
    sock.sendall(data)
    out = b""
    sent_eof = False
    while True:
        try:
            chunk = sock.recv(1 << 16)
        except socket.timeout:
            if sent_eof:
                return out, False
            sent_eof = True
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(10)
            continue
        except ConnectionResetError:
            return out, not sent_eof
        if not chunk:
            return out, not sent_eof
        out += chunk


def both(server, ref, data):
    a, b = server.connect(), ref.connect()
    try:
        return exchange(a, data), exchange(b, data)
    finally:
        a.close()
        b.close()


# ---- multi-get streaming ---------------------------------------------------

class StatsSampler(threading.Thread):
    """Polls `stats` on its own connection; keeps the largest
    conn_buffer_bytes seen."""

    def __init__(self, server):
        super().__init__(daemon=True)
        self.c = Conn(server.connect())
        self.stop_flag = threading.Event()
        self.peak = 0
        self.samples = 0

    def run(self):
        while not self.stop_flag.is_set():
            st = self.c.stats()
            self.peak = max(self.peak, int(st["conn_buffer_bytes"]))
            self.samples += 1
            time.sleep(0.002)

    def finish(self):
        self.stop_flag.set()
        self.join(10)
        self.c.close()
        return self.peak


def value_of(i):
    return b"v%d" % i if i % 3 else b"x" * (i % 200)


def expected_get(n, with_cas=False):
    """The reply body of a get of k0..k(n-1) where even keys exist."""
    out = []
    for i in range(0, n, 2):
        v = value_of(i)
        out.append(b"VALUE k%d %d %d" % (i, i % 7, len(v)))
    return out


@pytest.mark.parametrize("nkeys", [10000, 100000])
def test_huge_multiget_pipeline(server_factory, threads, nkeys):
    # A per-connection bound well under the answer (about 1.5 MB for
    # 100 000 keys) shows the answer streams out as it is made.
    s = server_factory("-o", "conn_buffer_max=256k,conn_mem_max=4m", threads=threads)
    c = Conn(s.connect(30))
    c.send(b"".join(b"set k%d %d 0 %d noreply\r\n%s\r\n" % (i, i % 7, len(value_of(i)), value_of(i))
                    for i in range(0, nkeys, 2)))
    assert c.cmd("version\r\n").startswith("VERSION")
    sampler = StatsSampler(s)
    sampler.start()
    keys = b" ".join(b"k%d" % i for i in range(nkeys))
    c.send(b"version\r\nget " + keys + b"\r\nset after 1 0 2\r\nok\r\ngets "
           + keys[:2000].rsplit(b" ", 1)[0] + b"\r\nget after\r\n")
    assert c.line().startswith("VERSION")
    for i in range(0, nkeys, 2):
        v = value_of(i)
        assert c.line() == "VALUE k%d %d %d" % (i, i % 7, len(v))
        assert c.exact(len(v) + 2) == v + b"\r\n"
    assert c.line() == "END"
    assert c.line() == "STORED"
    gets = c.read_values()
    assert gets and all(k.startswith("k") for k in gets)
    assert c.read_values() == {"after": (1, b"ok")}
    peak = sampler.finish()
    assert sampler.samples > 0
    # Every connection's buffers together, the sampler's own included.
    assert peak <= 4 << 20, peak
    st = c.stats()
    assert int(st["conn_buffer_bytes"]) <= 4 << 20
    c.close()


def test_get_line_answered_while_it_arrives(server_factory, threads):
    s = server_factory(threads=threads)
    c = Conn(s.connect())
    c.send(b"set a 0 0 1\r\nA\r\n")
    assert c.line() == "STORED"
    # 40 KB of keys and no newline yet: the values come back already.
    c.send(b"get " + b"a " * 20000)
    c.sock.settimeout(5)
    assert c.line() == "VALUE a 0 1"
    assert c.exact(3) == b"A\r\n"
    c.send(b"a\r\nversion\r\n")
    n = 0
    while True:
        line = c.line()
        if line == "END":
            break
        assert line == "VALUE a 0 1"
        assert c.exact(3) == b"A\r\n"
        n += 1
    assert n == 20000  # 20 001 in all, one read above
    assert c.line().startswith("VERSION")


def test_bad_key_in_long_get_line(server_factory, threads, memcached):
    s = server_factory(threads=threads)
    ref = memcached()
    both(s, ref, b"set a 0 0 1\r\n1\r\n")
    # A whole line with a key over 250 bytes: the error alone, as memcached.
    data = b"get a " + b"k" * 251 + b" a\r\nget a\r\n"
    (ours, oc), (theirs, tc) = both(s, ref, data)
    assert ours == theirs and not oc and not tc


def test_gat_and_gets_stream(server):
    c = Conn(server.connect())
    c.send(b"set g 3 0 2\r\ngg\r\n")
    assert c.line() == "STORED"
    vals = c.get_values(b"gats 100 " + b"g " * 5000 + b"\r\n")
    assert vals["g"][:2] == (3, b"gg")


def test_keys_max_accepted_and_ignored(server_factory):
    s = server_factory("-o", "keys_max=4")
    c = Conn(s.connect())
    c.send(b"set a 0 0 1\r\n1\r\n")
    assert c.line() == "STORED"
    assert len(c.get_values(b"get a a a a a a a a\r\n")) == 1
    assert "keys_max" not in c.stats("settings")


# ---- parser edges, byte for byte -------------------------------------------

EDGE_CASES = [
    b"verbosity\r\n",
    b"verbosity 1\r\n",
    b"verbosity 1 noreply\r\nversion\r\n",
    b"verbosity x\r\n",
    b"verbosity x noreply\r\nverbosity 1\r\n",
    b"verbosity 1 2\r\n",
    b"verbosity 1 2 3\r\n",
    b"verbosity 1 noreply extra\r\n",
    # t/cas.t: a storage command missing an argument is ERROR, and the
    # next line is a command, not its data.
    b"cas foo1 0 0 6\r\nbarva2\r\n",
    b"set k 0 0\r\nget k\r\n",
    b"set k 0 0 1 2 3 4\r\nx\r\n",
    b"cas k 0 0 1\r\nx\r\n",
    b"x" * 2048,
    b"x" * 2049,
    b"set k 0 0 1 " + b"0" * 2100,
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"foo bar HTTP/1.0\r\n",
    b"foo HTTP\r\n",
    b"cache_memlimit\r\n",
    b"cache_memlimit x\r\n",
    b"cache_memlimit -1\r\n",
    b"cache_memlimit 0\r\n",
    b"cache_memlimit 7\r\n",
    b"cache_memlimit 1 2\r\n",
    b"cache_memlimit 99999999999\r\n",
    b"cache_memlimit 100\r\n",
    b"cache_memlimit 100 noreply\r\nversion\r\n",
    b"cache_memlimit 3 noreply\r\n",
    b"shutdown\r\n",
    b"shutdown x\r\n",
    b"stats detail\r\n",
    b"stats detail x\r\n",
    b"stats detail on extra\r\nstats detail off\r\n",
    b"stats cachedump\r\n",
    b"stats cachedump 1\r\n",
    b"stats cachedump x y\r\n",
    b"stats cachedump 64 1\r\n",
    b"stats cachedump 9 0\r\n",
    b"lru_crawler\r\n",
    b"lru_crawler foo\r\n",
    b"lru_crawler metadump\r\n",
    b"lru_crawler metadump x\r\n",
    b"lru_crawler metadump 0\r\n",
    b"lru_crawler metadump 9\r\n",
    b"lru_crawler metadump 64\r\n",
]


def _version_free(b):
    return re.sub(rb"VERSION [^\r]*", b"VERSION v", b)


def test_edges_match_memcached(server, memcached):
    ref = memcached()
    bad = []
    for data in EDGE_CASES:
        (ours, oc), (theirs, tc) = both(server, ref, data)
        if (_version_free(ours), oc) != (_version_free(theirs), tc):
            bad.append((data[:60], ours[:200], oc, theirs[:200], tc))
    assert not bad, "\n".join(repr(b) for b in bad)


def test_shutdown_with_A(server_factory, memcached):
    s = server_factory("-A")
    ref = memcached("-A")
    (ours, oc), (theirs, tc) = both(s, ref, b"shutdown x\r\n")
    assert (ours, oc) == (theirs, tc) == (b"CLIENT_ERROR invalid shutdown mode\r\n", False)
    (ours, oc), (theirs, tc) = both(s, ref, b"shutdown\r\n")
    assert (ours, oc) == (theirs, tc) == (b"", True)
    assert s.proc.wait(10) == 0
    assert ref.proc.wait(10) == 0
    s.close_files()


def test_shutdown_graceful_with_A(server_factory):
    s = server_factory("-A", threads=4)
    c = Conn(s.connect())
    c.send(b"shutdown graceful\r\n")
    assert c.closed_by_peer()
    assert s.proc.wait(10) == 0
    s.close_files()


# ---- cache_memlimit --------------------------------------------------------

def test_cache_memlimit_shrinks(server_factory, threads):
    s = server_factory("-m", "64", threads=threads)
    c = Conn(s.connect(30))
    val = b"v" * 1000
    for start in range(0, 40000, 2000):
        c.send(b"".join(b"set m%d 0 0 1000 noreply\r\n%s\r\n" % (i, val)
                        for i in range(start, start + 2000)))
    st = c.stats()
    assert int(st["bytes"]) > 30 << 20
    assert int(st["limit_maxbytes"]) == 64 << 20
    assert c.cmd("cache_memlimit 8\r\n") == "OK"
    st = c.stats()
    assert int(st["limit_maxbytes"]) == 8 << 20
    assert int(c.stats("settings")["maxbytes"]) == 8 << 20
    assert int(st["bytes"]) <= 8 << 20
    assert int(st["evictions"]) > 0
    # Stores go on under the new limit, and a larger limit is used again.
    for start in range(0, 20000, 2000):
        c.send(b"".join(b"set n%d 0 0 1000 noreply\r\n%s\r\n" % (i, val)
                        for i in range(start, start + 2000)))
    assert int(c.stats()["bytes"]) <= 8 << 20
    assert c.cmd("cache_memlimit 64\r\n") == "OK"
    for start in range(0, 30000, 2000):
        c.send(b"".join(b"set p%d 0 0 1000 noreply\r\n%s\r\n" % (i, val)
                        for i in range(start, start + 2000)))
    assert int(c.stats()["bytes"]) > 16 << 20
    assert c.get_values("get p29999\r\n") == {"p29999": (0, val)}


# ---- listings --------------------------------------------------------------

KEYS = ["plain%d" % i for i in range(50)] + ["pre:fix%d" % i for i in range(50)] + ["odd/%%k~"]


def store_keys(c):
    c.send(b"".join(b"set %s %d %d 3\r\nabc\r\n" % (k.encode(), i, 0 if i % 2 else 100000)
                    for i, k in enumerate(KEYS)))
    for _ in KEYS:
        assert c.line() == "STORED"


def test_metadump_and_cachedump(server_factory, threads):
    server = server_factory(threads=threads)
    c = Conn(server.connect())
    store_keys(c)
    assert c.get_values("get plain1\r\n")["plain1"][1] == b"abc"
    c.send("lru_crawler metadump all\r\n")
    seen = {}
    while not (c.buf.startswith(b"END\r\n") or b"\nEND\r\n" in c.buf):
        c._fill()
    body, c.buf = c.buf.split(b"END\r\n", 1)
    for line in body.decode().split("\n"):
        if not line:
            continue
        m = re.fullmatch(r"key=(\S+) exp=(-?\d+) la=(\d+) cas=(\d+) fetch=(yes|no) cls=(\d+) size=(\d+)", line)
        assert m, line
        seen[m.group(1)] = m
    from urllib.parse import unquote
    assert sorted(unquote(k) for k in seen) == sorted(KEYS)
    assert seen["plain1"].group(5) == "yes" and seen["plain2"].group(5) == "no"
    assert seen["plain1"].group(2) == "-1" and int(seen["plain2"].group(2)) > time.time()
    assert "pre%3Afix3" in seen
    assert 1 <= int(seen["plain1"].group(6)) <= threads
    # cachedump, class by class (one per shard), lists each key once.
    listed = []
    for cls in range(1, threads + 1):
        c.send("stats cachedump %d 0\r\n" % cls)
        while True:
            line = c.line()
            if line == "END":
                break
            m = re.fullmatch(r"ITEM (\S+) \[3 b; (\d+) s\]", line)
            assert m, line
            listed.append(m.group(1))
    assert sorted(listed) == sorted(KEYS)
    c.send("stats cachedump 1 2\r\n")
    n = 0
    while c.line() != "END":
        n += 1
    assert n == min(2, sum(1 for _ in listed))  # at most the limit


def test_stats_items_slabs(server_factory, threads):
    server = server_factory(threads=threads)
    c = Conn(server.connect())
    store_keys(c)
    items = c.stats("items")
    slabs = c.stats("slabs")
    classes = sorted({int(k.split(":")[1]) for k in items})
    assert classes == list(range(1, threads + 1))
    assert sum(int(items["items:%d:number" % i]) for i in classes) == len(KEYS)
    for i in classes:
        for f in ("chunk_size", "chunks_per_page", "total_pages", "total_chunks",
                  "used_chunks", "free_chunks", "free_chunks_end", "get_hits", "cmd_set"):
            assert re.fullmatch(r"\d+", slabs["%d:%s" % (i, f)]), f
    assert slabs["active_slabs"] == str(threads)
    assert sum(int(slabs["%d:cmd_set" % i]) for i in classes) == len(KEYS)


def test_stats_detail(server, memcached):
    ref = memcached()
    seq = (b"stats detail on\r\nget a:1\r\nget a:2 b\r\nset a:1 0 0 1\r\n1\r\n"
           b"get a:1\r\ndelete a:9\r\nadd a:3 0 0 1\r\n1\r\nstats detail dump\r\n"
           b"stats detail off\r\nget a:1\r\nstats detail dump\r\n")
    (ours, _), (theirs, _) = both(server, ref, seq)
    assert ours == theirs
    assert b"PREFIX a get 3 hit 1 set 2 del 1\r\n" in ours


def test_stats_order_matches_memcached(server, memcached):
    """The general stats both servers print come in memcached's order (a
    tool that reads them by position, or diffs two servers' dumps, sees
    the same list)."""
    ref = memcached()
    (ours, _), (theirs, _) = both(server, ref, b"stats\r\n")

    def names(reply):
        return [l.split()[1] for l in reply.decode().splitlines()
                if l.startswith("STAT ")]
    ours, theirs = names(ours), names(theirs)
    common = set(ours) & set(theirs)
    assert {"limit_maxbytes", "listen_disabled_num", "threads",
            "bytes_written", "reclaimed"} <= common
    assert [n for n in ours if n in common] == [n for n in theirs if n in common]


def test_prefix_delimiter(server_factory):
    s = server_factory("-D", "/")
    c = Conn(s.connect())
    c.send(b"stats detail on\r\nset x/1 0 0 1\r\n1\r\nset y:1 0 0 1\r\n1\r\nstats detail dump\r\n")
    assert c.line() == "OK"
    assert c.line() == "STORED" and c.line() == "STORED"
    assert c.line() == "PREFIX x get 0 hit 0 set 1 del 0"
    assert c.line() == "END"


def test_stats_conns(server):
    others = [server.connect() for _ in range(3)]
    for o in others:
        o.sendall(b"version\r\n")
        o.recv(100)
    c = Conn(server.connect())
    c.send("stats conns\r\n")
    conns = {}
    while True:
        line = c.line()
        if line == "END":
            break
        m = re.fullmatch(r"STAT (\d+):(\w+) (.*)", line)
        assert m, line
        conns.setdefault(m.group(1), {})[m.group(2)] = m.group(3)
    ports = {"tcp:127.0.0.1:%d" % o.getsockname()[1] for o in others + [c.sock]}
    assert ports <= {v["addr"] for v in conns.values()}
    for v in conns.values():
        assert v["listen_addr"] == "tcp:127.0.0.1:%d" % server.port
        assert v["state"].startswith("conn_")
        assert int(v["secs_since_last_cmd"]) >= 0
    assert sum(v["state"] == "conn_parse_cmd" for v in conns.values()) == 1
    for o in others:
        o.close()


# ---- libmemcached's tools --------------------------------------------------

@pytest.mark.skipif(not shutil.which("memcdump"), reason="no libmemcached-tools")
def test_memcdump_and_memcstat(server):
    c = Conn(server.connect())
    store_keys(c)
    target = "--servers=127.0.0.1:%d" % server.port
    out = subprocess.run(["memcdump", target], capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert sorted(out.stdout.decode().split()) == sorted(KEYS)
    out = subprocess.run(["memcstat", target], capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    text = out.stdout.decode()
    assert "curr_items: %d" % len(KEYS) in text
    assert "Server: 127.0.0.1 (%d)" % server.port in text


@pytest.mark.parametrize("nkeys", [200000])
def test_big_metadump_streams(server_factory, threads, nkeys):
    """A metadump far over one round (18 MB of lines) lists every key once,
    with the connection's memory bounded, and what follows it in the
    pipeline is answered after its END."""
    s = server_factory("-m", "256", "-o", "conn_mem_max=4m", threads=threads)
    c = Conn(s.connect(60))
    key = "user:%08d:" + "x" * 40
    for start in range(0, nkeys, 5000):
        c.send(b"".join(b"set %s 0 0 1 noreply\r\n1\r\n" % (key % i).encode()
                        for i in range(start, start + 5000)))
    assert c.cmd("version\r\n").startswith("VERSION")
    assert int(c.stats()["curr_items"]) == nkeys
    # a walk sees each key once when no index grows (see shard_dump)
    wait_stat(c, "hash_is_expanding", lambda v: v == 0, timeout=30)
    sampler = StatsSampler(s)
    sampler.start()
    c.send("lru_crawler metadump all\r\nversion\r\n")
    seen = set()
    n = 0
    while True:
        while b"\n" not in c.buf:
            c._fill()
        line, c.buf = c.buf.split(b"\n", 1)
        if line == b"END\r":
            break
        k = line.split(b" ", 1)[0]
        assert k.startswith(b"key=user%3A"), line
        seen.add(k)
        n += 1
    assert c.line().startswith("VERSION")
    peak = sampler.finish()
    assert n == nkeys and len(seen) == nkeys
    assert peak <= 4 << 20, peak


@pytest.mark.skipif(not shutil.which("memcdump"), reason="no libmemcached-tools")
def test_memcdump_big(server_factory, threads):
    s = server_factory(threads=threads)
    c = Conn(s.connect(60))
    nkeys = 60000
    for start in range(0, nkeys, 5000):
        c.send(b"".join(b"set dump-%d 0 0 1 noreply\r\n1\r\n" % i
                        for i in range(start, start + 5000)))
    assert c.cmd("version\r\n").startswith("VERSION")
    wait_stat(c, "hash_is_expanding", lambda v: v == 0, timeout=30)
    out = subprocess.run(["memcdump", "--servers=127.0.0.1:%d" % s.port],
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    keys = out.stdout.decode().split()
    assert len(keys) == nkeys and len(set(keys)) == nkeys
