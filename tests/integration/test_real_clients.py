"""Real memcached clients, each with its own consistent hashing, against a
pool of three ringcached daemons (-I 2m): pymemcache's HashClient, PHP's
`memcached` extension (libmemcached, ketama), PHP's `memcache` extension
(hash_strategy=consistent), Perl's Cache::Memcached::Fast (ketama_points)
and libmemcached's command-line tools.

Each client stores thousands of keys, reads them back one by one and in
multi-gets, runs gets + cas (and a cas conflict), incr/decr, touch, delete
and values of 500 KB and 1 MB, and checks every value. Afterwards the test
reads the daemons directly: every surviving key is held by exactly one
daemon with the exact value the client stored (so the client did not
compress or re-encode it), deleted keys are nowhere, and each daemon holds
its share of the keys (the client really spread them).

The "multi" tests fetch 4000 keys in one multi-get call, more than 1024
keys per daemon: they need a daemon without a per-get key limit.

PHP and Perl run as subprocesses on scripts written to a temporary folder,
with a timeout; `php -n` loads only the extensions named on its command line.
"""
import os
import shutil
import subprocess
import sys

import pytest
from pymemcache.client.hash import HashClient
from pymemcache.exceptions import MemcacheServerError

from conftest import Conn, THREADS

DAEMONS = 3
THREADS_EACH = max(THREADS)
N_KEYS = 3000          # keys each client stores and reads back
N_MULTI = 4000         # keys in one multi-get of the "multi" tests
SCRIPT_TIMEOUT = 240
BIG_SIZES = (500 * 1024, 1024 * 1024)
PATTERN = b"0123456789abcdefghijklmnopqrstuvwxyz"


def value(tag, i):
    """The value every client stores under key number i (same formula in
    the PHP and Perl scripts)."""
    return ("%s:%d:" % (tag, i)).encode() + bytes([97 + i % 26]) * (i % 50)


