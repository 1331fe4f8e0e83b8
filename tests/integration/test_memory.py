"""Memory bound, eviction, flush and expiry of the real daemon (issue 2/5).

- The bound: with -m 64, about 1 GB of values of mixed sizes (1 B to 100 KB,
  log-uniform) goes through four connections at once. The process's RSS,
  sampled throughout and at the end, stays within 1.1 x 64 MiB + 16 MiB;
  gets of a small well-known key set and of recently written keys return
  the right value or miss, never a wrong one; the daemon keeps serving and
  `stats` shows evictions with bytes <= limit_maxbytes.
- Evictions and evicted_unfetched grow under pressure.
- flush_all releases memory: bytes and curr_items drop to 0, and three
  flush/refill cycles do not grow RSS by anything like one fill's volume.
- The expiry sweep reclaims items nobody touches: curr_items drops to 0 on
  its own and `reclaimed` / `expired_unfetched` count them.

Under a sanitizer build ($RINGCACHE_SANITIZER set) RSS says nothing about
ringcache (ASan's quarantine and shadow memory, TSan's shadow), so the RSS
assertions are skipped there and the volumes are smaller; every other
assertion stays.

No test sleeps for synchronisation: a `get` round trip on the same
connection orders the noreply sets before it, and waiting for the sweep is
bounded polling of `stats`.
"""
import hashlib
import os
import random
import threading
import time
import zlib

import pytest

from conftest import THREADS, Conn, wait_stat

SANITIZER = os.environ.get("RINGCACHE_SANITIZER", "")
MIB = 1 << 20
LIMIT_MB = 64
RSS_BOUND_KIB = int((1.1 * LIMIT_MB + 16) * 1024)
TOTAL_BYTES = (200 if SANITIZER else 1024) * MIB
WRITERS = 4
VMAX = 100 * 1024
BATCH_BYTES = 1 * MIB       # noreply sets sent between two round trips
TEST_DEADLINE = 120.0       # seconds; a writer past it fails the test
KNOWN = ["known:%d" % i for i in range(64)]

