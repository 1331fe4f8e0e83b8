"""Direct replies: a request line whose remote keys all live on one other
shard, on a connection with nothing else queued or being sent, is answered
by that shard's worker on the client's socket itself, the home's own keys'
bytes included (net/process.c). These tests check that the path
is taken (stats shards: direct_replies, direct_partial), that what it sends
is what the home would have sent, that a reply the socket takes only in part
is finished by the home in order, and that a client that goes away meanwhile
harms nobody. Gets are lent reads when the key's owner sleeps (test_lend.py):
these servers run with -o lend=0, so that every remote get takes
the path under test."""
import os
import socket
import time

import pytest

from conftest import Conn
from test_edges import MEMCACHED, Memcached

NO_LEND = ("-o", "lend=0")


@pytest.fixture
def memcached():
    if not os.access(MEMCACHED, os.X_OK):
        pytest.skip("no reference memcached")
    m = Memcached()
    yield m
    m.stop()


def shards_total(c, name, n):
    st = c.stats("shards")
    return sum(int(st["shard%d_%s" % (i, name)]) for i in range(n))


@pytest.mark.parametrize("unix", [False, True], ids=["tcp", "unix"])
def test_direct_single_key_ops(server_factory, memcached, unix):
    """Every classic single-key command, one at a time on an idle
    connection, gets memcached's reply; some of them went out directly."""
    s = server_factory(*NO_LEND, threads=2, unix=unix)
    c = Conn(s.connect())
    m = Conn(memcached.connect())
    d0 = shards_total(c, "direct_replies", 2)
    x0 = shards_total(c, "xreq_sent", 2)
    script = []
    for i in range(40):
        k = "d%d" % i
        script += ["set %s %d 0 5\r\nval%02d\r\n" % (k, i, i),
                   "get %s\r\n" % k, "gets %s\r\n" % k,
                   "get %s-missing\r\n" % k,
                   "append %s 0 0 1\r\n!\r\n" % k,
                   "add %s 0 0 1\r\nx\r\n" % k,
                   "replace %s-missing 0 0 1\r\nx\r\n" % k,
                   "touch %s 100\r\n" % k, "gat 100 %s\r\n" % k,
                   "set n%d 0 0 2\r\n10\r\n" % i, "incr n%d 5\r\n" % i,
                   "decr n%d 100\r\n" % i, "incr %s 1\r\n" % k,
                   "delete %s\r\n" % k, "delete %s\r\n" % k,
                   "get %s\r\n" % k]
    for line in script:
        if line.startswith(("get ", "gat ")):
            assert c.get_values(line) == m.get_values(line), line
        elif line.startswith("gets "):
            # cas values differ between servers; the rest must not
            a, b = c.get_values(line), m.get_values(line)
            assert {k: v[:2] for k, v in a.items()} == \
                {k: v[:2] for k, v in b.items()}, line
        else:
            assert c.cmd(line) == m.cmd(line), line
    d1 = shards_total(c, "direct_replies", 2)
    x1 = shards_total(c, "xreq_sent", 2)
    # about half the keys live on the other shard; each of their requests
    # had the connection to itself, so all but those that arrived before
    # the previous remote answer was back went out directly
    assert d1 - d0 > len(script) // 8
    assert d1 - d0 <= x1 - x0
    c.close()
    m.close()


def test_direct_multi_get_lines(server_factory, memcached):
    """Multi-gets of keys on both shards, hits and misses, one line at a
    time: memcached's replies, in order; most lines went out directly. Lines
    with more pieces than a direct line holds, or more remote keys than a
    connection has out at once, are answered as usual."""
    s = server_factory(*NO_LEND, threads=2)
    c = Conn(s.connect())
    m = Conn(memcached.connect())
    for i in range(300):
        line = "set m%d %d 0 %d\r\n%s\r\n" % (i, i, 3 + i % 50, "v" * (3 + i % 50))
        assert c.cmd(line) == m.cmd(line) == "STORED"
    d0 = shards_total(c, "direct_replies", 2)
    lines = 0
    for n in (2, 3, 10, 40, 100, 300):
        for start in range(0, 300, 37):
            keys = ["m%d" % ((start + 7 * j) % 300) if j % 4 else "none%d" % j
                    for j in range(n)]
            for cmd in ("get", "gets", "gat 0"):
                line = "%s %s\r\n" % (cmd, " ".join(keys))
                c.send(line)
                m.send(line)
                a, b = c.read_blocks(), m.read_blocks()
                if cmd == "gets":
                    a, b = [v[:3] for v in a], [v[:3] for v in b]
                assert a == b, line[:80]
                lines += 1
    d1 = shards_total(c, "direct_replies", 2)
    assert d1 - d0 > lines // 4
    c.close()
    m.close()


