"""Connection memory (issue 1/4, Capacity): what an idle connection costs,
and the daemon-wide budget for bytes buffered for requests in flight
(-o conn_mem_max, net/connmem.h).

- 3000 idle connections that each made one get cost at most 2 KiB of RSS
  each, and hold no connection buffer (stats conn_buffer_bytes).
- 900 connections each sending `set kN 0 0 1000000` and 900 KB of it, then
  waiting, at -m 64: RSS stays under -m + 64 MiB, the sets that do not fit
  in the budget get SERVER_ERROR out of memory storing object (their data is
  swallowed unbuffered), another client is served throughout, and the sets
  that were taken complete and read back afterwards.
- A client that pipelines gets of large values and never reads stops being
  read from, and is closed once the budget runs out while it holds more
  than its share; the others are served meanwhile.
- A get answered alone whose client does not read holds its reply's bytes
  and no block of the request arena (the queue's first segment is the
  connection's own); the client then reads it whole.
- -o conn_mem_max= parsing, its default, `stats settings`, and the stats
  lines conn_buffer_bytes / conn_buffer_refused / conn_slow_closed moving.

RSS bounds are skipped under a sanitizer ($RINGCACHE_SANITIZER). Waits are
on sockets with timeouts; the few polls of `stats` have deadlines; every
server is stopped by its pid (conftest's factory asserts a clean exit).
"""
import os
import select
import subprocess
import time

import pytest

from conftest import BIN, THREADS, Conn, raise_nofile, wait_stat