# Values are slices of one random blob at an offset derived from the key, so
# any value can be checked from its key and length alone.
_rng = random.Random(5)
BLOB = bytes(_rng.getrandbits(8) for _ in range(4096)) * (VMAX // 4096 + 2)


def value_of(key, n):
    off = zlib.crc32(key.encode()) % 4096
    return BLOB[off:off + n]


def size_of(key):
    """Log-uniform in 1 .. VMAX, a function of the key."""
    h = hashlib.blake2b(key.encode(), digest_size=4).digest()
    r = int.from_bytes(h, "little") / float(1 << 32)
    return max(1, min(VMAX, int(VMAX ** r)))


def set_cmd(key, noreply=True):
    v = value_of(key, size_of(key))
    return b"set %s 0 0 %d%s\r\n%s\r\n" % (key.encode(), len(v),
                                           b" noreply" if noreply else b"", v)


def check_values(got, asked):
    """Every returned value is the one its key was stored with."""
    for key, (flags, data) in got.items():
        assert key in asked, "unasked key %r came back" % key
        assert flags == 0, key
        assert data == value_of(key, size_of(key)), (
            "wrong value for %s: %d bytes, expected %d" % (key, len(data), size_of(key)))


def sanitizer_scale(n):
    return max(1, n // 5) if SANITIZER else n


# ---- the bound -------------------------------------------------------------

class Writer(threading.Thread):
    """One connection writing its share of the volume, checking as it goes."""

    def __init__(self, server, wid, total, deadline):
        super().__init__(daemon=True)
        self.server = server
        self.c = Conn(server.connect(timeout=30))
        self.wid, self.total, self.deadline = wid, total, deadline
        self.sent = self.items = self.hits = self.misses = 0
        self.known_hits = self.known_misses = 0
        self.peak_rss = self.samples = 0
        self.error = None

    def run(self):
        try:
            self.write()
        except BaseException as e:  # reported by the test, not lost
            self.error = e

    def write(self):
        seq = 0
        while self.sent < self.total:
            assert time.monotonic() < self.deadline, "writer %d too slow" % self.wid
            out, size, recent = [], 0, []
            while size < BATCH_BYTES:
                key = "w%d:%d" % (self.wid, seq)
                seq += 1
                cmd = set_cmd(key)
                out.append(cmd)
                size += len(cmd)
                recent.append(key)
            self.c.send(b"".join(out))
            self.sent += size
            self.items += len(recent)
            # The last few keys of the batch, and the well-known keys: right
            # value or miss. This round trip also paces the writer.
            asked = recent[-4:]
            got = self.c.get_values("get %s\r\n" % " ".join(asked))
            check_values(got, asked)
            # RSS right after the server has taken this batch in.
            self.peak_rss = max(self.peak_rss, self.server.rss_kib())
            self.samples += 1
            self.hits += len(got)
            self.misses += len(asked) - len(got)
            got = self.c.get_values("get %s\r\n" % " ".join(KNOWN))
            check_values(got, KNOWN)
            self.known_hits += len(got)
            missing = [k for k in KNOWN if k not in got]
            self.known_misses += len(missing)
            if missing:
                self.c.send(b"".join(set_cmd(k, noreply=False) for k in missing))
                for _ in missing:
                    assert self.c.line() == "STORED"


def test_rss_bounded_under_1gb_of_mixed_sizes(server_factory):
    threads = max(THREADS)
    s = server_factory("-m", LIMIT_MB, threads=threads)
    c = Conn(s.connect())
    c.send(b"".join(set_cmd(k, noreply=False) for k in KNOWN))
    for _ in KNOWN:
        assert c.line() == "STORED"
    deadline = time.monotonic() + TEST_DEADLINE
    writers = [Writer(s, i, TOTAL_BYTES // WRITERS, deadline) for i in range(WRITERS)]
    for w in writers:
        w.start()
    peak = 0
    samples = 0
    # RSS is sampled by each writer after each batch, and here while they
    # run: each join waits at most 10 ms for a writer to finish, so this
    # loop ends when they do (or at the deadline).
    while any(w.is_alive() for w in writers) and time.monotonic() < deadline + 5:
        for w in writers:
            w.join(0.01)
        assert s.alive(), "daemon died:\n%s" % s.output()[-4000:]
        peak = max(peak, s.rss_kib())
        samples += 1
    for w in writers:
        w.join(5)
        assert not w.is_alive(), "writer %d hung" % w.wid
        if w.error:
            raise w.error
        w.c.close()
        peak = max(peak, w.peak_rss)
        samples += w.samples
    end_rss = s.rss_kib()
    peak = max(peak, end_rss)

    # Still serving: a fresh store and read round trip, and the known keys.
    assert c.cmd("set after 0 0 5\r\nhello\r\n") == "STORED"
    assert c.get_values("get after\r\n") == {"after": (0, b"hello")}
    check_values(c.get_values("get %s\r\n" % " ".join(KNOWN)), KNOWN)
    st = c.stats()
    c.close()
    sent = sum(w.sent for w in writers)
    info = ("sent %d MiB in %d items; peak RSS %d KiB, end %d KiB (bound %d, "
            "%d samples); recent hits %d misses %d; known hits %d misses %d; "
            "evictions %s bytes %s curr_items %s"
            % (sent // MIB, sum(w.items for w in writers), peak, end_rss,
               RSS_BOUND_KIB, samples, sum(w.hits for w in writers),
               sum(w.misses for w in writers), sum(w.known_hits for w in writers),
               sum(w.known_misses for w in writers), st["evictions"],
               st["bytes"], st["curr_items"])) + " pooled %s held %s" % (st.get("conn_buffer_pooled"), st.get("conn_buffer_bytes"))
    print(info)
    assert sent >= TOTAL_BYTES
    assert int(st["limit_maxbytes"]) == LIMIT_MB * MIB
    assert int(st["evictions"]) > 0, info
    assert 0 < int(st["bytes"]) <= int(st["limit_maxbytes"]), info
    if not SANITIZER:
        assert peak <= RSS_BOUND_KIB, info


# ---- eviction counters -----------------------------------------------------

def fill(c, prefix, n, vlen, batch=500):
    """n noreply sets, then a round trip that orders them all before it."""
    v = b"e" * vlen
    for start in range(0, n, batch):
        c.send(b"".join(b"set %s%d 0 0 %d noreply\r\n%s\r\n" % (prefix, i, vlen, v)
                        for i in range(start, min(n, start + batch))))
        c.get_values("get %s0\r\n" % prefix.decode())


@pytest.mark.parametrize("threads", THREADS, ids=lambda t: "t%d" % t)
def test_evictions_and_evicted_unfetched_grow(server_factory, threads):
    s = server_factory("-m", 8, threads=threads)
    c = Conn(s.connect())
    st0 = c.stats()
    assert int(st0["evictions"]) == 0 and int(st0["evicted_unfetched"]) == 0
    # 4x the limit in 1 KiB values nobody reads.
    fill(c, b"ev:a:", 32 * 1024, 1024)
    st1 = c.stats()
    assert int(st1["evictions"]) > 0, st1
    assert int(st1["evicted_unfetched"]) > 0, st1
    assert int(st1["evicted_unfetched"]) <= int(st1["evictions"])
    assert int(st1["bytes"]) <= int(st1["limit_maxbytes"])
    # More pressure: both counters keep growing.
    fill(c, b"ev:b:", 16 * 1024, 1024)
    st2 = c.stats()
    assert int(st2["evictions"]) > int(st1["evictions"]), (st1, st2)
    assert int(st2["evicted_unfetched"]) > int(st1["evicted_unfetched"]), (st1, st2)
    assert int(st2["bytes"]) <= int(st2["limit_maxbytes"])
    assert int(st2["total_items"]) == 48 * 1024
    # What is still there is intact.
    keys = ["ev:b:%d" % i for i in range(16 * 1024 - 100, 16 * 1024)]
    got = c.get_values("get %s\r\n" % " ".join(keys))
    assert got, "the newest items were all evicted"
    assert all(v == (0, b"e" * 1024) for v in got.values())
    c.close()


# ---- flush_all -------------------------------------------------------------

@pytest.mark.parametrize("threads", THREADS, ids=lambda t: "t%d" % t)
def test_flush_all_releases_memory(server_factory, threads):
    s = server_factory("-m", 128, threads=threads)
    c = Conn(s.connect())
    n, vlen = sanitizer_scale(50 * 1024), 1000   # ~50 MB of values
    fill(c, b"fl:", n, vlen)
    st = c.stats()
    assert int(st["curr_items"]) == n and int(st["evictions"]) == 0, st
    assert int(st["bytes"]) >= n * vlen
    rss_full = s.rss_kib()
    grown = []
    for cycle in range(3):
        assert c.cmd("flush_all\r\n") == "OK"
        st = c.stats()
        assert int(st["bytes"]) == 0 and int(st["curr_items"]) == 0, st
        assert c.get_values("get fl:0 fl:%d\r\n" % (n - 1)) == {}
        # Refill with new keys: the flushed items' memory must be reusable.
        # mimalloc may hold a freed segment resident for a while and take a
        # fresh one (seen: up to +29 MiB once, then stable), so the bound is
        # well under one more fill (~65 MiB with the size-class rounding),
        # which is what a flush that kept its items would add per cycle.
        fill(c, b"fl%d:" % cycle, n, vlen)
        st = c.stats()
        assert int(st["curr_items"]) == n and int(st["evictions"]) == 0, st
        grown.append(s.rss_kib() - rss_full)
    if not SANITIZER:
        assert max(grown) < 0.6 * n * vlen / 1024, (
            "RSS grew by %s KiB over the first fill's across flush/refill cycles" % grown)
    c.close()


# ---- expiry sweep ----------------------------------------------------------

@pytest.mark.parametrize("threads", THREADS, ids=lambda t: "t%d" % t)
def test_expiry_sweep_reclaims_untouched_items(server_factory, threads):
    s = server_factory(threads=threads)
    c = Conn(s.connect())
    n = 10000
    for start in range(0, n, 1000):
        c.send(b"".join(b"set ex:%d 0 1 3 noreply\r\nabc\r\n" % i
                        for i in range(start, start + 1000)))
    assert c.cmd("set keep 0 0 4\r\nkeep\r\n") == "STORED"
    st = c.stats()
    assert int(st["total_items"]) == n + 1
    # Nothing reads the items: only the sweep can take them (it runs in
    # every worker loop pass, and an idle worker passes at least once a
    # second).
    st = wait_stat(c, "curr_items", lambda v: v <= 1, timeout=60)
    assert int(st["curr_items"]) == 1
    assert int(st["reclaimed"]) >= n, st
    assert int(st["expired_unfetched"]) >= n, st
    assert int(st["get_expired"]) == 0 and int(st["evictions"]) == 0, st
    assert int(st["bytes"]) < 1024, st
    assert c.get_values("get keep ex:0\r\n") == {"keep": (0, b"keep")}
    c.close()
