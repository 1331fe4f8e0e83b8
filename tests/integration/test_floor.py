"""Integration tests of the network floor, build/rc-floor (scripts/floor.c).

rc-floor is what `make bench` measures ringcached against, so it must take
the bench's load without a single error: rc-loadgen drives it with gets,
multi-gets, sets and pipelines over many connections, and every get must be
a hit of the configured size. Raw sockets check what the load generator
cannot steer: requests split at every byte boundary, a set whose data
arrives over many reads, a client that does not read its answers (the floor
pauses and stays small, then answers everything), a line that is too long,
quit, and a stop by SIGTERM with connections open (exit status 0). With
--store (the store floor) sets must keep key, flags and data however their
bytes arrive, and a loaded table of 100000 keys must answer every get with a
hit. The RSS bound is skipped under a sanitizer ($RINGCACHE_SANITIZER).

Each test runs with multishot receives over the provided-buffer ring and
with --single-shot (the fallback for kernels without one). The binary sits
next to $RINGCACHED (so the sanitizer stages test their own build), else in
build/; every process is stopped by its pid and must exit 0.
"""
import fcntl
import json
import os
import signal
import socket
import subprocess
import termios
import threading
import time
from pathlib import Path

import pytest

from conftest import Conn, free_port, raise_nofile

ROOT = Path(__file__).resolve().parents[2]
_near = Path(os.environ["RINGCACHED"]).parent / "rc-floor" if os.environ.get("RINGCACHED") else None
FLOOR = os.environ.get("RC_FLOOR") or str(_near if _near and _near.exists()
                                          else ROOT / "build" / "rc-floor")
LOADGEN = ROOT / "build" / "rc-loadgen"
RUN_TIMEOUT = 60
SANITIZER = os.environ.get("RINGCACHE_SANITIZER")  # RSS bounds skipped under one
STOP_TIMEOUT = 10


