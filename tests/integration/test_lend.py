"""Lent reads and stores: while a worker sleeps, another worker may serve a
get of one of its keys, or a set that replaces one of its items, from its
shard itself (shard_read_lent, shard_store_lent, net/worker.h), instead of
handing the key over and waking it. These tests check that the path is
taken (stats shards _borrowed), that a get never overtakes an earlier store
or delete of its own connection (a store or delete the owner runs, and a
get waits behind it), and that -o lend=0 turns it off. That a lent read or
store leaves to its owner whatever would allocate, free or drop is tested
in tests/unit/test_shard.c."""
import pytest

from conftest import Conn


def total(c, name, n):
    st = c.stats("shards")
    return sum(int(st["shard%d_%s" % (i, name)]) for i in range(n))


def totals(c, n, *names):
    """Counters summed over the shards, from one `stats shards`; its
    fan-out to the other shards counts one xreq_sent after they are read."""
    st = c.stats("shards")
    return [sum(int(st["shard%d_%s" % (i, m)]) for i in range(n)) for m in names]


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


def test_lent_sets(server_factory):
    """Sets that replace another shard's items on an idle connection run on
    the lent shard: the new values, flags and cas are what gets read back,
    and no request goes to the owner; a set of a new key (an index entry)
    and an add still do."""
    s = server_factory(threads=2)
    c = Conn(s.connect())
    keys = remote_keys(c, 2, "lw")
    assert len(keys) > 10, keys
    cas0 = {k: c.get_values("gets %s\r\n" % k)[k][2] for k in keys}
    b0, x0 = totals(c, 2, "borrowed", "xreq_sent")
    for i, k in enumerate(keys):
        v = "new-%s" % k
        assert c.cmd("set %s %d 0 %d\r\n%s\r\n" % (k, i, len(v), v)) == "STORED"
    c.send("".join("set %s 0 0 2 noreply\r\nnr\r\n" % k for k in keys[:5]))
    # each set was lent or went to the owner (the stats' own request is
    # the 1); lent unless the owner was awake or the batch of the request
    # before was not back yet (worker_borrow), which is rare on an idle
    # connection
    b, x = totals(c, 2, "borrowed", "xreq_sent")
    assert (b - b0) + (x - x0 - 1) == len(keys) + 5
    assert b - b0 >= len(keys) * 3 // 4
    for i, k in enumerate(keys):
        v = c.get_values("gets %s\r\n" % k)[k]
        want = b"nr" if i < 5 else ("new-%s" % k).encode()
        assert v[:2] == (0 if i < 5 else i, want), k
        assert v[2] != cas0[k]
    # a key set anew needs an index entry: its owner stores it, as it
    # runs every delete and add
    b1, x1 = totals(c, 2, "borrowed", "xreq_sent")
    for k in keys:
        assert c.cmd("delete %s\r\n" % k) == "DELETED"
        assert c.cmd("set %s 0 0 1\r\nn\r\n" % k) == "STORED"
        assert c.cmd("add %s 0 0 1\r\na\r\n" % k) == "NOT_STORED"
        assert c.get_values("get %s\r\n" % k) == {k: (0, b"n")}
    b, x = totals(c, 2, "borrowed", "xreq_sent")
    assert b - b1 <= len(keys)  # gets only
    assert x - x1 - 1 == 3 * len(keys) + len(keys) - (b - b1)
    c.close()


def test_lend_off(server_factory):
    """-o lend=0: every remote get and set goes to its owner."""
    s = server_factory("-o", "lend=0", threads=2)
    c = Conn(s.connect())
    x0 = total(c, "xreq_sent", 2)
    for i in range(64):
        k = "lo%d" % i
        assert c.cmd("set %s 0 0 2\r\nok\r\n" % k) == "STORED"
        assert c.get_values("get %s\r\n" % k) == {k: (0, b"ok")}
        assert c.cmd("set %s 0 0 3\r\nnew\r\n" % k) == "STORED"
    assert total(c, "borrowed", 2) == 0
    assert total(c, "xreq_sent", 2) - x0 > 70  # about 128 sets + 32 gets
    c.close()


def same_home(s, ctl, n, want):
    """`want` connections whose worker is the same: each new one's home is
    the shard whose connection count its first request raised."""
    homes = {}
    while True:
        before = ctl.stats("shards")
        c = Conn(s.connect())
        assert c.cmd("version\r\n").startswith("VERSION ")
        after = ctl.stats("shards")
        grew = [i for i in range(n) if after["shard%d_connections" % i] !=
                before["shard%d_connections" % i]]
        assert len(grew) == 1, grew
        homes.setdefault(grew[0], []).append(c)
        if len(homes[grew[0]]) == want:
            return homes[grew[0]], [o for h in homes.values() for o in h]


def test_lent_get_beside_another_connections_request(server_factory):
    """Only a connection's own requests out to other shards keep it from a
    lent shard: a get of a sleeping owner's key is served from its shard
    even when, in the same pass, another connection of the same worker has
    just handed that owner a request (a delete, which only the owner runs).
    The two connections' requests arrive while their worker is busy with a
    third connection's pipeline, so most rounds meet in one pass: with
    the rule per worker (any request of the worker's out to that owner)
    14-16 of 40 gets were lent here, with the rule per connection 40."""
    s = server_factory(threads=2)
    ctl = Conn(s.connect())
    (x, y, z), conns = same_home(s, ctl, 2, 3)
    keys = remote_keys(x, 2, "bx")
    assert len(keys) > 3, keys
    k, dead = keys[0], keys[1:]
    # y's deletes go to the same owner as x's get (x's remote keys are y's)
    busy = "version\r\n" * 3000
    rounds = 40
    b0, x0 = totals(ctl, 2, "borrowed", "xreq_sent")
    for i in range(rounds):
        z.send(busy)
        y.send("delete %s noreply\r\n" % dead[i % len(dead)])
        x.send("get %s\r\n" % k)
        assert x.read_values() == {k: (0, k.encode())}
        for _ in range(3000):
            assert z.line().startswith("VERSION ")
    assert y.cmd("version\r\n").startswith("VERSION ")
    b, xs = totals(ctl, 2, "borrowed", "xreq_sent")
    # every delete went to the owner; x's gets were lent unless the owner
    # happened to be awake
    assert xs - x0 - 1 >= rounds
    assert b - b0 >= rounds * 3 // 4, (b - b0, xs - x0)
    for c in conns + [ctl]:
        c.close()
