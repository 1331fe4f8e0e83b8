"""The meta protocol (mg ms md ma mn me) against the real daemon, byte for byte
against memcached 1.6.18 started in the same run.

Each script is sent in one piece to ringcached (at -t 1 and -t 4, so keys land
on the home shard and on others) and to /usr/bin/memcached, followed by an mg
of a key never stored, and both replies are read up to its "EN". cas values and item
sizes differ by design (a cas here is derived from a per-shard sequence; an
item is 11 bytes of head, not a slab chunk), so "c<digits>", "cas=<digits>"
and "size=<digits>" are compared by shape. Where ringcached differs on
purpose (base64 keys echoed by request, md x) the test says so and checks
ringcached's documented answer. E (explicit cas) came with memcached 1.6.27;
1.6.18 answers "CLIENT_ERROR invalid flag", so test_explicit_cas writes the
bytes protocol.txt (and memcached 1.6.27's t/metaget.t) give.
"""
import os
import re
import signal
import socket
import subprocess
import time

import pytest

from conftest import Conn, free_port

MEMCACHED = os.environ.get("MEMCACHED", "/usr/bin/memcached")


class Memcached:
    def __init__(self):
        self.port = free_port()
        argv = [MEMCACHED, "-U", "0", "-l", "127.0.0.1", "-p", str(self.port), "-t", "1"]
        if os.geteuid() == 0:
            argv += ["-u", "nobody"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                assert time.time() < deadline, "memcached did not start"
                time.sleep(0.05)

    def stop(self):
        os.kill(self.proc.pid, signal.SIGTERM)
        self.proc.wait(10)


@pytest.fixture(scope="module")
def memcached():
    if not os.path.exists(MEMCACHED):
        pytest.skip("no memcached to compare with")
    m = Memcached()
    yield m
    m.stop()


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), 10)
    s.settimeout(10)
    return Conn(s)


END = b"EN Oend_of_script\r\n"


def run(conn, script):
    """Sends script and an mg of a key that is never stored (scripts may
    hold mn themselves), returns every reply byte before its EN."""
    conn.send(script + b"mg never_stored Oend_of_script\r\n")
    while not conn.buf.endswith(END):
        conn._fill()
    out, conn.buf = conn.buf[:-len(END)], b""
    return out


def shape(b):
    b = re.sub(rb"(?<= )c\d+", b"c#", b)
    b = re.sub(rb"cas=\d+", b"cas=#", b)
    b = re.sub(rb"(VALUE \S+ \d+ \d+) \d+", rb"\1 #", b)
    return re.sub(rb"size=\d+", b"size=#", b)


_n = [0]


def both(server, memcached, script):
    """Runs a script (with {k} a fresh key prefix) on both; returns ours."""
    _n[0] += 1
    script = script.replace(b"{k}", b"k%d_%d" % (os.getpid(), _n[0]))
    rc, mc = connect(server.port), connect(memcached.port)
    try:
        ours, ref = run(rc, script), run(mc, script)
    finally:
        rc.sock.close()
        mc.sock.close()
    assert shape(ours) == shape(ref), "script %r\nours %r\nmemcached %r" % (script, ours, ref)
    return ours


