"""Real memcached clients against ringcached: pymemcache (Debian's
python3-pymemcache) and libmemcached's memccapable.

At -t 4 most keys of a multi-get live on other workers' shards, so these
tests cross the batched messaging path as much as the inline one.
"""
import os
import shutil
import subprocess
import threading
import time

import pytest
from pymemcache.client.base import Client

from conftest import Conn, raise_nofile


def client(server, **kw):
    return Client(server.addr, connect_timeout=10, timeout=10, **kw)


def test_multi_get_across_shards(server):
    c = client(server)
    values = {"key:%d" % i: ("v%d" % i).encode() * (i % 7 + 1) for i in range(500)}
    assert c.set_many(values, noreply=False) == []
    got = c.get_many(list(values) + ["missing:%d" % i for i in range(50)])
    assert got == values
    st = c.stats()
    assert st[b"get_hits"] == 500 and st[b"get_misses"] == 50
    c.close()


def test_gets_order_within_one_request(conn):
    # One get with keys on every shard: VALUE lines come in request order.
    keys = ["o%03d" % i for i in range(256)]
    for k in keys:
        conn.send("set %s 0 0 %d noreply\r\n%s\r\n" % (k, len(k), k))
    conn.send("get %s\r\n" % " ".join(keys + keys[::-1]))
    for k in keys + keys[::-1]:
        assert conn.line() == "VALUE %s 0 %d" % (k, len(k))
        assert conn.line() == k
    assert conn.line() == "END"


def test_pipelining_hundreds_in_order(server):
    s = server.connect()
    c = Conn(s)
    n = 800
    batch = []
    for i in range(n):
        batch.append("set pk%d 0 0 %d\r\n%d\r\n" % (i, len(str(i * 7)), i * 7))
        batch.append("incr pk%d 1\r\n" % i)
        batch.append("gets pk%d\r\n" % i)
    c.send("".join(batch))
    for i in range(n):
        assert c.line() == "STORED"
        assert c.line() == str(i * 7 + 1)
        parts = c.line().split()
        assert parts[:3] == ["VALUE", "pk%d" % i, "0"]
        assert c.line() == str(i * 7 + 1)
        assert c.line() == "END"
    c.close()


def test_noreply_with_pymemcache(server):
    c = client(server, default_noreply=True)
    for i in range(200):
        c.set("nr%d" % i, b"x%d" % i)
    c.delete("nr0")
    c.add("nr1", b"other")
    # noreply has no answer to wait for; a request with one orders the rest.
    assert c.version()
    c2 = client(server)
    got = c2.get_many(["nr%d" % i for i in range(200)])
    assert "nr0" not in got and got["nr1"] == b"x1" and len(got) == 199
    c.close()
    c2.close()


def test_cas_race_between_two_clients(server):
    a, b = client(server), client(server)
    a.set("counter", b"0", noreply=False)
    errors = []

    def bump(c, times):
        done = 0
        try:
            while done < times:
                value, cas = c.gets("counter")
                if c.cas("counter", str(int(value) + 1).encode(), cas, noreply=False):
                    done += 1
        except Exception as e:  # surfaced below
            errors.append(e)

    ta = threading.Thread(target=bump, args=(a, 300))
    tb = threading.Thread(target=bump, args=(b, 300))
    ta.start(); tb.start()
    ta.join(60); tb.join(60)
    assert not ta.is_alive() and not tb.is_alive() and not errors
    # Every successful cas counted exactly once: no lost update.
    assert a.get("counter") == b"600"
    st = a.stats()
    assert st[b"cas_hits"] == 600
    a.close(); b.close()


def test_values_at_item_limit(server_factory):
    s = server_factory("-I", "1m", "-m", "64", threads=2)
    c = client(s)
    big = os.urandom(1 << 20)
    assert c.set("big", big, noreply=False) is True
    assert c.get("big") == big
    from pymemcache.exceptions import MemcacheServerError
    with pytest.raises(MemcacheServerError, match="object too large"):
        c.set("big2", big + b"x", noreply=False)
    # The connection is still usable and the neighbour intact.
    assert c.get("big") == big
    c.close()


def test_thousand_concurrent_connections(server_factory):
    raise_nofile(4096)
    s = server_factory("-c", "2000", threads=4)
    socks = [s.connect() for _ in range(1000)]
    conns = [Conn(x) for x in socks]
    for i, c in enumerate(conns):
        c.send("set cc%d 0 0 %d\r\n%d\r\n" % (i, len(str(i)), i))
    for c in conns:
        assert c.line() == "STORED"
    for i, c in enumerate(conns):
        c.send("get cc%d\r\n" % ((i * 7919) % 1000))
    for i, c in enumerate(conns):
        j = (i * 7919) % 1000
        assert c.read_values() == {"cc%d" % j: (0, str(j).encode())}
    st = conns[0].stats()
    assert int(st["curr_connections"]) == 1000
    for c in conns:
        c.close()


def test_connection_limit(server_factory):
    s = server_factory("-c", "5", threads=2)
    held = [Conn(s.connect()) for _ in range(5)]
    for c in held:  # make sure all five are accepted and counted
        assert c.cmd("version\r\n").startswith("VERSION")
    extra = Conn(s.connect())
    assert extra.line() == "ERROR Too many open connections"
    assert extra.closed_by_peer()
    extra.close()
    assert held[0].cmd("set a 0 0 1\r\nx\r\n") == "STORED"
    held[4].close()
    held.pop()
    # Wait (bounded) until the daemon has seen the close, then a new
    # connection must be served.
    deadline = time.monotonic() + 10
    while int(held[0].stats()["curr_connections"]) != 4:
        assert time.monotonic() < deadline, "the closed connection is still counted"
    c = Conn(s.connect())
    assert c.cmd("version\r\n").startswith("VERSION")
    c.close()
    for c in held:
        c.close()


@pytest.mark.skipif(not shutil.which("memccapable"), reason="libmemcached-tools missing")
def test_memccapable(server):
    p = subprocess.run(["memccapable", "-a", "-h", "127.0.0.1", "-p", str(server.port)],
                       capture_output=True, text=True, timeout=300)
    assert "All tests passed" in p.stdout, p.stdout + p.stderr
