"""How much of -m holds items (issue 1/4 Capacity): the bound "items held vs -m".

At -t 2 -m 16, with 11-byte keys and 100-byte values (111 bytes of key and
value per item), the daemon is filled past its limit and then churned the
way a read-through cache is used:
  1. every key of a key space about 2.7 x -m is set once, in a scrambled
     order (the cache fills and evicts);
  2. a Zipf(0.99) stream over the same keys, batches of 100 gets, each
     missed key set again (`noreply`);
  3. every key is asked for once: the keys that come back with their right
     value are the items held.
Then:
  - live bytes = items held x 111 >= LIVE_FRACTION (70 %) of -m. On this
    very stream memcached 1.6.18 keeps 87 376 items (58 %) and would fail
    too: the issue's target, 1.3 x memcached's items at 100 B values, is
    75 %. 70 % allows ~47 bytes per item for header, index and slack.
  - RSS <= -m + RSS_ALLOWANCE_MIB (12 MiB): the item memory is bounded by -m,
    the rest is fixed costs (threads, rings, buffers, an index sized for the
    items held).
Every hit must carry its own value, whatever the figures.

Today's storage (before the shard/ rewrite) is expected to fail the live
bytes bound: it keeps 37 682 items (25 %), less than half of memcached's,
at RSS 22 MiB. The storage rewrite is what should make it pass.

Under a sanitizer build ($RINGCACHE_SANITIZER) the daemon allocates through
libc and the sanitizer's shadow and quarantine, so neither figure says
anything about ringcache: the run is shorter and only the values are
checked. No sleeps: a get round trip on the connection orders the noreply
sets before it.
"""
import bisect
import os
import random
import re
import socket
import time

from conftest import Conn

SANITIZER = os.environ.get("RINGCACHE_SANITIZER", "")
MIB = 1 << 20
LIMIT_MB = 16
THREADS = 2
VLEN = 100
N_KEYS = 400000             # x (11 + 100) B = 2.6 x -m of key and value bytes
REQUESTS = 400000 if SANITIZER else 2000000
ALPHA = 0.99
BATCH = 100
LIVE_FRACTION = 0.70
RSS_ALLOWANCE_MIB = 12
TEST_DEADLINE = 600.0       # seconds, a bound for a runaway loop, not a speed
                            # check: ~10 s on an idle 2-core machine, 44 s with
                            # four busy loops beside it

HIT = re.compile(rb"VALUE (\S+) 0 (\d+)\r\n")


def key_of(i):
    """Distinct 11-byte keys; popularity rank i is scrambled over the hash."""
    return b"cp:%08x" % (i * 0x9E3779B1 & 0xFFFFFFFF)


def value_of(key):
    """100 bytes that name their key, so a wrong value cannot pass."""
    return (key + b".") * 8 + b"v" * (VLEN - 8 * (len(key) + 1))


def set_cmd(key):
    return b"set %s 0 0 %d noreply\r\n%s\r\n" % (key, VLEN, value_of(key))


def read_end(c):
    """Reads one get reply up to its END; returns {key: value}."""
    buf = c.buf
    while not buf.endswith(b"END\r\n"):
        chunk = c.sock.recv(1 << 20)
        if not chunk:
            raise EOFError("server closed the connection")
        buf += chunk
    c.buf = b""
    out = {}
    pos = 0
    for m in HIT.finditer(buf):
        if m.start() < pos:
            continue  # inside a value; values hold no "VALUE " anyway
        k, n = m.group(1), int(m.group(2))
        out[k] = buf[m.end():m.end() + n]
        assert buf[m.end() + n:m.end() + n + 2] == b"\r\n", "reply framing broken"
        pos = m.end() + n + 2
    return out


def get_batch(c, keys):
    c.send(b"get " + b" ".join(keys) + b"\r\n")
    got = read_end(c)
    for k, v in got.items():
        assert k in keys, "unasked key %r came back" % k
        assert v == value_of(k), "wrong value for %r: %r" % (k, v[:40])
    return got


def zipf_stream(n_keys, n, seed):
    rng = random.Random(seed)
    cum = []
    w = 0.0
    for r in range(1, n_keys + 1):
        w += r ** -ALPHA
        cum.append(w)
    rnd = rng.random
    return [bisect.bisect_left(cum, rnd() * w) for _ in range(n)]


def test_items_held_fill_most_of_m(server_factory):
    deadline = time.monotonic() + TEST_DEADLINE
    s = server_factory("-m", LIMIT_MB, threads=THREADS)
    sock = s.connect(timeout=30)
    # A batch of noreply sets then a get line: without TCP_NODELAY the get
    # waits for the delayed ACK of the sets (40 ms per batch).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c = Conn(sock)
    keys = [key_of(i) for i in range(N_KEYS)]

    # 1. every key once, in a scrambled order (a stride coprime with N_KEYS)
    stride = 247711
    for start in range(0, N_KEYS, 1000):
        c.send(b"".join(set_cmd(keys[(j * stride) % N_KEYS])
                        for j in range(start, min(N_KEYS, start + 1000))))
        if start % 50000 == 0:
            get_batch(c, keys[:1])

    # 2. read-through churn: a Zipf stream, each missed key set again
    stream = zipf_stream(N_KEYS, REQUESTS, 11)
    misses = 0
    for start in range(0, len(stream), BATCH):
        assert time.monotonic() < deadline, "the stream took too long"
        asked = [keys[i] for i in stream[start:start + BATCH]]
        got = get_batch(c, asked)
        missed = {k for k in asked if k not in got}
        misses += sum(1 for k in asked if k not in got)
        if missed:
            c.send(b"".join(set_cmd(k) for k in missed))

    # 3. the items held: every key that comes back with its value
    held = 0
    for start in range(0, N_KEYS, BATCH):
        held += len(get_batch(c, keys[start:start + BATCH]))
    st = c.stats()
    rss_kib = s.rss_kib()
    c.close()
    assert s.alive(), "daemon died:\n%s" % s.output()[-4000:]

    limit = LIMIT_MB * MIB
    live = held * (len(keys[0]) + VLEN)
    rss_bound_kib = (LIMIT_MB + RSS_ALLOWANCE_MIB) * 1024
    info = ("-t %d -m %d: %d items held (curr_items %s) x %d B = %.1f MiB = %.0f %% of -m "
            "(bound %.0f %%); RSS %.1f MiB (bound %d MiB); bytes %s, evictions %s; "
            "stream miss ratio %.3f"
            % (THREADS, LIMIT_MB, held, st["curr_items"], len(keys[0]) + VLEN,
               live / MIB, 100.0 * live / limit, 100 * LIVE_FRACTION, rss_kib / 1024.0,
               LIMIT_MB + RSS_ALLOWANCE_MIB, st["bytes"], st["evictions"],
               misses / float(len(stream))))
    print(info)
    assert int(st["evictions"]) > 0, info
    if SANITIZER:
        return
    assert rss_kib <= rss_bound_kib, info
    assert live >= LIVE_FRACTION * limit, info
