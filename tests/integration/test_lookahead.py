"""Gets and sets whose bytes arrive in awkward shapes.

A worker looks ahead at every receive's bytes for the keys of get/gets/set
lines before it parses them (process_prefetch, dispatch_all in
net/worker.c). The look-ahead only hints; these tests check that whatever a
receive starts or ends with (a lone "\\n", a cut key, an empty line, more
keys than the look-ahead takes), the replies are memcached's (checked
against memcached 1.6.18, except a key with a control character: memcached
looks it up, ringcached refuses it, as the README says; and a set refused
for its key, whose data block memcached then runs as a command and
ringcached drops) and the daemon stays clean (under ASan an out-of-bounds
read ends it with a report, which the server fixture turns into a failure).

Each piece is made to start a receive of its own: the next is sent only when
the server's bytes_read (asked for on a second connection) shows that it has
received everything before it.
"""
import time

import pytest

from conftest import Conn

BAD = "CLIENT_ERROR bad command line format"
STATS = b"stats\r\n"


def value_lines(keys):
    out = []
    for k in keys:
        out += ["VALUE %s 0 %d" % (k, len(k) + 1), "v" + k]
    return out + ["END"]


class ReadCounter:
    """The server's bytes_read, less what this counter's own stats sent."""

    def __init__(self, server):
        self.c = Conn(server.connect())
        self.asked = 0

    def read(self):
        self.asked += 1
        return int(self.c.stats()["bytes_read"]) - self.asked * len(STATS)

    def wait_for(self, n, timeout=10.0):
        deadline = time.monotonic() + timeout
        while self.read() < n:
            assert time.monotonic() < deadline, "server did not read %d" % n


def send_in_pieces(server, c, pieces, extra_every=0):
    """Sends each piece once the server has read all before it; with
    extra_every, every that many pieces bytes_read is asked for once more
    (one more receive on the counter's worker)."""
    counter = ReadCounter(server)
    sent = counter.read()
    for i, p in enumerate(pieces):
        counter.wait_for(sent)
        if extra_every and i % extra_every == 0:
            counter.read()
        c.send(p)
        sent += len(p)
    counter.c.close()


# (pieces, each the start of a receive; the reply lines expected)
SHAPES = [
    # A receive that starts with the "\n" of a line the previous one cut.
    ([b"get k1\r", b"\nget k2\r\n"], value_lines(["k1"]) + value_lines(["k2"])),
    ([b"get k1", b"\r\n"], value_lines(["k1"])),
    # A key cut in two.
    ([b"get k1 k", b"2\r\n"], value_lines(["k1", "k2"])),
    # Empty lines and lines that are nothing but a newline.
    ([b"\r\n"], ["ERROR"]),
    ([b"\n"], ["ERROR"]),
    ([b"get k3\r\n", b"\n\n"], value_lines(["k3"]) + ["ERROR", "ERROR"]),
    # get without keys, spaces around keys, a bare "\n" line end.
    ([b"get\r\n"], ["ERROR"]),
    ([b"gets\n"], ["ERROR"]),
    ([b"get  k4   k5 \r\n"], value_lines(["k4", "k5"])),
    ([b"get k6\n"], value_lines(["k6"])),
    # Keys the parser refuses (memcached answers END to the second).
    ([b"get " + b"x" * 251 + b"\r\n"], [BAD]),
    ([b"get k\x01x\r\n"], [BAD]),
    # Not a get, but starting like one.
    ([b"getx k1\r\n"], ["ERROR"]),
    # Sets, whose key the look-ahead takes too: cut before, in and after
    # the key, without a key, and with a data block that reads like a get.
    ([b"set k7 0 0 2\r\n", b"v7\r\nget k7\r\n"],
     ["STORED", "VALUE k7 0 2", "v7", "END"]),
    ([b"set k", b"8 0 0 2\r\nv8\r\n"], ["STORED"]),
    ([b"set k8", b" 0 0 2\r\nv8\r\n"], ["STORED"]),
    ([b"set \r\n"], ["ERROR"]),
    ([b"set k9 0 0 9\r\nget k1 k2\r\nget k9\r\n"],
     ["STORED", "VALUE k9 0 9", "get k1 k2", "END"]),
    ([b"set " + b"x" * 251 + b" 0 0 1\r\nv\r\n"], [BAD]),
]


@pytest.mark.parametrize("pieces,expect", SHAPES,
                         ids=["%d" % i for i in range(len(SHAPES))])
def test_get_shapes_at_receive_edges(server, pieces, expect):
    c = Conn(server.connect())
    for i in range(1, 7):
        assert c.cmd("set k%d 0 0 %d\r\nvk%d\r\n" % (i, len("k%d" % i) + 1, i)) == "STORED"
    send_in_pieces(server, c, pieces)
    got = [c.line() for _ in expect]
    assert got == expect
    assert c.cmd("version\r\n").startswith("VERSION ")
    c.close()


def test_pipelined_gets_past_the_lookahead(server):
    """More keys in one receive than the look-ahead takes (64 lines and
    keys per batch of completions): 100-key gets and 200 one-key gets in
    one send, hits and misses mixed; every reply in order."""
    c = Conn(server.connect())
    keys = ["la%d" % i for i in range(300)]
    for k in keys[::2]:
        c.send("set %s 0 0 %d noreply\r\nv%s\r\n" % (k, len(k) + 1, k))
    assert c.cmd("version\r\n").startswith("VERSION ")
    hits = set(keys[::2])
    line = "get " + " ".join(keys[:100]) + "\r\n"
    singles = "".join("get %s\r\n" % k for k in keys[100:300])
    c.send(line + singles + line)
    want = [k for k in keys[:100] if k in hits]
    assert list(c.read_values()) == want
    for k in keys[100:300]:
        got = c.read_values()
        assert got == ({k: (0, ("v" + k).encode())} if k in hits else {})
    assert list(c.read_values()) == want
    c.close()


def test_every_receive_buffer_starts_with_a_newline(server):
    """300 receives in a row that each start with the "\\n" of the line the
    one before cut: a worker's receive buffers (WORKER_RBUF_COUNT of them,
    64) are taken in ring order, so some of these land in the first buffer
    of the mapping, where a look-ahead that read the byte before a line
    would read outside it (with that bug, the -t 1 run of this test ends
    the ASan build with a SEGV report). Every third wait asks for
    bytes_read once more, so that the counter's own receives (on the same
    worker at -t 1) do not keep the pieces on every other buffer."""
    c = Conn(server.connect())
    assert c.cmd("set k1 0 0 3\r\nvk1\r\n") == "STORED"
    n = 300
    pieces = [b"get k1\r"] + [b"\nget k1\r"] * n + [b"\n"]
    send_in_pieces(server, c, pieces, extra_every=3)
    for _ in range(n + 1):
        assert c.read_values() == {"k1": (0, b"vk1")}
    c.close()