SCRIPTS = {
    "mg_flags": b"ms {k}a 2 T0 F7\r\nhi\r\nmg {k}a v c f s t h l k O9\r\nmg {k}a h l t f s\r\n"
                b"mg {k}a\r\nmg {k}a v\r\nmg {k}a k v u\r\nmg {k}a O1 O2\r\n",
    "mg_miss": b"mg {k}x\r\nmg {k}x v k O1 c f s t\r\nmg {k}x q v\r\nmg {k}x q k O7\r\n",
    "mg_touch": b"ms {k}a 1 T100\r\nx\r\nmg {k}a t\r\nmg {k}a T500 t v\r\nmg {k}a t\r\n"
                b"mg {k}a T0 t\r\nmg {k}a t\r\n",
    "mg_vivify": b"mg {k}v N30 v t c\r\nmg {k}v N30 v t\r\nmg {k}v N30 t\r\n"
                 b"ms {k}v 3\r\nnew\r\nmg {k}v N30 v t\r\n",
    "mg_recache": b"ms {k}r 1 T10\r\nr\r\nmg {k}r R5 v\r\nmg {k}r R30 v\r\nmg {k}r R30 v\r\n"
                  b"ms {k}r 1 T10\r\ns\r\nmg {k}r R30 t\r\nms {k}n 1\r\nn\r\nmg {k}n R30\r\n",
    "stale_flow": b"ms {k}s 4 T60\r\nold1\r\nmd {k}s I T30\r\nmg {k}s v c t\r\nmg {k}s v c t\r\n"
                  b"mg {k}s v\r\nms {k}s 4 T60 c\r\nnew1\r\nmg {k}s v t\r\n",
    "ms_stale_cas": b"ms {k}s 2 c\r\nv1\r\nmd {k}s I\r\nms {k}s 2 I C1\r\nv2\r\nmg {k}s v\r\n",
    "ms_modes": b"ms {k}m 1 ME\r\na\r\nms {k}m 1 ME\r\nb\r\nms {k}m 1 MA\r\nc\r\nms {k}m 1 MP\r\nd\r\n"
                b"mg {k}m v\r\nms {k}m 1 MR\r\ne\r\nms {k}z 1 MR\r\ne\r\nms {k}z 1 MA\r\ne\r\n"
                b"ms {k}z 1 MP\r\ne\r\nms {k}m 1 MS F3\r\nf\r\nmg {k}m v f\r\nms {k}m 1 MX\r\nf\r\n"
                b"ms {k}m 1 Mxx\r\nf\r\n",
    "ms_cas": b"ms {k}c 1 c\r\na\r\nms {k}c 1 C1 c\r\nb\r\nms {k}c 1 C0 c\r\nb\r\n"
              b"ms {k}y 1 C5 c\r\nb\r\nms {k}y 1 C5 ME\r\nb\r\nmg {k}y v\r\n",
    "ms_quiet": b"ms {k}q 1 q\r\na\r\nms {k}q 1 q ME\r\nb\r\nms {k}q 1 q k O5 MR\r\nc\r\n"
                b"ms {k}w 1 q k O5 MR\r\nc\r\nmg {k}q v q\r\n",
    "ms_ret": b"ms {k}r 2 k O1 c\r\nab\r\nms {k}r 2 O1 k\r\nab\r\n",
    "md": b"md {k}d\r\nms {k}d 1\r\na\r\nmd {k}d q\r\nmd {k}d q\r\nmd {k}d k O3\r\n"
          b"ms {k}d 1\r\na\r\nmd {k}d C1 q\r\nmg {k}d v\r\nmd {k}d T5\r\nmg {k}d\r\n",
    "md_stale": b"ms {k}i 1 T0\r\na\r\nmd {k}i I q\r\nmg {k}i t v\r\nmd {k}i I T40 k\r\nmg {k}i t v\r\n",
    "ma": b"ma {k}n\r\nma {k}n q\r\nms {k}n 2\r\n10\r\nma {k}n\r\nma {k}n v\r\nma {k}n D5 v t\r\n"
          b"ma {k}n MD D100 v\r\nma {k}n M- v\r\nma {k}n M+ D7 v\r\nma {k}n MI v k O4\r\n"
          b"ma {k}n q\r\nma {k}n q v\r\nmg {k}n v\r\n",
    "ma_vivify": b"ma {k}v N0 J13 v\r\nma {k}v N0 J13 v\r\nma {k}w N30 v t\r\nma {k}x N0 q\r\n"
                 b"ma {k}x q v\r\n",
    "ma_errors": b"ms {k}t 3\r\nabc\r\nma {k}t\r\nma {k}t Mx\r\nma {k}t Jx\r\nma {k}t Dx\r\n"
                 b"ma {k}t Z\r\nma {k}t v v\r\n",
    "ma_wrap": b"ms {k}w 20\r\n18446744073709551615\r\nma {k}w v\r\nma {k}w MD D9 v\r\n",
    "me": b"me {k}e\r\nms {k}e 3 T0\r\nabc\r\nme {k}e\r\nmg {k}e v\r\nme {k}e\r\nme\r\n",
    "mn_me_misc": b"mn\r\nmn extra tokens\r\nmx foo\r\nm\r\nmgg foo\r\n",
    "errors": b"mg\r\nms\r\nmd\r\nma\r\nmg {k} vv\r\nmg {k} T\r\nmg {k} Tx\r\n"
              b"mg {k} N5 Tz\r\nmg {k} M\r\nmg {k} Mxy\r\nmd {k} Z\r\nma {k} Z\r\nmg {k} v v\r\n"
              b"mg {k} \x80\r\nmd {k} C\r\nms {k}\r\nms {k} x\r\nms {k} -1\r\nms {k} 2 Z\r\nhi\r\n"
              b"ms {k} 2 Fx\r\nhi\r\nms {k} 2 O123456789012345678901234567890123\r\nhi\r\n"
              b"mg {k} O123456789012345678901234567890123\r\nms {k} 2\r\nhiX\r\n"
              b"mg {k} a b c d e f g h i j k l m n o p q r s t\r\n"
              b"md {k} a b c d e f g h i j k l m n o p q r s t\r\n"
              b"ma {k} a b c d e f g h i j k l m n o p q r s t\r\n"
              b"mg " + b"x" * 251 + b" v\r\nms " + b"x" * 251 + b" 1\r\na\r\n"
              b"mg Zm9 b k\r\nme Zm9 b\r\nmg ==== b\r\n",
    "classic_mix": b"set {k}c 0 0 2\r\nab\r\nmg {k}c v f\r\nms {k}c 3 F9\r\nxyz\r\nget {k}c\r\n"
                   b"gets {k}c\r\nincr {k}c 1\r\nms {k}c 1\r\n5\r\nincr {k}c 1\r\nma {k}c v\r\n"
                   b"delete {k}c\r\nmg {k}c v\r\n",
}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_same_as_memcached(server, memcached, name):
    both(server, memcached, SCRIPTS[name])