SANITIZER = os.environ.get("RINGCACHE_SANITIZER")
MIB = 1 << 20
OOM_STORE = "SERVER_ERROR out of memory storing object"
BIG_LEN = 102400
BIG_VALUE = bytes(range(256)) * (BIG_LEN // 256)


@pytest.fixture(params=THREADS, ids=lambda t: "t%d" % t)
def threads(request):
    return request.param


def roundtrip(c, n):
    """A set and a get of the checking client's own key."""
    key = "check%d" % (n % 16)
    val = (b"%d|" % n) * (1 + n % 200)
    assert c.cmd(b"set %s 0 0 %d\r\n%s\r\n" % (key.encode(), len(val), val)) == "STORED"
    assert c.get_values("get %s\r\n" % key) == {key: (0, val)}


# ---- idle connections -------------------------------------------------------

IDLE = 3000


def test_idle_connections_cost_under_2kib(server_factory):
    raise_nofile(IDLE + 200)
    s = server_factory("-c", IDLE + 100, threads=4)
    c = Conn(s.connect())
    roundtrip(c, 0)
    before = s.rss_kib()
    socks = []
    try:
        for i in range(IDLE):
            sock = s.connect()
            sock.sendall(b"get idle%d\r\n" % i)
            socks.append(sock)
        for sock in socks:
            ic = Conn(sock)
            assert ic.read_values() == {}
        roundtrip(c, 1)
        st = c.stats()
        assert int(st["curr_connections"]) == IDLE + 1
        # Nothing is lent to an idle connection: what is held is the stats
        # request's own answer, a block or two per worker at most, once the
        # batches of the burst's last remote gets are back (a parked one is
        # taken within XBACK_TAKE_MS, net/worker.h).
        st = wait_stat(c, "conn_buffer_bytes", lambda v: v <= 4 * 4 * 16384)
        # The burst's answers left blocks on the workers' free lists
        # (bounded, see connmem.h); they go once unused for a second, down
        # to each worker's floor of 8 blocks and 8 iovec arrays.
        floor = 4 * 8 * (16384 + 1088)
        deadline = time.monotonic() + 10
        while int(st["conn_buffer_pooled"]) > floor and time.monotonic() < deadline:
            st = c.stats()
        assert int(st["conn_buffer_pooled"]) <= floor, st["conn_buffer_pooled"]
        after = s.rss_kib()
        if not SANITIZER:
            per = (after - before) / IDLE
            assert per <= 2.0, "%.2f KiB of RSS per idle connection (%d -> %d KiB)" % (
                per, before, after)
        # They are still good connections.
        for i in (0, IDLE // 2, IDLE - 1):
            ic = Conn(socks[i])
            assert ic.cmd("version\r\n").startswith("VERSION ")
    finally:
        for sock in socks:
            sock.close()
    c.close()


# ---- 900 partial large sets -------------------------------------------------

VALUE_LEN = 1000000
SENT_LEN = 900000


def value_of(i):
    return (b"%06d" % i * (VALUE_LEN // 6 + 1))[:VALUE_LEN]


def partial_set_conns(s, n):
    """n non-blocking connections, each with its set line and 900 KB of
    the value queued to send: [sock, bytes left to send]."""
    out = []
    for i in range(n):
        sock = s.connect()
        sock.setblocking(False)
        out.append([sock, b"set k%d 0 0 %d\r\n" % (i, VALUE_LEN) + value_of(i)[:SENT_LEN]])
    return out


def test_900_partial_large_sets(server_factory, threads):
    n = 900
    raise_nofile(n + 200)
    s = server_factory("-m", 64, "-c", n + 100, threads=threads)
    c = Conn(s.connect())
    roundtrip(c, 0)
    st = c.stats("settings")
    assert int(st["conn_mem_max"]) == 16 * MIB
    limit_kib = (64 + 64) * 1024
    conns = partial_set_conns(s, n)
    pending = list(conns)
    peak = s.rss_kib()
    checks = 0
    deadline = time.monotonic() + 120
    while pending and time.monotonic() < deadline:
        _, writable, _ = select.select([], [e[0] for e in pending], [], 0.1)
        for sock in writable:
            e = next(e for e in pending if e[0] is sock)
            try:
                e[1] = e[1][sock.send(e[1][:1 << 16]):]
            except BlockingIOError:
                pass
            if not e[1]:
                pending.remove(e)
        assert s.alive()
        peak = max(peak, s.rss_kib())
        checks += 1
        roundtrip(c, checks)
        if not SANITIZER:
            assert peak <= limit_kib, "RSS %d KiB over -m + 64 MiB" % peak
    assert not pending, "%d connections could not send their 900 KB" % len(pending)
    # Every connection is answered or waiting: the refused ones have their
    # SERVER_ERROR (read here if it is there already), the others nothing.
    refused, waiting, taken = [], [], []
    for i, (sock, _) in enumerate(conns):
        sock.setblocking(True)
        sock.settimeout(20)
        r, _, _ = select.select([sock], [], [], 0)
        if r:
            assert Conn(sock).line() == OOM_STORE
            refused.append(i)
        else:
            waiting.append(i)
    st = c.stats()
    assert int(st["conn_buffer_refused"]) >= len(refused) > 0
    assert int(st["conn_buffer_bytes"]) <= 16 * MIB + 4 * MIB
    peak = max(peak, s.rss_kib())
    if not SANITIZER:
        assert peak <= limit_kib, "RSS %d KiB over -m + 64 MiB" % peak
    roundtrip(c, checks + 1)
    # The waiting sets complete and read back (a refusal still on its way
    # is told by its reply); a refused connection, once its data is
    # swallowed, is a normal connection again.
    for i in waiting:
        tc = Conn(conns[i][0])
        line = tc.cmd(value_of(i)[SENT_LEN:] + b"\r\n")
        if line == OOM_STORE:
            refused.append(i)
            continue
        assert line == "STORED"
        taken.append(i)
        assert tc.get_values("get k%d\r\n" % i) == {"k%d" % i: (0, value_of(i))}
    assert taken, "every set was refused"
    assert len(taken) <= 16 * MIB // VALUE_LEN + 4 * threads, len(taken)
    for i in refused[:50]:
        sock = conns[i][0]
        rc = Conn(sock)
        if i in waiting:
            continue  # its rest is sent already
        rc.send(b"x" * (VALUE_LEN - SENT_LEN) + b"\r\n")
        assert rc.get_values("get k%d\r\n" % i) == {}
        roundtrip(rc, i)
    for sock, _ in conns:
        sock.close()
    st = wait_stat(c, "curr_connections", lambda v: v == 1)
    assert int(st["conn_buffer_bytes"]) <= 4 * 4 * 16384
    c.close()


# ---- a reader that stops reading --------------------------------------------

def test_slow_reader_paused_then_closed(server_factory, threads):
    s = server_factory("-o", "conn_mem_max=4m", threads=threads)
    c = Conn(s.connect())
    for k in range(16):
        assert c.cmd(b"set big%d 0 0 %d\r\n" % (k, BIG_LEN) + BIG_VALUE + b"\r\n") == "STORED"
    n = [0]

    def check():
        n[0] += 1
        roundtrip(c, n[0])

    # The attacker: pipelined gets of 100 KB values, never read.
    a = s.connect()
    a.setblocking(False)
    batch = b"".join(b"get big%d\r\n" % (i % 16) for i in range(1024))
    sent = 0
    blocked_since = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        check()
        try:
            sent += a.send(batch)
            blocked_since = None
            continue
        except BlockingIOError:
            pass
        now = time.monotonic()
        if blocked_since is None:
            blocked_since = now
        elif now - blocked_since >= 1.5:
            break
        select.select([], [a], [], 0.05)
    # Paused: the daemon stopped reading long before 512 MB of answers.
    assert blocked_since is not None and sent < 64 * MIB, sent
    st = c.stats()
    assert int(st["conn_buffer_bytes"]) >= 512 * 1024, st["conn_buffer_bytes"]
    assert int(st["conn_slow_closed"]) == 0
    # Others take the rest of the budget with large sets until one is
    # refused; the slow reader, holding more than its share, goes.
    # Each presser's set is either refused (the counter moves, the reply
    # comes) or taken (its read buffer shows in conn_buffer_bytes).
    pressers = []
    for i in range(8):
        st = c.stats()
        r0, b0 = int(st["conn_buffer_refused"]), int(st["conn_buffer_bytes"])
        p = Conn(s.connect())
        p.send(b"set p%d 0 0 %d\r\n" % (i, VALUE_LEN) + b"q" * SENT_LEN)
        pressers.append(p)
        st = wait_stat(c, "conn_buffer_refused", lambda v: True)
        deadline = time.monotonic() + 15
        while (int(st["conn_buffer_refused"]) == r0 and
               int(st["conn_buffer_bytes"]) < b0 + SENT_LEN // 2):
            assert time.monotonic() < deadline, "the set was neither taken nor refused"
            time.sleep(0.01)
            st = c.stats()
        p.refused = int(st["conn_buffer_refused"]) > r0
        if p.refused:
            break
        check()
    assert pressers[-1].refused, "the budget never ran out"
    assert pressers[-1].line() == OOM_STORE
    wait_stat(c, "conn_slow_closed", lambda v: v >= 1, each=check)
    # The attacker sees the end of its connection after what was sent.
    a.setblocking(True)
    a.settimeout(10)
    got = 0
    while got < 256 * MIB:
        try:
            chunk = a.recv(1 << 20)
        except ConnectionResetError:
            break
        if not chunk:
            break
        got += len(chunk)
    a.close()
    # Everybody else: served, and the taken large sets complete.
    for i, p in enumerate(pressers):
        rest = b"q" * (VALUE_LEN - SENT_LEN) + b"\r\n"
        if p.refused:
            p.send(rest)
            assert p.get_values("get p%d\r\n" % i) == {}
        else:
            assert p.cmd(rest) == "STORED"
            assert p.get_values("get p%d\r\n" % i) == {"p%d" % i: (0, b"q" * VALUE_LEN)}
        p.close()
    check()
    st = wait_stat(c, "curr_connections", lambda v: v == 1)
    assert int(st["conn_buffer_refused"]) >= 1
    c.close()


LONE_LEN = 24 * MIB  # more than the socket buffers on both sides hold


def test_lone_reply_holds_only_its_own_bytes(server_factory):
    """A get answered alone, whose client does not read, holds its reply's
    bytes and no more: the reply's segment is the connection's own
    (net/conn.c, seg0), not a block of the request arena (one block more,
    16384 bytes, before). Then the client reads it whole."""
    s = server_factory("-I", "32m", "-m", "256", threads=1)
    c = Conn(s.connect())
    val = bytes(range(251)) * (LONE_LEN // 251)
    assert c.cmd(b"set lone 0 0 %d\r\n%s\r\n" % (len(val), val)) == "STORED"
    # What the stats request itself holds while it is answered, and the
    # pooled blocks' churn, are the same in both readings.
    b0 = int(c.stats()["conn_buffer_bytes"])
    slow = s.connect()
    try:
        slow.sendall(b"get lone\r\n")
        st = wait_stat(c, "conn_buffer_bytes", lambda v: v - b0 >= len(val))
        held = int(st["conn_buffer_bytes"]) - b0
        line = b"VALUE lone 0 %d\r\n" % len(val)
        assert held < len(line) + len(val) + 7 + 1024, held
        got = bytearray()
        want = len(line) + len(val) + len(b"\r\nEND\r\n")
        while len(got) < want:
            chunk = slow.recv(1 << 20)
            assert chunk, "closed after %d bytes" % len(got)
            got += chunk
        assert bytes(got) == line + val + b"\r\nEND\r\n"
    finally:
        slow.close()
    wait_stat(c, "conn_buffer_bytes", lambda v: v <= b0)


# ---- the flag and the stats -------------------------------------------------

def run(argv):
    return subprocess.run(argv, capture_output=True, text=True, timeout=10)


@pytest.mark.parametrize("value", ["abc", "0", "512k", "-1", "", "1x", "2000g",
                                   "99999999999999999999"])
def test_conn_mem_max_bad_value_exits_64(value):
    r = run([BIN, "-p", "0", "-s", "/nonexistent/never", "-o", "conn_mem_max=" + value])
    assert r.returncode == 64, (r.returncode, r.stderr)
    assert r.stderr.count("\n") == 1 and "conn_mem_max" in r.stderr, r.stderr


def test_conn_mem_max_in_help():
    r = run([BIN, "-h"])
    assert r.returncode == 0 and "conn_mem_max=" in r.stdout


@pytest.mark.parametrize("args,want", [
    ((), 16 * MIB),                               # max(16m, 64m / 4)
    (("-m", "256"), 64 * MIB),                    # -m / 4
    (("-o", "conn_mem_max=1m"), MIB),
    (("-o", "conn_mem_max=64M"), 64 * MIB),
    (("-o", "line_max=8k,conn_mem_max=3145728"), 3 * MIB),
    (("-m", "1024", "-o", "conn_mem_max=2g"), 2048 * MIB),
])
def test_conn_mem_max_setting(server_factory, args, want):
    s = server_factory(*args, threads=2)
    c = Conn(s.connect())
    st = c.stats("settings")
    assert int(st["conn_mem_max"]) == want
    c.close()


def test_stats_lines_move(server_factory, threads):
    s = server_factory("-o", "conn_mem_max=1536k", threads=threads)
    c = Conn(s.connect())
    st = c.stats()
    for name in ("conn_buffer_bytes", "conn_buffer_refused", "conn_slow_closed"):
        assert name in st
    idle = int(st["conn_buffer_bytes"])
    assert int(st["conn_buffer_refused"]) == 0
    # A partial 1 MB set holds its read buffer ...
    a = Conn(s.connect())
    a.send(b"set part 0 0 %d\r\n" % VALUE_LEN + b"z" * 1000)
    st = wait_stat(c, "conn_buffer_bytes", lambda v: v >= VALUE_LEN)
    # ... a second one does not fit in 1.5 MiB and is refused ...
    b = Conn(s.connect())
    b.send(b"set part2 0 0 %d\r\n" % VALUE_LEN)
    assert b.line() == OOM_STORE
    st = c.stats()
    assert int(st["conn_buffer_refused"]) == 1
    # ... and once the first completes, the memory is given back.
    assert a.cmd(b"z" * (VALUE_LEN - 1000) + b"\r\n") == "STORED"
    st = wait_stat(c, "conn_buffer_bytes", lambda v: v <= max(idle, 2 * 4 * 16384))
    # stats reset zeroes the counter, not the gauge.
    assert c.cmd("stats reset\r\n") == "RESET"
    assert int(c.stats()["conn_buffer_refused"]) == 0
    b.send(b"y" * VALUE_LEN + b"\r\n")
    assert b.cmd("version\r\n").startswith("VERSION ")
    for x in (a, b, c):
        x.close()