def small_window(server):
    """A connection whose receive buffer is small, so that a large reply
    does not fit into the socket at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(20)
    sock.connect(server.addr)
    return Conn(sock)


def test_direct_partial_reply_finished_in_order(server_factory):
    """A large value sent directly fills the socket; the home sends the
    rest, and the replies to requests pipelined behind it follow it."""
    # larger than the kernel's largest send buffer (tcp_wmem), so that no
    # socket takes it at once
    s = server_factory("-I", "8m", "-m", "256", *NO_LEND, threads=2)
    c = Conn(s.connect())
    big = {}
    for i in range(8):
        v = bytes([65 + i]) * (6 << 20)
        big["big%d" % i] = v
        assert c.cmd(b"set big%d 3 0 %d\r\n" % (i, len(v)) + v + b"\r\n") == "STORED"
    assert c.cmd("set small 0 0 2\r\nok\r\n") == "STORED"
    p = small_window(s)
    partial = 0
    for k, v in big.items():
        # the get alone first (so it may go out directly), then more
        # requests behind it without reading
        p.send("get %s\r\n" % k)
        p.send("get small\r\nset after 0 0 1\r\nz\r\nget %s\r\n" % k)
        assert p.read_values() == {k: (3, v)}
        assert p.read_values() == {"small": (0, b"ok")}
        assert p.line() == "STORED"
        assert p.read_values() == {k: (3, v)}
        partial = shards_total(p, "direct_partial", 2)
        if partial:
            break
    assert partial > 0, "no direct reply was partial"
    # lines that mix the big values of both shards: a partial piece may be
    # the home's own or the owner's
    keys = list(big)
    before = partial
    for i in range(0, len(keys) - 1):
        p.send("get %s small %s\r\n" % (keys[i], keys[i + 1]))
        p.send("get small\r\n")
        assert p.read_blocks() == [
            (keys[i], 3, big[keys[i]]), ("small", 0, b"ok"),
            (keys[i + 1], 3, big[keys[i + 1]])]
        assert p.read_values() == {"small": (0, b"ok")}
    assert shards_total(p, "direct_partial", 2) > before
    p.close()
    c.close()


def test_direct_reply_to_a_client_gone(server_factory):
    """Clients that ask for remote keys and close (or reset) at once: the
    owner's send fails or goes nowhere, and the server serves on."""
    s = server_factory(*NO_LEND, threads=2)
    c = Conn(s.connect())
    v = b"v" * 200000
    for i in range(8):
        assert c.cmd(b"set g%d 0 0 %d\r\n" % (i, len(v)) + v + b"\r\n") == "STORED"
    for n in range(100):
        sock = s.connect()
        if n % 2:
            # RST on close
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                            b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.sendall(b"get g%d\r\n" % (n % 8))
        sock.close()
    for i in range(8):
        assert c.get_values("get g%d\r\n" % i) == {"g%d" % i: (0, v)}
    assert shards_total(c, "direct_replies", 2) > 0
    c.close()


def test_reply_after_noreply_orders_them(server_factory):
    """A reply leaves only after the connection's earlier noreply requests
    have run, on whichever shard (memcached runs a connection's requests in
    order): once `version` is answered, another connection sees every
    noreply delete and set before it."""
    s = server_factory(*NO_LEND, threads=4)
    a = Conn(s.connect())
    b = Conn(s.connect())
    for r in range(40):
        keys = ["o%d_%d" % (r, i) for i in range(30)]
        a.send("".join("set %s 0 0 1 noreply\r\nx\r\n" % k for k in keys))
        a.send("".join("delete %s noreply\r\n" % k for k in keys[::2]))
        assert a.cmd("version\r\n").startswith("VERSION ")
        got = b.get_values("get %s\r\n" % " ".join(keys))
        assert sorted(got) == sorted(keys[1::2]), r
    a.close()
    b.close()


def test_cross_shard_reply_one_send(server_factory):
    """A get whose keys live on several shards leaves in one send once every
    shard's answer is back, not a piece per shard (net/conn.c,
    CONN_HOLD_MAX); a reply past that size streams, whole and in order."""
    s = server_factory(*NO_LEND, threads=4)
    c = Conn(s.connect())
    keys = ["hold%d" % i for i in range(24)]
    for k in keys:
        assert c.cmd("set %s 0 0 3\r\nabc\r\n" % k) == "STORED"
    line = "get " + " ".join(keys) + "\r\n"
    # what one stats reply costs in sends, measured the same way
    a = shards_total(c, "sends", 4)
    per_stats = shards_total(c, "sends", 4) - a
    x0 = shards_total(c, "xreq_sent", 4)
    d0 = shards_total(c, "direct_replies", 4)
    a = shards_total(c, "sends", 4)
    for _ in range(10):
        assert c.get_values(line) == {k: (0, b"abc") for k in keys}
    sent = shards_total(c, "sends", 4) - a - per_stats
    # the keys went to other shards, and not as a direct line
    assert shards_total(c, "xreq_sent", 4) - x0 >= 10 * 2
    assert shards_total(c, "direct_replies", 4) == d0
    assert sent == 10, sent
    # 24 values of 3000 bytes: past the hold, still every byte in order
    big = {k: bytes([65 + i % 26]) * 3000 for i, k in enumerate(keys)}
    for k, v in big.items():
        assert c.cmd(b"set %s 0 0 3000\r\n%s\r\n" % (k.encode(), v)) == "STORED"
    for _ in range(3):
        assert c.get_values(line) == {k: (0, v) for k, v in big.items()}
    c.close()