def test_value_sizes(server, memcached):
    for n in (0, 1, 100, 5000, 100000):
        both(server, memcached, b"ms {k} %d\r\n%s\r\nmg {k} v s\r\nmg {k} s\r\n" % (n, b"v" * n))


def test_quiet_pipeline_with_mn(server, memcached):
    # many keys (all shards at -t 4): only misses and failures answer
    script = b"".join(b"ms {k}%d 2 q\r\nv%d\r\n" % (i, i % 10) for i in range(0, 200, 2))
    script += b"".join(b"mg {k}%d v q k\r\n" % i for i in range(200))
    script += b"".join(b"md {k}%d q\r\n" % i for i in range(200))
    ours = both(server, memcached, script)
    assert ours.count(b"VA 2") == 100 and ours.count(b"NF") == 100 and b"EN" not in ours


def test_classic_and_meta_across_shards_in_order(server, memcached):
    parts = []
    for i in range(120):
        k = b"{k}%d" % i
        parts.append([
            b"set %s 0 0 1\r\n%d\r\n" % (k, i % 10),
            b"mg %s v f O%d\r\n" % (k, i),
            b"get %s\r\n" % k,
            b"ms %s 2 F5 c\r\nzz\r\n" % k,
            b"ma %s N0 J3 v\r\n" % (k + b"n"),
            b"gets %s %sn\r\n" % (k, k),
            b"md %s k\r\n" % k,
            b"mg %s k\r\n" % k,
        ][i % 8])
    both(server, memcached, b"".join(parts))


def test_split_at_every_byte(server):
    script = b"ms sp 5 T0 c k\r\nhello\r\nmg sp v t s k\r\nma spn N0 J7 v\r\nmn\r\n"
    c = connect(server.port)
    want = None
    for cut in range(1, len(script)):
        c.send(script[:cut])
        time.sleep(0.001)
        c.send(script[cut:])
        while not c.buf.endswith(b"MN\r\n"):
            c._fill()
        got, c.buf = shape(c.buf), b""
        want = want or got
        assert got == want
        c.send(b"md sp q\r\nmd spn q\r\n")
    assert want.startswith(b"HD c# ksp\r\nVA 5 t-1 s5 ksp\r\nhello\r\nVA 1\r\n7\r\n")