class Floor:
    """One rc-floor on a free loopback port, stopped by its pid."""

    def __init__(self, *args):
        self.stopped = None
        self.port = free_port()
        self.argv = [FLOOR, "-p", str(self.port), "-l", "127.0.0.1",
                     "-t", "1", "-m", "64", "-U", "0", "-c", "4096", *map(str, args)]
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("rc-floor exited at start-up: %s %s"
                                   % (self.argv, self.proc.stderr.read()))
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.proc.kill()
                    raise RuntimeError("rc-floor did not listen: %s" % self.argv)
                time.sleep(0.02)

    @property
    def server(self):
        return "127.0.0.1:%d" % self.port

    def connect(self):
        s = socket.create_connection(("127.0.0.1", self.port), 10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def rss_kib(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        """SIGTERM by pid; returns (exit status, stderr). Idempotent."""
        if self.stopped:
            return self.stopped
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            rc = self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            rc = "timeout"
        err = self.proc.stderr.read().decode(errors="replace")
        self.proc.stderr.close()
        self.stopped = (rc, err)
        return self.stopped


@pytest.fixture(params=["multishot", "single-shot"])
def floor_factory(request):
    """Starts floors in the mode of the parameter; each must exit 0."""
    started = []

    def make(*args):
        extra = ["--single-shot"] if request.param == "single-shot" else []
        f = Floor(*args, *extra)
        started.append(f)
        return f

    yield make
    failures = []
    for f in started:
        rc, err = f.stop()
        if rc != 0:
            failures.append("%s exited %s: %s" % (f.argv, rc, err[-4000:]))
    assert not failures, "\n".join(failures)


@pytest.fixture
def floor(floor_factory):
    return floor_factory()


def loadgen(server, *args):
    p = subprocess.run([str(LOADGEN), "-s", server, "--json", "-q", *map(str, args)],
                       capture_output=True, text=True, timeout=RUN_TIMEOUT)
    try:
        return p.returncode, json.loads(p.stdout), p.stderr
    except json.JSONDecodeError:
        pytest.fail("no JSON from rc-loadgen (status %d): %r %r"
                    % (p.returncode, p.stdout, p.stderr))


def value_reply(keys, size, cas=False):
    out = b""
    for k in keys:
        out += b"VALUE %s 0 %d%s\r\n" % (k, size, b" 1" if cas else b"") + b"x" * size + b"\r\n"
    return out + b"END\r\n"


# ---- under load ------------------------------------------------------------

@pytest.mark.parametrize("shape", [
    ["-c", 20, "-r", "1:0"],
    ["-c", 20, "-r", "1:0", "-m", 10],
    ["-c", 20, "-r", "0:1", "-v", 3000],
    ["-c", 20, "-r", "9:1", "-P", 16],
    ["-c", 300, "-t", 2, "-r", "1:1", "-P", 4, "-m", 3, "-v", "10-5000"],
], ids=["gets", "multigets", "sets", "pipelined", "many-conns-mixed"])
def test_loadgen_is_clean(floor, shape):
    raise_nofile(4096)
    n = 20000
    rc, d, err = loadgen(floor.server, "-n", n, "-k", 5000, *shape)
    assert d["errors"] == 0, (d, err)
    assert d["wrong_values"] == 0, (d, err)
    assert rc == 0, err
    assert d["requests"] == n
    if d["gets"]:
        assert d["hit_ratio"] == 1.0, d  # the floor hits every key


def test_loadgen_misses(floor_factory):
    f = floor_factory("--miss")
    rc, d, err = loadgen(f.server, "-n", 5000, "-c", 8, "-P", 4, "-m", 4)
    assert rc == 0 and d["errors"] == 0, (d, err)
    assert d["hit_ratio"] == 0.0, d


# ---- raw sockets -----------------------------------------------------------

# Requests and the answers the floor owes them (100-byte values).
SCRIPT = [
    (b"get a\r\n", value_reply([b"a"], 100)),
    (b"get k1 k22 k333\r\n", value_reply([b"k1", b"k22", b"k333"], 100)),
    (b"gets g\r\n", value_reply([b"g"], 100, cas=True)),
    (b"set s 5 0 7\r\nabc\r\nde\r\n", b"STORED\r\n"),
    (b"set q 0 0 3 noreply\r\nxyz\r\n", b""),
    (b"cas c 0 0 2 99\r\nhi\r\n", b"STORED\r\n"),
    (b"delete d\r\n", b"DELETED\r\n"),
    (b"delete d noreply\r\n", b""),
    (b"version\r\n", b"VERSION rc-floor\r\n"),
    (b"bogus\r\n", b"ERROR\r\n"),
    (b"get\r\n", b"ERROR\r\n"),
    (b"get \r\n", b"ERROR\r\n"),
    (b"get  spaced   keys \r\n", value_reply([b"spaced", b"keys"], 100)),
    (b"get lf\n", value_reply([b"lf"], 100)),
]
REQUESTS = b"".join(r for r, _ in SCRIPT)
ANSWERS = b"".join(a for _, a in SCRIPT)


def read_exact(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise EOFError("closed after %d of %d bytes: %r" % (len(data), n, data[-200:]))
        data += chunk
    return data


def test_split_at_every_byte(floor):
    """The whole script, cut in two at every byte, on one connection."""
    s = floor.connect()
    for i in range(1, len(REQUESTS)):
        s.sendall(REQUESTS[:i])  # TCP_NODELAY: two segments, most often
        s.sendall(REQUESTS[i:])  # two reads (the test holds either way)
        got = read_exact(s, len(ANSWERS))
        assert got == ANSWERS, "split at byte %d" % i
    s.close()


def test_pipelined_script(floor):
    """Many copies of the script in one send: answered in order."""
    s = floor.connect()
    s.sendall(REQUESTS * 200)
    assert read_exact(s, len(ANSWERS) * 200) == ANSWERS * 200
    s.close()


def delivered(s, deadline=10.0):
    """Waits until the server's kernel has acknowledged every byte sent on
    s (tcp_info's tcpi_unacked, at byte 24, is 0), so that what is sent
    next comes in a later segment."""
    end = time.monotonic() + deadline
    while int.from_bytes(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO,
                                      32)[24:28], "little"):
        assert time.monotonic() < end, "bytes not acknowledged"
        time.sleep(0.0005)


def test_set_split_across_reads(floor):
    """A 300 KB set arrives in pieces; its line too; then a get is answered."""
    s = floor.connect()
    size = 300 * 1000
    data = bytes(i % 251 for i in range(size))
    req = b"set big 0 0 %d\r\n" % size + data + b"\r\nget after\r\n"
    # Each piece is out of the client before the next is sent, so that most
    # arrive in reads of their own; the test holds however they are read.
    for off in range(0, len(req), 7919):
        s.sendall(req[off:off + 7919])
        delivered(s)
    want = b"STORED\r\n" + value_reply([b"after"], 100)
    assert read_exact(s, len(want)) == want
    # the data line's "\r\n" split from its bytes, then more requests
    s.sendall(b"set t 0 0 4\r\nab")
    delivered(s)
    s.sendall(b"cd\r")
    delivered(s)
    s.sendall(b"\nversion\r\n")
    assert read_exact(s, 26) == b"STORED\r\nVERSION rc-floor\r\n"
    s.close()


def stalled(s, f, polls=5, deadline=20.0):
    """Waits until answers wait unread on s and neither their count nor the
    floor's RSS has moved over `polls` looks 20 ms apart (the floor has
    stopped: paused, or holding all it will hold); returns the highest RSS
    seen on the way."""
    end = time.monotonic() + deadline
    peak, last, same = 0, None, 0
    while same < polls:
        assert time.monotonic() < end, "the exchange did not stall"
        time.sleep(0.02)  # poll interval
        now = (int.from_bytes(fcntl.ioctl(s.fileno(), termios.FIONREAD,
                                          b"\0" * 4), "little"), f.rss_kib())
        peak = max(peak, now[1])
        same = same + 1 if now == last and now[0] else 0
        last = now
    return peak


def test_client_that_does_not_read(floor_factory):
    """Answers pile up while the client does not read: the floor pauses,
    stays small, and answers every request once the client reads."""
    f = floor_factory("--value-size", 4096)
    s = f.connect()
    n = 20000  # 80 MB of answers
    base = f.rss_kib()
    sender = threading.Thread(target=s.sendall, args=(b"get k\r\n" * n,))
    sender.start()
    grown = stalled(s, f) - base
    end, tail, count = b"END\r\n", b"", 0
    while count < n:
        chunk = s.recv(1 << 20)
        assert chunk, "closed after %d answers" % count
        buf = tail + chunk
        count += buf.count(end)
        tail = buf[-(len(end) - 1):]
    sender.join(10)
    assert count == n
    if not SANITIZER:  # a sanitizer's quarantine and shadow memory grow too
        assert grown < 8 * 1024, "RSS grew by %d KiB while the client did not read" % grown
    s.sendall(b"version\r\n")
    assert read_exact(s, 18) == b"VERSION rc-floor\r\n"
    s.close()


def test_line_too_long_closes(floor):
    s = floor.connect()
    s.sendall(b"get " + b"k" * 5000 + b"\r\n")
    c = Conn(s)
    assert c.line() == "CLIENT_ERROR line too long"
    assert c.closed_by_peer()
    s.close()


def test_quit_and_eof(floor):
    s = floor.connect()
    s.sendall(b"get a\r\nquit\r\nget b\r\n")
    assert read_exact(s, len(value_reply([b"a"], 100))) == value_reply([b"a"], 100)
    assert Conn(s).closed_by_peer()
    s.close()
    # half a request, then EOF: the connection goes, the floor stays
    s = floor.connect()
    s.sendall(b"get a\r\nset x 0 0 10\r\nabc")
    s.shutdown(socket.SHUT_WR)
    assert read_exact(s, len(value_reply([b"a"], 100))) == value_reply([b"a"], 100)
    assert Conn(s).closed_by_peer()
    s.close()
    st = Conn(floor.connect()).stats()
    assert st["version"] == "rc-floor"
    assert int(st["pid"]) == floor.proc.pid


def test_stop_with_connections_open(floor):
    socks = [floor.connect() for _ in range(50)]
    for s in socks:
        s.sendall(b"get a\r\nset x 0 0 1")  # the last request half sent
    for s in socks:
        read_exact(s, len(value_reply([b"a"], 100)))
    rc, err = floor.stop()
    assert rc == 0, err
    for s in socks:
        s.close()


# ---- --store: the floor of a store ------------------------------------------

# Requests and answers of rc-floor --store: sets keep their data and flags,
# gets answer from them; a bad data chunk, add and delete change nothing.
STORE_SCRIPT = [
    (b"get none\r\n", b"END\r\n"),
    (b"set a 5 0 3\r\nabc\r\n", b"STORED\r\n"),
    (b"get none a none\r\n", b"VALUE a 5 3\r\nabc\r\nEND\r\n"),
    (b"set a 4294967295 0 2 noreply\r\nxy\r\n", b""),
    (b"gets a\r\n", b"VALUE a 4294967295 2 1\r\nxy\r\nEND\r\n"),
    (b"set e 0 0 0\r\n\r\n", b"STORED\r\n"),
    (b"set bad 0 0 2\r\nzzZZ", b"STORED\r\n"),
    (b"add c 0 0 1\r\nq\r\n", b"STORED\r\n"),
    (b"delete a\r\n", b"DELETED\r\n"),
    (b"get bad c e a\r\n", b"VALUE e 0 0\r\n\r\nVALUE a 4294967295 2\r\nxy\r\nEND\r\n"),
]
STORE_REQUESTS = b"".join(r for r, _ in STORE_SCRIPT)
STORE_ANSWERS = b"".join(a for _, a in STORE_SCRIPT)


def test_store_split_at_every_byte(floor_factory):
    """The store script cut in two at every byte: what a set keeps does not
    depend on how its line and data arrive."""
    f = floor_factory("--store")
    s = f.connect()
    for i in range(1, len(STORE_REQUESTS)):
        s.sendall(STORE_REQUESTS[:i])
        s.sendall(STORE_REQUESTS[i:])
        assert read_exact(s, len(STORE_ANSWERS)) == STORE_ANSWERS, "split at byte %d" % i
    s.close()


def test_store_keeps_large_and_many(floor_factory):
    """A 300 KB value sent in pieces comes back whole; 100000 keys (the
    table doubles past 3/4 of its first 65536 slots) all hit under load."""
    f = floor_factory("--store")
    s = f.connect()
    data = bytes(i % 251 for i in range(300 * 1000))
    req = b"set big 7 0 %d\r\n" % len(data) + data + b"\r\n"
    for off in range(0, len(req), 7919):
        s.sendall(req[off:off + 7919])
    assert read_exact(s, 8) == b"STORED\r\n"
    s.sendall(b"get big\r\n")
    want = b"VALUE big 7 %d\r\n" % len(data) + data + b"\r\nEND\r\n"
    assert read_exact(s, len(want)) == want
    s.close()
    keys = ["-k", 100000, "-v", 100, "--key-prefix", "st:"]
    rc, d, err = loadgen(f.server, "-c", 8, *keys, "--prefill", "-n", 0)
    assert rc == 0 and d["errors"] == 0, (d, err)
    rc, d, err = loadgen(f.server, "-n", 20000, "-c", 20, "-P", 16, "-r", "9:1", *keys)
    assert rc == 0 and d["errors"] == 0 and d["wrong_values"] == 0, (d, err)
    assert d["get_keys"] > 0 and d["hit_ratio"] == 1.0, d