def stats_handover(c):
    """How many requests a stats shards on c hands over to other shards."""
    x = shards_total(c, "xreq_sent", 2)
    return shards_total(c, "xreq_sent", 2) - x


def is_remote(c, k, per_stats):
    """At -t 2: whether a get of k on c hands a request over (k lives on
    the shard other than c's home; k is set to "ok")."""
    x0 = shards_total(c, "xreq_sent", 2)
    assert c.get_values("get %s\r\n" % k) == {k: (0, b"ok")}
    return shards_total(c, "xreq_sent", 2) - x0 > per_stats


def local_and_remote(c, prefix):
    """At -t 2: a key of c's home shard and one of the other, each set to
    "ok" (a get of the remote one hands a request over)."""
    per_stats = stats_handover(c)
    where = {}
    for i in range(64):
        k = "%s%d" % (prefix, i)
        assert c.cmd("set %s 0 0 2\r\nok\r\n" % k) == "STORED"
        where.setdefault(is_remote(c, k, per_stats), k)
    assert set(where) == {False, True}, where
    return where[False], where[True]


def test_pipelined_reply_not_held(server_factory):
    """A whole reply goes out at once even while a later pipelined request
    waits on another shard: two gets in one write, the first key the home
    shard's and the second another's, take two sends (holding the first
    for the second would take one, and under a steady stream would hold
    every reply until 16 KiB of them had piled up)."""
    s = server_factory(*NO_LEND, threads=2)
    c = Conn(s.connect())
    local, remote = local_and_remote(c, "pl")
    a = shards_total(c, "sends", 2)
    per_stats = shards_total(c, "sends", 2) - a
    for _ in range(5):
        a = shards_total(c, "sends", 2)
        c.send("get %s\r\nget %s\r\n" % (local, remote))
        assert c.read_values() == {local: (0, b"ok")}
        assert c.read_values() == {remote: (0, b"ok")}
        assert shards_total(c, "sends", 2) - a - per_stats == 2
    c.close()


def wait_parked(c, n):
    """Polls stats shards on c until the shards parked n batches in all
    (bounded: 10 s); asserts they never parked more."""
    deadline = time.monotonic() + 10
    while True:
        parked = shards_total(c, "parked", 2)
        assert parked <= n
        if parked == n or time.monotonic() > deadline:
            break
    assert parked == n


def test_direct_batch_parked(server_factory):
    """A batch of direct lines that the owner sent whole holds nothing a
    client waits for: the owner parks it for the home's next pass instead
    of waking the home (stats shards _parked). A request pipelined behind a
    direct line is different: its reply must follow the line's, so the home
    asks for the batch before it sleeps and the owner hands it back by
    message (nothing parked; without the ask, that reply would wait for the
    home's next tick)."""
    s = server_factory(*NO_LEND, threads=2)
    c = Conn(s.connect())
    local, remote = local_and_remote(c, "pk")
    # The owner parks a batch right after it sent the line, so a client
    # that answered at once could meet the batch still out (the owner
    # preempted in between) and the home would ask for it back. The test
    # waits for each park on a second connection whose home is the owner:
    # its stats hand requests over from the owner to the home, which adds
    # nothing to the home's outbox to the owner and so asks nothing back.
    watch = None
    for _ in range(64):
        w = Conn(s.connect())
        if not is_remote(w, remote, stats_handover(w)):
            watch = w
            break
        w.close()
    assert watch is not None, "no connection landed on the owner's worker"
    p0 = shards_total(watch, "parked", 2)
    for i in range(20):
        assert c.get_values("get %s\r\n" % remote) == {remote: (0, b"ok")}
        wait_parked(watch, p0 + 2 * i + 1)
        assert c.cmd("touch %s 0\r\n" % remote) == "TOUCHED"
        wait_parked(watch, p0 + 2 * i + 2)
    watch.close()
    # Here the home asks before its loop submits the batch's message, so
    # the owner cannot park first, however the two are scheduled.
    p0 = shards_total(c, "parked", 2)
    for _ in range(20):
        c.send("get %s\r\nget %s\r\n" % (remote, local))
        assert c.read_values() == {remote: (0, b"ok")}
        assert c.read_values() == {local: (0, b"ok")}
        c.send("get %s\r\nversion\r\n" % remote)
        assert c.read_values() == {remote: (0, b"ok")}
        assert c.line().startswith("VERSION ")
        c.send("touch %s 0\r\nversion\r\n" % remote)
        assert c.line() == "TOUCHED"
        assert c.line().startswith("VERSION ")
    assert shards_total(c, "parked", 2) - p0 == 0
    c.close()