def test_base64_keys(server):
    c = connect(server.port)
    # "a b\x00\xff" is not a text key; base64 carries it
    assert run(c, b"ms YSBiAP8= 3 b k c\r\nbin\r\n").startswith(b"HD kYSBiAP8= b c")
    assert run(c, b"mg YSBiAP8= b v k s\r\n") == b"VA 3 kYSBiAP8= b s3\r\nbin\r\n"
    assert run(c, b"ma YSBiAP8= b\r\n") == b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
    assert run(c, b"md YSBiAP8= b q\r\nmg YSBiAP8= b v\r\n") == b"EN\r\n"
    # a text key stored plainly is the same item as its base64 form
    assert run(c, b"set abc 0 0 1\r\nx\r\nmg YWJj b v k\r\n") == b"STORED\r\nVA 1 kYWJj b\r\nx\r\n"
    assert run(c, b"me YWJj b\r\n").startswith(b"ME YWJj exp=-1 la=")


def test_differences_documented(server, memcached):
    c = connect(server.port)
    # md x (newer protocol.txt): the value goes, the item, its flags and TTL stay.
    out = run(c, b"ms x 3 F4 T100\r\nabc\r\nmd x x\r\nmg x v f t\r\n")
    assert out.startswith(b"HD\r\nHD\r\nVA 0 f4 t") and out.endswith(b"\r\n\r\n")
    out = run(c, b"md x x I T20\r\nmg x v t\r\n")
    assert out == b"HD\r\nVA 0 t20 W X\r\n\r\n".replace(b"W X", b"X W")
    assert run(c, b"md nosuch x\r\n") == b"NF\r\n"
    # memcached 1.6.18 does not know x
    m = connect(memcached.port)
    assert run(m, b"md x x\r\n") == b"CLIENT_ERROR invalid or duplicate flag\r\n"


def test_explicit_cas(server, memcached):
    """E<token>: "use token as new CAS value" (protocol.txt) on ms, mg with N,
    md with I (and x), ma; memcached 1.6.18 does not know E, so the expected
    bytes are written out here from protocol.txt and memcached 1.6.27's
    t/metaget.t. Several keys, so that at -t 4 some live on other shards."""
    c = connect(server.port)
    for k in (b"e1", b"e2", b"e3", b"e4"):
        # ms E, then mg c and classic gets show it
        assert run(c, b"ms %s 2 E973\r\nji\r\nmg %s c v\r\n" % (k, k)) == \
            b"HD\r\nVA 2 c973\r\nji\r\n"
        assert run(c, b"gets %s\r\n" % k) == b"VALUE %s 0 2 973\r\nji\r\nEND\r\n" % k
        # ms C compares against the explicit cas; E sets the next one
        assert run(c, b"ms %s 2 c C972 E4000\r\nlo\r\n" % k) == b"EX c0\r\n"
        assert run(c, b"ms %s 2 c C973 E4000\r\nlo\r\n" % k) == b"HD c4000\r\n"
        # classic cas against the explicit value; the stored item gets a new cas
        assert run(c, b"cas %s 0 0 1 3999\r\nx\r\n" % k) == b"EXISTS\r\n"
        assert run(c, b"cas %s 0 0 1 4000\r\nx\r\n" % k) == b"STORED\r\n"
        out = run(c, b"gets %s\r\n" % k)
        cas = int(out.split(b"\r\n")[0].split()[4])
        assert cas != 4000 and out.endswith(b"\r\nx\r\nEND\r\n")
        assert run(c, b"cas %s 0 0 1 4000\r\ny\r\n" % k) == b"EXISTS\r\n"
        # touch and gat keep it; append without E gives a new one, with E E's
        assert run(c, b"ms %s 1 E55\r\na\r\ntouch %s 100\r\ngats 200 %s\r\nmg %s c t\r\n"
                   % (k, k, k, k)) == b"HD\r\nTOUCHED\r\nVALUE %s 0 1 55\r\na\r\nEND\r\nHD c55 t200\r\n" % k
        out = run(c, b"append %s 0 0 1\r\nb\r\nmg %s c v\r\n" % (k, k))
        assert out.startswith(b"STORED\r\nVA 2 c") and not out.startswith(b"STORED\r\nVA 2 c55\r\n")
        assert run(c, b"ms %s 1 MA E56 c\r\nc\r\nmg %s c v\r\n" % (k, k)) == b"HD c56\r\nVA 3 c56\r\nabc\r\n"
        # md I E: stale, E's cas; md x keeps the cas
        assert run(c, b"md %s C56 E5678 I\r\nmg %s c\r\n" % (k, k)) == b"HD\r\nHD c5678 X W\r\n"
        assert run(c, b"md %s x\r\nmg %s c v\r\n" % (k, k)) == b"HD\r\nVA 0 c5678 Z X\r\n\r\n"
        assert run(c, b"md %s q\r\n" % k) == b""
        # mg N E: the created item has E's cas; E on a hit changes nothing
        assert run(c, b"mg %s s c v N30 t E9876\r\n" % k) == b"VA 0 s0 c9876 t30 W\r\n\r\n"
        assert run(c, b"mg %s c E5\r\n" % k) == b"HD c9876 Z\r\n"
        assert run(c, b"md %s q\r\n" % k) == b""
        # ma: E on the created item, a new cas without E, E's with E
        assert run(c, b"ma %s v N0 c E4321 J5\r\n" % k) == b"VA 1 c4321\r\n5\r\n"
        out = run(c, b"ma %s C4321 c v\r\n" % k)
        assert out.startswith(b"VA 1 c") and out.endswith(b"\r\n6\r\n") and b"c4321" not in out
        assert run(c, b"ma %s C4321 c v\r\n" % k) == b"EX\r\n"
        assert run(c, b"ma %s c v E8765\r\n" % k) == b"VA 1 c8765\r\n7\r\n"
        assert run(c, b"incr %s 1\r\nmg %s c\r\n" % (k, k)) != b"8\r\nHD c8765\r\n"
        # E0: memcached's ms reads a cas of 0 as none given; ma and md store 0
        out = run(c, b"ms %s 1 E0 c\r\na\r\n" % k)
        assert out.startswith(b"HD c") and out != b"HD c0\r\n"
        assert run(c, b"md %s I E0\r\ngets %s\r\ncas %s 0 0 1 0\r\nb\r\n" % (k, k, k)) == \
            b"HD\r\nVALUE %s 0 1 0\r\na\r\nEND\r\nEXISTS\r\n" % k
        assert run(c, b"md %s q\r\n" % k) == b""


