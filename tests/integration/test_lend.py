"""Lent reads: while a worker sleeps, another worker may serve a get of one
of its keys from its shard itself (shard_read_lent, net/worker.h), instead
of handing the key over and waking it. These tests check that the path is
taken (stats shards _borrowed), that a get never overtakes an earlier store
or delete of its own connection (those still go to the owner, and a get
waits behind them), and that -o lend_reads=0 turns it off. That a lent read
leaves a dead item to its owner is tested in tests/unit/test_shard.c."""
import pytest

from conftest import Conn


def total(c, name, n):
    st = c.stats("shards")
    return sum(int(st["shard%d_%s" % (i, name)]) for i in range(n))


def remote_keys(c, n, prefix):
    """Keys (set to their own name) whose get another worker served."""
    out = []
    for i in range(64):
        k = "%s%d" % (prefix, i)
        assert c.cmd("set %s 0 0 %d\r\n%s\r\n" % (k, len(k), k)) == "STORED"
        b = total(c, "borrowed", n)
        assert c.get_values("get %s\r\n" % k) == {k: (0, k.encode())}
        if total(c, "borrowed", n) > b:
            out.append(k)
    return out


def test_lent_gets(server_factory):
    """Gets of another shard's keys on an idle connection are served from
    the lent shard: single keys and multi-gets, hits and misses, with the
    right values and the owner's hit and miss counters."""
    s = server_factory(threads=2)
    c = Conn(s.connect())
    keys = remote_keys(c, 2, "lg")
    assert len(keys) > 10, keys
    hits0, miss0 = total(c, "hits", 2), total(c, "misses", 2)
    b0 = total(c, "borrowed", 2)
    for k in keys:
        assert c.get_values("get %s %s-none\r\n" % (k, k)) == {k: (0, k.encode())}
        v = c.get_values("gets %s\r\n" % k)
        assert list(v) == [k] and v[k][:2] == (0, k.encode())
    # each get of a remote key was lent (the shard's owner was asleep:
    # nothing else runs); its hit or miss counts as the owner's
    assert total(c, "borrowed", 2) - b0 >= len(keys) * 3 // 2
    assert total(c, "hits", 2) - hits0 == 2 * len(keys)
    assert total(c, "misses", 2) - miss0 == len(keys)
    c.close()


@pytest.mark.parametrize("noreply", [False, True], ids=["reply", "noreply"])
def test_lent_get_follows_own_store(server_factory, noreply):
    """A store or delete and a get of the same remote key in one write: the
    store goes to the owner, so the get must not read the lent shard before
    it has run (it waits behind it) - it sees the new value every time."""
    s = server_factory(threads=2)
    c = Conn(s.connect())
    k = remote_keys(c, 2, "ls")[0]
    nr = " noreply" if noreply else ""
    for i in range(200):
        v = "v%d" % i
        c.send("set %s 0 0 %d%s\r\n%s\r\nget %s\r\n" % (k, len(v), nr, v, k))
        if not noreply:
            assert c.line() == "STORED"
        assert c.read_values() == {k: (0, v.encode())}, i
        c.send("delete %s%s\r\nget %s\r\n" % (k, nr, k))
        if not noreply:
            assert c.line() == "DELETED"
        assert c.read_values() == {}, i
    c.close()


def test_lend_reads_off(server_factory):
    """-o lend_reads=0: every remote get goes to its owner."""
    s = server_factory("-o", "lend_reads=0", threads=2)
    c = Conn(s.connect())
    x0 = total(c, "xreq_sent", 2)
    for i in range(64):
        k = "lo%d" % i
        assert c.cmd("set %s 0 0 2\r\nok\r\n" % k) == "STORED"
        assert c.get_values("get %s\r\n" % k) == {k: (0, b"ok")}
    assert total(c, "borrowed", 2) == 0
    assert total(c, "xreq_sent", 2) - x0 > 40  # about 64 sets + 32 gets
    c.close()
