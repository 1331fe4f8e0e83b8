"""memcached's classic text protocol against the real daemon, byte for byte.

Every command's replies and error strings are compared with what
memcached's protocol.txt gives; the server runs at -t 1 and -t 4, so keys
land on the home shard and on others. Bad input must get memcached's error
and leave the connection (and other keys) usable.
"""
import time

import pytest

from conftest import Conn


def test_storage_commands(conn):
    assert conn.cmd("set a 5 0 3\r\nabc\r\n") == "STORED"
    assert conn.get_values("get a\r\n") == {"a": (5, b"abc")}
    assert conn.cmd("add a 0 0 1\r\nx\r\n") == "NOT_STORED"
    assert conn.cmd("add b 0 0 1\r\nx\r\n") == "STORED"
    assert conn.cmd("replace c 0 0 1\r\nx\r\n") == "NOT_STORED"
    assert conn.cmd("replace b 7 0 2\r\nyy\r\n") == "STORED"
    assert conn.cmd("append a 9 0 2\r\nde\r\n") == "STORED"
    assert conn.cmd("prepend a 9 0 2\r\nzz\r\n") == "STORED"
    assert conn.cmd("append nope 0 0 1\r\nx\r\n") == "NOT_STORED"
    assert conn.get_values("get a b c\r\n") == {"a": (5, b"zzabcde"), "b": (7, b"yy")}
    assert conn.cmd("set empty 0 0 0\r\n\r\n") == "STORED"
    assert conn.get_values("get empty\r\n") == {"empty": (0, b"")}
    assert conn.cmd("set big 4294967295 0 1\r\nx\r\n") == "STORED"
    assert conn.get_values("get big\r\n") == {"big": (4294967295, b"x")}


def test_cas_and_gets(conn):
    assert conn.cmd("cas k 0 0 1 1\r\nx\r\n") == "NOT_FOUND"
    assert conn.cmd("set k 0 0 1\r\nx\r\n") == "STORED"
    (_, _, cas), = conn.get_values("gets k\r\n").values()
    assert conn.cmd("cas k 0 0 1 %d\r\ny\r\n" % (cas + 1)) == "EXISTS"
    assert conn.cmd("cas k 3 0 1 %d\r\ny\r\n" % cas) == "STORED"
    (flags, value, cas2), = conn.get_values("gets k\r\n").values()
    assert (flags, value) == (3, b"y") and cas2 != cas
    assert conn.cmd("cas k 0 0 1 %d\r\nz\r\n" % cas) == "EXISTS"
    st = conn.stats()
    assert int(st["cas_hits"]) == 1 and int(st["cas_badval"]) == 2
    assert int(st["cas_misses"]) == 1


def test_cas_unique_across_keys(conn):
    keys = ["u%d" % i for i in range(200)]
    for k in keys:
        conn.send("set %s 0 0 1 noreply\r\nx\r\n" % k)
    vals = conn.get_values("gets %s\r\n" % " ".join(keys))
    cases = [v[2] for v in vals.values()]
    assert len(vals) == 200 and len(set(cases)) == 200


def test_delete_touch_gat(conn):
    assert conn.cmd("delete x\r\n") == "NOT_FOUND"
    assert conn.cmd("set x 1 0 1\r\na\r\n") == "STORED"
    assert conn.cmd("touch x 100\r\n") == "TOUCHED"
    assert conn.cmd("touch y 100\r\n") == "NOT_FOUND"
    assert conn.get_values("gat 0 x y\r\n") == {"x": (1, b"a")}
    vals = conn.get_values("gats 100 x\r\n")
    assert vals["x"][:2] == (1, b"a") and len(vals["x"]) == 3
    assert conn.cmd("gat -1 x\r\n") == "VALUE x 1 1"
    assert conn.line() == "a" and conn.line() == "END"
    assert conn.get_values("get x\r\n") == {}
    assert conn.cmd("set x 1 0 1\r\na\r\n") == "STORED"
    assert conn.cmd("delete x\r\n") == "DELETED"
    assert conn.get_values("get x\r\n") == {}
    assert conn.cmd("delete x 0\r\n") == "NOT_FOUND"
    assert conn.cmd("delete x 5\r\n").startswith("CLIENT_ERROR bad command line format")