def test_explicit_cas_errors(server, memcached):
    c = connect(server.port)
    # a bad E token: mg and ms say so, md and ma answer their generic error
    # (the ms data block is dropped); a repeated E is a duplicate flag
    script = (b"mg eb Ex\r\nmg eb E\r\nmg eb E18446744073709551616\r\nmg eb E1 E2\r\n"
              b"ms eb 2 E-1\r\nhi\r\nmd eb E\r\nma eb Ex\r\n")
    assert run(c, script) == (b"CLIENT_ERROR bad token in command line format\r\n" * 3 +
                              b"CLIENT_ERROR duplicate flag\r\n" +
                              b"CLIENT_ERROR bad token in command line format\r\n" +
                              b"CLIENT_ERROR invalid or duplicate flag\r\n" * 2)
    assert run(c, b"mg eb v\r\n") == b"EN\r\n"
    # the largest token is a cas like any other
    assert run(c, b"ms eb 1 E18446744073709551615 c\r\na\r\n") == b"HD c18446744073709551615\r\n"
    # memcached 1.6.18 does not know E
    m = connect(memcached.port)
    assert run(m, b"ms eb 1 E5\r\na\r\nmg eb E5\r\n") == b"CLIENT_ERROR invalid flag\r\n" * 2


def test_ttl_and_last_access(server):
    c = connect(server.port)
    run(c, b"ms tl 1 T3\r\na\r\n")
    out = run(c, b"mg tl t l h\r\n")
    assert re.fullmatch(rb"HD t[23] l[01] h0\r\n", out), out
    time.sleep(1.1)
    out = run(c, b"mg tl t l h\r\n")
    assert re.fullmatch(rb"HD t[12] l[12] h1\r\n", out), out
    time.sleep(2.5)
    assert run(c, b"mg tl v\r\n") == b"EN\r\n"


def test_stats_count_meta(server):
    c = connect(server.port)
    before = c.stats()
    run(c, b"ms st 1\r\na\r\nmg st v\r\nmg st2 v\r\nmd st\r\nma st2\r\n")
    after = c.stats()
    d = lambda k: int(after[k]) - int(before[k])
    # the end marker of run() is one more miss
    assert d("cmd_set") == 1 and d("get_hits") == 1 and d("get_misses") == 2
    assert d("delete_hits") == 1 and d("incr_misses") == 1