def big(n):
    """A deterministic (and compressible) large value of n bytes."""
    return (PATTERN * (n // len(PATTERN) + 1))[:n]


@pytest.fixture
def pool(server_factory):
    return [server_factory("-I", "2m", "-m", "64", threads=THREADS_EACH)
            for _ in range(DAEMONS)]


def addrs(pool):
    return ",".join("127.0.0.1:%d" % s.port for s in pool)


def raw_conns(pool):
    return [Conn(s.connect(timeout=30)) for s in pool]


def holders(conns, keys, chunk=500):
    """{key: [(daemon index, flags, value)]} read straight from each daemon,
    in gets of at most `chunk` keys."""
    out = {k: [] for k in keys}
    for d, c in enumerate(conns):
        for at in range(0, len(keys), chunk):
            got = c.get_values("get %s\r\n" % " ".join(keys[at:at + chunk]))
            for k, v in got.items():
                out[k].append((d, v[0], v[1]))
    return out


def check_placement(pool, expect, absent=()):
    """Every key of `expect` on exactly one daemon with exactly that value;
    no key of `absent` anywhere; every daemon holds a share of the keys."""
    conns = raw_conns(pool)
    try:
        keys = list(expect)
        where = holders(conns, keys + list(absent))
        per = [0] * len(pool)
        bad = []
        for k in keys:
            h = where[k]
            if len(h) != 1 or h[0][2] != expect[k]:
                bad.append((k, [(d, f, v[:40], len(v)) for d, f, v in h]))
            else:
                per[h[0][0]] += 1
        assert not bad, "%d keys misplaced or wrong, e.g. %r" % (len(bad), bad[:5])
        stray = [k for k in absent if where[k]]
        assert not stray, "deleted keys still held: %r" % stray[:5]
        # A consistent hash over 3 equal servers gives each about a third.
        for d, n in enumerate(per):
            assert n >= len(keys) * 0.15, "daemon %d holds %d of %d keys: %r" % (
                d, n, len(keys), per)
        return per
    finally:
        for c in conns:
            c.close()


def run_script(tmp_path, name, text, argv, env_extra, timeout=SCRIPT_TIMEOUT):
    path = tmp_path / name
    path.write_text(text)
    env = dict(os.environ, **env_extra)
    p = subprocess.Popen(argv + [str(path)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, env=env)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()  # by its pid; then reap it
        out, err = p.communicate()
        pytest.fail("%s timed out after %d s:\n%s\n%s" % (name, timeout, out[-3000:], err[-3000:]))
    assert p.returncode == 0 and "ALL OK" in out, (
        "%s exited %s:\nstdout: %s\nstderr: %s" % (name, p.returncode, out[-3000:], err[-3000:]))
    return out


# --------------------------------------------------------------------------
# pymemcache HashClient (rendezvous hashing). Debian's pymemcache 3.5.2 has
# no meta-protocol calls and no gat/gats, so only the classic commands.

def hash_client(pool):
    return HashClient([("127.0.0.1", s.port) for s in pool], connect_timeout=10,
                      timeout=30, default_noreply=False, ignore_exc=False,
                      retry_attempts=0)


def test_pymemcache_hashclient(pool):
    c = hash_client(pool)
    tag = "py"
    keys = ["py:%d" % i for i in range(N_KEYS)]
    for i, k in enumerate(keys):
        assert c.set(k, value(tag, i)) is True
    for i, k in enumerate(keys):
        assert c.get(k) == value(tag, i)
    # Multi-gets of up to 900 keys (at most 1024 on any one daemon).
    for at in range(0, N_KEYS, 900):
        part = keys[at:at + 900]
        got = c.get_many(part + ["py:missing:%d" % at])
        assert got == {k: value(tag, at + j) for j, k in enumerate(part)}
    assert c.set_many({"pym:%d" % i: value("pym", i) for i in range(900)}) == []

    # gets + cas, and a cas conflict
    c.set("py:cas", b"v0")
    v, cas = c.gets("py:cas")
    assert v == b"v0"
    assert c.cas("py:cas", b"v1", cas) is True
    assert c.cas("py:cas", b"v2", cas) is False          # stale: EXISTS
    assert c.cas("py:nocas", b"v", cas) is None           # NOT_FOUND
    assert c.get("py:cas") == b"v1"
    many = c.gets_many(keys[:600])
    assert {k: v for k, (v, _) in many.items()} == {k: value(tag, i) for i, k in enumerate(keys[:600])}
    assert all(int(cas) > 0 for _, cas in many.values())

    # incr / decr
    c.set("py:ctr", b"10")
    assert c.incr("py:ctr", 5) == 15
    assert c.decr("py:ctr", 20) == 0
    assert c.incr("py:ctr", 2 ** 64 - 1) == 2 ** 64 - 1
    assert c.incr("py:ctr", 1) == 0                        # wraps
    assert c.incr("py:noctr", 1) is None

    # touch
    assert c.touch(keys[1], 3600) is True
    assert c.touch("py:notouch", 3600) is False

    # delete: every third key
    deleted = keys[::3]
    for k in deleted:
        assert c.delete(k) is True
    assert c.delete(keys[0]) is False
    assert c.get_many(deleted[:900]) == {}

    # large values, and one over -I
    bigs = {"py:big%d" % n: big(n) for n in BIG_SIZES}
    rnd = os.urandom(1024 * 1024)
    for k, v in bigs.items():
        assert c.set(k, v) is True
    assert c.set("py:bigrnd", rnd) is True
    for k, v in bigs.items():
        assert c.get(k) == v
    assert c.get("py:bigrnd") == rnd
    with pytest.raises(MemcacheServerError, match="too large"):
        c.set("py:huge", b"x" * (2 * 1024 * 1024 + 1))
    c.close()

    expect = {k: value(tag, i) for i, k in enumerate(keys) if i % 3}
    expect.update(bigs)
    expect["py:cas"] = b"v1"
    expect["py:ctr"] = b"0"
    check_placement(pool, expect, absent=deleted)


def test_pymemcache_hashclient_multi(pool):
    c = hash_client(pool)
    keys = ["pyx:%d" % i for i in range(N_MULTI)]
    assert c.set_many({k: value("pyx", i) for i, k in enumerate(keys)}) == []
    got = c.get_many(keys)
    missing = [k for k in keys if k not in got]
    assert not missing, "%d of %d keys missing from one get_many" % (len(missing), N_MULTI)
    assert got == {k: value("pyx", i) for i, k in enumerate(keys)}
    many = c.gets_many(keys)
    assert len(many) == N_MULTI
    c.close()
    check_placement(pool, {k: value("pyx", i) for i, k in enumerate(keys)})


# --------------------------------------------------------------------------
# PHP

PHP = shutil.which("php")
need_php = pytest.mark.skipif(PHP is None, reason="php-cli missing (scripts/deps.sh)")


def php_argv(*exts, ini=()):
    argv = [PHP, "-n"]
    for e in exts:
        argv += ["-d", "extension=" + e]
    for i in ini:
        argv += ["-d", i]
    return argv


# Shared PHP helpers: the same value formula as value() above.
PHP_COMMON = r"""
function fail($msg) { fwrite(STDERR, "FAIL: $msg\n"); echo "FAILED\n"; exit(1); }
function val($tag, $i) { return "$tag:$i:" . str_repeat(chr(97 + $i % 26), $i % 50); }
function big($n) { $p = "0123456789abcdefghijklmnopqrstuvwxyz";
    return substr(str_repeat($p, intdiv($n, strlen($p)) + 1), 0, $n); }
$servers = explode(',', getenv('RC_SERVERS'));
$mode = getenv('RC_MODE');
$N = (int)getenv('RC_N');
"""

PHP_MEMCACHED = "<?php\n" + PHP_COMMON + r"""
$m = new Memcached();
// Consistent distribution, then libketama compatibility (ketama over MD5,
// weighted); in the other order the second call would undo the weighting.
$m->setOption(Memcached::OPT_DISTRIBUTION, Memcached::DISTRIBUTION_CONSISTENT);
$m->setOption(Memcached::OPT_LIBKETAMA_COMPATIBLE, true);
$m->setOption(Memcached::OPT_COMPRESSION, false);
$m->setOption(Memcached::OPT_BINARY_PROTOCOL, false);
$m->setOption(Memcached::OPT_CONNECT_TIMEOUT, 5000);
$m->setOption(Memcached::OPT_POLL_TIMEOUT, 30000);
$m->setOption(Memcached::OPT_RECV_TIMEOUT, 30000000);
$m->setOption(Memcached::OPT_SEND_TIMEOUT, 30000000);
$list = [];
foreach ($servers as $s) { [$h, $p] = explode(':', $s); $list[] = [$h, (int)$p]; }
if (!$m->addServers($list)) fail("addServers");
if (!$m->getOption(Memcached::OPT_LIBKETAMA_COMPATIBLE) || $m->getOption(Memcached::OPT_HASH) !== Memcached::HASH_MD5)
    fail("not libketama-compatible");
$per = [];
for ($i = 0; $i < 300; $i++) $per[$m->getServerByKey("pm:$i")['port']] = 1;
if (count($per) !== count($servers)) fail("ketama used only " . count($per) . " servers");
$tag = "pm";

if ($mode === 'multi') {
    $items = [];
    for ($i = 0; $i < $N; $i++) $items["pmx:$i"] = val("pmx", $i);
    if (!$m->setMulti($items)) fail("setMulti: " . $m->getResultMessage());
    $keys = array_keys($items);
    $keys[] = "pmx:missing";
    $got = $m->getMulti($keys);
    if ($got === false) fail("getMulti of " . count($keys) . " keys: " . $m->getResultMessage());
    if (count($got) !== $N) fail("getMulti returned " . count($got) . " of $N (" . $m->getResultMessage() . ")");
    foreach ($items as $k => $v) if (!isset($got[$k]) || $got[$k] !== $v) fail("getMulti $k");
    $ext = $m->getMulti(array_keys($items), Memcached::GET_EXTENDED);
    if ($ext === false || count($ext) !== $N) fail("getMulti GET_EXTENDED: " . $m->getResultMessage());
    foreach ($ext as $k => $e) if ($e['value'] !== $items[$k] || !$e['cas']) fail("ext $k");
    echo "ALL OK\n";
    exit(0);
}

for ($i = 0; $i < $N; $i++)
    if (!$m->set("$tag:$i", val($tag, $i))) fail("set $tag:$i: " . $m->getResultMessage());
for ($i = 0; $i < $N; $i++)
    if ($m->get("$tag:$i") !== val($tag, $i)) fail("get $tag:$i: " . $m->getResultMessage());
// multi-gets of up to 900 keys
for ($at = 0; $at < $N; $at += 900) {
    $keys = [];
    for ($i = $at; $i < min($N, $at + 900); $i++) $keys[] = "$tag:$i";
    $keys[] = "$tag:missing";
    $got = $m->getMulti($keys);
    if ($got === false) fail("getMulti: " . $m->getResultMessage());
    if (count($got) !== count($keys) - 1) fail("getMulti returned " . count($got));
    for ($i = $at; $i < min($N, $at + 900); $i++) if ($got["$tag:$i"] !== val($tag, $i)) fail("getMulti $tag:$i");
}

// gets + cas, and a cas conflict
$m->set("$tag:cas", "v0");
$r = $m->get("$tag:cas", null, Memcached::GET_EXTENDED);
if ($r['value'] !== "v0") fail("get extended");
if (!$m->cas($r['cas'], "$tag:cas", "v1")) fail("cas: " . $m->getResultMessage());
if ($m->cas($r['cas'], "$tag:cas", "v2")) fail("stale cas stored");
if ($m->getResultCode() !== Memcached::RES_DATA_EXISTS) fail("stale cas: " . $m->getResultMessage());
if ($m->cas($r['cas'], "$tag:nocas", "v")) fail("cas on a missing key stored");
if ($m->getResultCode() !== Memcached::RES_NOTFOUND) fail("cas missing: " . $m->getResultMessage());
if ($m->get("$tag:cas") !== "v1") fail("cas value");

// incr / decr
$m->set("$tag:ctr", "10");
if ($m->increment("$tag:ctr", 5) !== 15) fail("incr");
if ($m->decrement("$tag:ctr", 20) !== 0) fail("decr to 0");
if ($m->increment("$tag:ctr", 7) !== 7) fail("incr 7");
if ($m->increment("$tag:noctr", 1) !== false || $m->getResultCode() !== Memcached::RES_NOTFOUND) fail("incr missing");

// touch
if (!$m->touch("$tag:1", 3600)) fail("touch: " . $m->getResultMessage());
if ($m->touch("$tag:notouch", 3600)) fail("touch missing");

// delete every third key
for ($i = 0; $i < $N; $i += 3) if (!$m->delete("$tag:$i")) fail("delete $tag:$i");
if ($m->delete("$tag:0")) fail("delete twice");
if ($m->get("$tag:0") !== false || $m->getResultCode() !== Memcached::RES_NOTFOUND) fail("deleted key read");

// large values, one over -I
foreach ([500 * 1024, 1024 * 1024] as $n)
    if (!$m->set("$tag:big$n", big($n))) fail("set big $n: " . $m->getResultMessage());
$rnd = random_bytes(1024 * 1024);
if (!$m->set("$tag:bigrnd", $rnd)) fail("set bigrnd");
foreach ([500 * 1024, 1024 * 1024] as $n)
    if ($m->get("$tag:big$n") !== big($n)) fail("get big $n");
if ($m->get("$tag:bigrnd") !== $rnd) fail("get bigrnd");
if ($m->set("$tag:huge", str_repeat("x", 2 * 1024 * 1024 + 1))) fail("over -I stored");
if ($m->get("$tag:1") !== val($tag, 1)) fail("after too large");
echo "ALL OK\n";
"""


def php_memcached_argv():
    # Debian's memcached.so needs igbinary and msgpack loaded first.
    return php_argv("igbinary", "msgpack", "memcached")


@need_php
def test_php_memcached_ketama(pool, tmp_path):
    run_script(tmp_path, "memcached.php", PHP_MEMCACHED, php_memcached_argv(),
               {"RC_SERVERS": addrs(pool), "RC_MODE": "ops", "RC_N": str(N_KEYS)})
    expect = {"pm:%d" % i: value("pm", i) for i in range(N_KEYS) if i % 3}
    expect.update({"pm:big%d" % n: big(n) for n in BIG_SIZES})
    expect["pm:cas"] = b"v1"
    expect["pm:ctr"] = b"7"
    check_placement(pool, expect, absent=["pm:%d" % i for i in range(0, N_KEYS, 3)])


@need_php
def test_php_memcached_getmulti_4000(pool, tmp_path):
    run_script(tmp_path, "memcached.php", PHP_MEMCACHED, php_memcached_argv(),
               {"RC_SERVERS": addrs(pool), "RC_MODE": "multi", "RC_N": str(N_MULTI)})
    check_placement(pool, {"pmx:%d" % i: value("pmx", i) for i in range(N_MULTI)})


PHP_MEMCACHE = "<?php\n" + PHP_COMMON + r"""
$m = new Memcache();
foreach ($servers as $s) {
    [$h, $p] = explode(':', $s);
    if (!$m->addServer($h, (int)$p, false, 1, 30, 15)) fail("addServer $s");
}
if (ini_get('memcache.hash_strategy') !== 'consistent') fail("hash_strategy");
$tag = "pc";

if ($mode === 'multi') {
    $keys = [];
    for ($i = 0; $i < $N; $i++) {
        if (!$m->set("pcx:$i", val("pcx", $i))) fail("set pcx:$i");
        $keys[] = "pcx:$i";
    }
    $keys[] = "pcx:missing";
    $got = $m->get($keys);
    if (!is_array($got)) fail("multi-get of " . count($keys) . " keys failed");
    if (count($got) !== $N) fail("multi-get returned " . count($got) . " of $N");
    for ($i = 0; $i < $N; $i++) if (!isset($got["pcx:$i"]) || $got["pcx:$i"] !== val("pcx", $i)) fail("multi-get pcx:$i");
    echo "ALL OK\n";
    exit(0);
}

for ($i = 0; $i < $N; $i++)
    if (!$m->set("$tag:$i", val($tag, $i))) fail("set $tag:$i");
for ($i = 0; $i < $N; $i++)
    if ($m->get("$tag:$i") !== val($tag, $i)) fail("get $tag:$i");
for ($at = 0; $at < $N; $at += 900) {
    $keys = [];
    for ($i = $at; $i < min($N, $at + 900); $i++) $keys[] = "$tag:$i";
    $keys[] = "$tag:missing";
    $got = $m->get($keys);
    if (!is_array($got) || count($got) !== count($keys) - 1) fail("multi-get returned " . (is_array($got) ? count($got) : "false"));
    for ($i = $at; $i < min($N, $at + 900); $i++) if ($got["$tag:$i"] !== val($tag, $i)) fail("multi-get $tag:$i");
}

// gets + cas (get with a &$cas), and a cas conflict
$m->set("$tag:cas", "v0");
$flags = null; $cas = null;
if ($m->get("$tag:cas", $flags, $cas) !== "v0" || !$cas) fail("get with cas");
if (!$m->cas("$tag:cas", "v1", 0, 0, $cas)) fail("cas");
if ($m->cas("$tag:cas", "v2", 0, 0, $cas)) fail("stale cas stored");
if ($m->get("$tag:cas") !== "v1") fail("cas value");

// incr / decr
$m->set("$tag:ctr", "10");
if ($m->increment("$tag:ctr", 5) !== 15) fail("incr");
if ($m->decrement("$tag:ctr", 20) !== 0) fail("decr to 0");
if ($m->increment("$tag:ctr", 7) !== 7) fail("incr 7");
if ($m->increment("$tag:noctr", 1) !== false) fail("incr missing");

// (the memcache extension has no touch)

for ($i = 0; $i < $N; $i += 3) if (!$m->delete("$tag:$i")) fail("delete $tag:$i");
if ($m->delete("$tag:0")) fail("delete twice");
if ($m->get("$tag:0") !== false) fail("deleted key read");

foreach ([500 * 1024, 1024 * 1024] as $n)
    if (!$m->set("$tag:big$n", big($n))) fail("set big $n");
$rnd = random_bytes(1024 * 1024);
if (!$m->set("$tag:bigrnd", $rnd)) fail("set bigrnd");
foreach ([500 * 1024, 1024 * 1024] as $n)
    if ($m->get("$tag:big$n") !== big($n)) fail("get big $n");
if ($m->get("$tag:bigrnd") !== $rnd) fail("get bigrnd");
if (@$m->set("$tag:huge", str_repeat("x", 2 * 1024 * 1024 + 1))) fail("over -I stored");
if ($m->get("$tag:1") !== val($tag, 1)) fail("after too large");
echo "ALL OK\n";
"""


def php_memcache_argv():
    # No automatic compression: the daemons must hold the values as sent.
    return php_argv("memcache", ini=("memcache.hash_strategy=consistent",
                                     "memcache.protocol=ascii",
                                     "memcache.allow_failover=0",
                                     "memcache.compress_threshold=0"))


@need_php
def test_php_memcache_consistent(pool, tmp_path):
    run_script(tmp_path, "memcache.php", PHP_MEMCACHE, php_memcache_argv(),
               {"RC_SERVERS": addrs(pool), "RC_MODE": "ops", "RC_N": str(N_KEYS)})
    expect = {"pc:%d" % i: value("pc", i) for i in range(N_KEYS) if i % 3}
    expect.update({"pc:big%d" % n: big(n) for n in BIG_SIZES})
    expect["pc:cas"] = b"v1"
    expect["pc:ctr"] = b"7"
    check_placement(pool, expect, absent=["pc:%d" % i for i in range(0, N_KEYS, 3)])


@need_php
def test_php_memcache_get_4000(pool, tmp_path):
    run_script(tmp_path, "memcache.php", PHP_MEMCACHE, php_memcache_argv(),
               {"RC_SERVERS": addrs(pool), "RC_MODE": "multi", "RC_N": str(N_MULTI)})
    check_placement(pool, {"pcx:%d" % i: value("pcx", i) for i in range(N_MULTI)})


# --------------------------------------------------------------------------
# Perl Cache::Memcached::Fast

def have_perl_fast():
    return shutil.which("perl") and subprocess.run(
        ["perl", "-MCache::Memcached::Fast", "-e", "1"], capture_output=True,
        timeout=30).returncode == 0


need_perl = pytest.mark.skipif(not have_perl_fast(),
                               reason="libcache-memcached-fast-perl missing (scripts/deps.sh)")

PERL_FAST = r"""
use strict;
use warnings;
use Cache::Memcached::Fast;

sub fail { print STDERR "FAIL: $_[0]\n"; print "FAILED\n"; exit 1; }
sub val { my ($tag, $i) = @_; return "$tag:$i:" . (chr(97 + $i % 26) x ($i % 50)); }
sub big { my $n = shift; my $p = "0123456789abcdefghijklmnopqrstuvwxyz";
    return substr($p x (int($n / length $p) + 1), 0, $n); }

my @servers = split /,/, $ENV{RC_SERVERS};
my $mode = $ENV{RC_MODE};
my $N = $ENV{RC_N};
my $m = Cache::Memcached::Fast->new({
    servers => \@servers, ketama_points => 150, connect_timeout => 5,
    io_timeout => 30, compress_threshold => -1, max_size => 2 * 1024 * 1024 + 1024,
    utf8 => 0, nowait => 0, close_on_error => 1,
});
my $tag = "pl";

if ($mode eq 'multi') {
    my @keys = map { "plx:$_" } 0 .. $N - 1;
    my $res = $m->set_multi(map { ["plx:$_", val("plx", $_)] } 0 .. $N - 1);
    for my $k (@keys) { fail("set_multi $k") unless $res->{$k}; }
    my $got = $m->get_multi(@keys, "plx:missing");
    my $n = scalar keys %$got;
    fail("get_multi returned $n of $N") unless $n == $N;
    for my $i (0 .. $N - 1) { fail("get_multi plx:$i") unless $got->{"plx:$i"} eq val("plx", $i); }
    my $gets = $m->gets_multi(@keys);
    fail("gets_multi returned " . scalar(keys %$gets)) unless scalar(keys %$gets) == $N;
    for my $i (0 .. $N - 1) {
        my $cv = $gets->{"plx:$i"};
        fail("gets_multi plx:$i") unless $cv->[0] && $cv->[1] eq val("plx", $i);
    }
    print "ALL OK\n";
    exit 0;
}

for my $i (0 .. $N - 1) { fail("set $tag:$i") unless $m->set("$tag:$i", val($tag, $i)); }
for my $i (0 .. $N - 1) {
    my $v = $m->get("$tag:$i");
    fail("get $tag:$i") unless defined $v && $v eq val($tag, $i);
}
for (my $at = 0; $at < $N; $at += 900) {
    my $end = $at + 899 < $N - 1 ? $at + 899 : $N - 1;
    my $got = $m->get_multi((map { "$tag:$_" } $at .. $end), "$tag:missing");
    fail("get_multi returned " . scalar(keys %$got)) unless scalar(keys %$got) == $end - $at + 1;
    for my $i ($at .. $end) { fail("get_multi $tag:$i") unless $got->{"$tag:$i"} eq val($tag, $i); }
}

# gets + cas, a cas conflict; gats
$m->set("$tag:cas", "v0");
my $cv = $m->gets("$tag:cas");
fail("gets") unless $cv && $cv->[1] eq "v0";
fail("cas") unless $m->cas("$tag:cas", $cv->[0], "v1");
my $r = $m->cas("$tag:cas", $cv->[0], "v2");
fail("stale cas stored") if $r || !defined $r;
fail("cas value") unless $m->get("$tag:cas") eq "v1";
my $gv = $m->gats(3600, "$tag:cas");
fail("gats") unless $gv && $gv->[1] eq "v1" && $gv->[0] ne $cv->[0];
fail("gat") unless $m->gat(3600, "$tag:2") eq val($tag, 2);

# incr / decr
$m->set("$tag:ctr", "10");
fail("incr") unless $m->incr("$tag:ctr", 5) == 15;
my $d = $m->decr("$tag:ctr", 20);
fail("decr to 0: " . ($d // 'undef')) unless defined $d && $d == 0;
fail("incr 7") unless $m->incr("$tag:ctr", 7) == 7;
$r = $m->incr("$tag:noctr", 1);
fail("incr missing") if $r || !defined $r;

# touch
fail("touch") unless $m->touch("$tag:1", 3600);
$r = $m->touch("$tag:notouch", 3600);
fail("touch missing") if $r || !defined $r;

for (my $i = 0; $i < $N; $i += 3) { fail("delete $tag:$i") unless $m->delete("$tag:$i"); }
$r = $m->delete("$tag:0");
fail("delete twice") if $r || !defined $r;
fail("deleted key read") if defined $m->get("$tag:0");

for my $n (500 * 1024, 1024 * 1024) { fail("set big $n") unless $m->set("$tag:big$n", big($n)); }
my $rnd = join '', map { chr(int(rand(256))) } 1 .. 1024 * 1024;
fail("set bigrnd") unless $m->set("$tag:bigrnd", $rnd);
for my $n (500 * 1024, 1024 * 1024) { fail("get big $n") unless $m->get("$tag:big$n") eq big($n); }
fail("get bigrnd") unless $m->get("$tag:bigrnd") eq $rnd;
$r = $m->set("$tag:huge", "x" x (2 * 1024 * 1024 + 1));
fail("over -I stored") if $r;
fail("after too large") unless $m->get("$tag:1") eq val($tag, 1);
print "ALL OK\n";
"""


@need_perl
def test_perl_cache_memcached_fast_ketama(pool, tmp_path):
    run_script(tmp_path, "fast.pl", PERL_FAST, ["perl"],
               {"RC_SERVERS": addrs(pool), "RC_MODE": "ops", "RC_N": str(N_KEYS)})
    expect = {"pl:%d" % i: value("pl", i) for i in range(N_KEYS) if i % 3}
    expect.update({"pl:big%d" % n: big(n) for n in BIG_SIZES})
    expect["pl:cas"] = b"v1"
    expect["pl:ctr"] = b"7"
    check_placement(pool, expect, absent=["pl:%d" % i for i in range(0, N_KEYS, 3)])


@need_perl
def test_perl_get_multi_4000(pool, tmp_path):
    run_script(tmp_path, "fast.pl", PERL_FAST, ["perl"],
               {"RC_SERVERS": addrs(pool), "RC_MODE": "multi", "RC_N": str(N_MULTI)})
    check_placement(pool, {"plx:%d" % i: value("plx", i) for i in range(N_MULTI)})


# --------------------------------------------------------------------------
# libmemcached's tools

def tool(name, *args, timeout=120):
    p = subprocess.run([name] + list(args), capture_output=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr


need_tools = pytest.mark.skipif(not shutil.which("memcstat"),
                                reason="libmemcached-tools missing (scripts/deps.sh)")


@need_tools
def test_memcstat_memcp_memccat(pool, tmp_path):
    servers = "--servers=" + addrs(pool)
    rc, out, err = tool("memcstat", servers)
    assert rc == 0, err
    text = out.decode()
    for s in pool:
        assert "Server: 127.0.0.1 (%d)" % s.port in text, text[:2000]
    assert text.count("version: 1.6") == DAEMONS
    assert text.count("curr_items: 0") == DAEMONS

    # memccp stores files (key = file name), memccat reads them back.
    files = {}
    for i in range(30):
        n = [0, 1, 100, 4096, 500 * 1024, 1024 * 1024][i % 6] + i
        data = os.urandom(n)
        path = tmp_path / ("file%02d" % i)
        path.write_bytes(data)
        files[path.name] = data
    rc, out, err = tool("memccp", servers, *[str(tmp_path / f) for f in files])
    assert rc == 0, (out, err)
    # memccat prints a newline after each value; --file writes it exactly.
    for name, data in files.items():
        back = tmp_path / ("back-" + name)
        rc, out, err = tool("memccat", servers, "--file=%s" % back, name)
        assert rc == 0 and back.read_bytes() == data, (name, err)
    rc, out, err = tool("memcexist", servers, "file00")
    assert rc == 0, err
    rc, out, err = tool("memcrm", servers, "file00")
    assert rc == 0, err
    rc, out, err = tool("memccat", servers, "file00")
    assert rc != 0
    rc, out, err = tool("memctouch", servers, "--expire=3600", "file01")
    assert rc == 0, err

    # memcstat again: the 29 files, spread over the daemons.
    rc, out, err = tool("memcstat", servers)
    counts = [int(line.split(":")[1]) for line in out.decode().splitlines()
              if line.strip().startswith("curr_items:")]
    assert sum(counts) == 29 and len(counts) == DAEMONS, out.decode()


@need_tools
def test_memcdump_lists_every_key(pool):
    """memcdump walks `stats cachedump <slab id> 0` over slab ids 0..63 (or
    0..199 for servers older than 1.4.23) on every server, so this needs the
    daemon's `stats cachedump`."""
    c = HashClient([("127.0.0.1", s.port) for s in pool], connect_timeout=10,
                   timeout=30, default_noreply=False)
    keys = ["dump:%d" % i for i in range(2000)]
    assert c.set_many({k: value("dump", i) for i, k in enumerate(keys)}) == []
    c.close()
    rc, out, err = tool("memcdump", "--servers=" + addrs(pool))
    assert rc == 0, (out[-500:], err[-500:])
    dumped = out.decode().split()
    assert set(dumped) == set(keys), (len(dumped), sorted(set(keys) - set(dumped))[:5])


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