def test_incr_decr(conn):
    assert conn.cmd("incr n 1\r\n") == "NOT_FOUND"
    assert conn.cmd("set n 0 0 2\r\n10\r\n") == "STORED"
    assert conn.cmd("incr n 5\r\n") == "15"
    assert conn.cmd("decr n 100\r\n") == "0"
    assert conn.cmd("set n 0 0 20\r\n18446744073709551615\r\n") == "STORED"
    assert conn.cmd("incr n 2\r\n") == "1"
    assert conn.cmd("set n 0 0 2\r\n99\r\n") == "STORED"
    assert conn.cmd("incr n 1\r\n") == "100"
    assert conn.get_values("get n\r\n") == {"n": (0, b"100")}
    assert conn.cmd("set s 0 0 3\r\nabc\r\n") == "STORED"
    assert conn.cmd("incr s 1\r\n") == \
        "CLIENT_ERROR cannot increment or decrement non-numeric value"
    assert conn.cmd("incr n abc\r\n") == "CLIENT_ERROR invalid numeric delta argument"
    assert conn.cmd("incr n -1\r\n") == "CLIENT_ERROR invalid numeric delta argument"


def test_expiry(conn):
    assert conn.cmd("set gone 0 -1 1\r\nx\r\n") == "STORED"
    assert conn.get_values("get gone\r\n") == {}
    past = int(time.time()) - 10
    assert conn.cmd("set past 0 %d 1\r\nx\r\n" % past) == "STORED"
    assert conn.get_values("get past\r\n") == {}
    future = int(time.time()) + 3600
    assert conn.cmd("set fut 0 %d 1\r\nx\r\n" % future) == "STORED"
    assert conn.cmd("set rel 0 3600 1\r\nx\r\n") == "STORED"
    assert set(conn.get_values("get fut rel\r\n")) == {"fut", "rel"}
    assert conn.cmd("set x 0 abc 1\r\nx\r\n") == "CLIENT_ERROR bad command line format"


def test_flush_all(conn):
    for i in range(50):
        conn.send("set f%d 0 0 1 noreply\r\nx\r\n" % i)
    assert int(conn.stats()["curr_items"]) == 50
    assert conn.cmd("flush_all\r\n") == "OK"
    st = conn.stats()
    assert int(st["curr_items"]) == 0 and int(st["bytes"]) == 0
    assert conn.get_values("get f1 f2\r\n") == {}
    conn.send("flush_all noreply\r\n")
    assert conn.cmd("set a 0 0 1\r\nx\r\n") == "STORED"
    assert conn.cmd("flush_all 3600\r\n") == "OK"
    assert conn.get_values("get a\r\n") == {"a": (0, b"x")}
    assert conn.cmd("flush_all bad\r\n").startswith("CLIENT_ERROR")


def test_misc_commands(conn):
    assert conn.cmd("version\r\n").startswith("VERSION ")
    assert conn.cmd("verbosity 1\r\n") == "OK"
    conn.send("verbosity 1 noreply\r\n")
    st = conn.stats()
    for name in ("pid uptime time version pointer_size curr_connections "
                 "total_connections cmd_get cmd_set cmd_touch cmd_flush "
                 "get_hits get_misses get_expired delete_hits delete_misses "
                 "incr_hits incr_misses decr_hits decr_misses cas_hits "
                 "cas_misses cas_badval touch_hits touch_misses bytes "
                 "curr_items total_items threads evictions limit_maxbytes").split():
        assert name in st, name
    settings = conn.stats("settings")
    assert settings["item_size_max"] == "1048576"
    assert conn.cmd("set a 0 0 1\r\nx\r\n") == "STORED"
    conn.get_values("get a b\r\n")
    st = conn.stats()
    assert int(st["get_hits"]) == 1 and int(st["get_misses"]) == 1
    assert conn.cmd("stats reset\r\n") == "RESET"
    st = conn.stats()
    assert int(st["get_hits"]) == 0 and int(st["curr_items"]) == 1
    assert conn.cmd("stats nonsense\r\n") == "ERROR"
    conn.send("quit\r\n")
    assert conn.closed_by_peer()


@pytest.mark.parametrize("line,reply", [
    ("bogus\r\n", "ERROR"),
    ("\r\n", "ERROR"),
    ("get\r\n", "ERROR"),
    ("set k 0 0\r\n", "ERROR"),
    ("set k 0 0 x\r\n", "CLIENT_ERROR bad command line format"),
    # the refused data block is dropped, never run as a command
    ("set k x 0 1\r\nx\r\n", "CLIENT_ERROR bad command line format"),
    ("incr k\r\n", "ERROR"),
    ("touch k\r\n", "ERROR"),
    ("get " + "k" * 251 + "\r\n", "CLIENT_ERROR bad command line format"),
])
def test_bad_lines(conn, line, reply):
    assert conn.cmd(line) == reply
    assert conn.cmd("set ok 0 0 2\r\nok\r\n") == "STORED"
    assert conn.get_values("get ok\r\n") == {"ok": (0, b"ok")}


def test_key_limits(conn):
    k250 = "k" * 250
    assert conn.cmd("set %s 0 0 1\r\nx\r\n" % k250) == "STORED"
    assert conn.get_values("get %s\r\n" % k250) == {k250: (0, b"x")}
    assert conn.cmd("set %s 0 0 1\r\nx\r\n" % ("k" * 251)).startswith("CLIENT_ERROR")
    # The refused data block is swallowed, not run as a command.
    assert conn.cmd("set ok 0 0 1\r\ny\r\n") == "STORED"
    assert conn.cmd("set a\x01b 0 0 1\r\nx\r\n").startswith("CLIENT_ERROR")
    assert conn.cmd("version\r\n").startswith("VERSION")


def test_bad_data_chunk(conn):
    # As memcached: the 3 + 2 bytes are taken as the block, the "\r\n" left
    # over is an empty command line.
    assert conn.cmd("set k 0 0 3\r\nabcde\r\n") == "CLIENT_ERROR bad data chunk"
    assert conn.line() == "ERROR"
    assert conn.cmd("set k 0 0 3\r\nabc\r\n") == "STORED"
    assert conn.get_values("get k\r\n") == {"k": (0, b"abc")}


def test_item_size_limit(server_factory):
    s = server_factory("-I", "2k", threads=2)
    c = Conn(s.connect())
    assert c.cmd("set k 0 0 2048\r\n" + "a" * 2048 + "\r\n") == "STORED"
    assert c.cmd("set k 0 0 2049\r\n" + "b" * 2049 + "\r\n") == \
        "SERVER_ERROR object too large for cache"
    # memcached drops the old value on a too-large set.
    assert c.get_values("get k\r\n") == {}
    assert c.cmd("set j 0 0 1024\r\n" + "a" * 1024 + "\r\n") == "STORED"
    # memcached answers NOT_STORED when an append would outgrow -I.
    assert c.cmd("append j 0 0 1025\r\n" + "a" * 1025 + "\r\n") == "NOT_STORED"
    assert c.get_values("get j\r\n") == {"j": (0, b"a" * 1024)}
    c.close()


def test_pipelined_in_one_send(conn):
    n = 300
    req = "".join("set p%d %d 0 %d\r\n%s\r\nget p%d\r\n" % (i, i, len(str(i)), i, i)
                  for i in range(n))
    conn.send(req)
    for i in range(n):
        assert conn.line() == "STORED"
        assert conn.line() == "VALUE p%d %d %d" % (i, i, len(str(i)))
        assert conn.line() == str(i)
        assert conn.line() == "END"


def test_noreply(conn):
    conn.send("set a 0 0 1 noreply\r\nx\r\nadd a 0 0 1 noreply\r\ny\r\n"
              "append a 0 0 1 noreply\r\nz\r\nincr a 1 noreply\r\n"
              "delete nothere noreply\r\ntouch a 10 noreply\r\n")
    assert conn.get_values("get a\r\n") == {"a": (0, b"xz")}


def test_unix_socket(server_factory):
    s = server_factory(threads=2, unix=True)
    c = Conn(s.connect())
    assert c.cmd("set u 0 0 1\r\nx\r\n") == "STORED"
    assert c.get_values("get u\r\n") == {"u": (0, b"x")}
    c.close()


def test_split_across_sends(conn):
    req = b"set sp 1 0 10\r\n0123456789\r\nget sp\r\n"
    for b in req:
        conn.send(bytes([b]))
    assert conn.line() == "STORED"
    assert conn.read_values() == {"sp": (1, b"0123456789")}
