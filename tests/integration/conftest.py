"""Shared fixtures of the integration tests: a real ringcached on loopback.

`Server` starts the daemon on a free 127.0.0.1 port (or a unix socket),
waits for its READY=1 on a datagram socket the test owns (NOTIFY_SOCKET, the
same mechanism systemd uses, so no sleeps and no polling), and stops it by
its pid: SIGTERM, then asserts it exited 0 within a few seconds. Under a
sanitizer build a report makes the daemon exit non-zero, so every test that
uses a server also checks that the server stayed clean.

The binary comes from $RINGCACHED (the Makefile points it at build/ or at a
sanitizer build); $RINGCACHE_THREADS overrides the thread counts the tests
are parametrised with (the TSan stage runs only -t 4).
"""
import os
import resource
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("RINGCACHED") or str(ROOT / "build" / "ringcached")
THREADS = [int(t) for t in os.environ.get("RINGCACHE_THREADS", "1 4").split()]
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))


class Server:
    """One ringcached process started by a test and stopped by its pid."""

    def __init__(self, *args, threads=1, unix=False, nofile=None):
        self.tmp = tempfile.TemporaryDirectory(prefix="rc-test-")
        self.port = None
        self.path = None
        argv = [BIN, "-t", str(threads)]
        if unix:
            self.path = os.path.join(self.tmp.name, "rc.sock")
            argv += ["-s", self.path]
        else:
            self.port = free_port()
            argv += ["-l", "127.0.0.1", "-p", str(self.port)]
        argv += [str(a) for a in args]
        self.argv = argv
        notify_path = os.path.join(self.tmp.name, "notify")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(notify_path)
        env = dict(os.environ, NOTIFY_SOCKET=notify_path)
        self.log = open(os.path.join(self.tmp.name, "stderr"), "w+b")
        # nofile: the daemon's open-files limit, soft and hard (it raises
        # its soft limit to what -c needs, up to the hard one)
        limit = None if nofile is None else (
            lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile)))
        self.proc = subprocess.Popen(argv, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT, preexec_fn=limit)
        self.messages = []
        if not self.wait_message("READY=1", START_TIMEOUT):
            self.kill()
            raise RuntimeError("ringcached did not become ready: %s\n%s"
                               % (argv, self.output()))

    def wait_message(self, what, timeout):
        """Reads notify datagrams until one contains `what`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            self.notify.settimeout(max(0.01, min(0.5, deadline - time.monotonic())))
            try:
                msg = self.notify.recv(4096).decode()
            except socket.timeout:
                continue
            self.messages.append(msg)
            if what in msg.split("\n"):
                return True
        return False

    @property
    def addr(self):
        return self.path if self.path else ("127.0.0.1", self.port)

    def connect(self, timeout=10.0):
        if self.path:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(self.addr)
        return s

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def rss_kib(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def cpu_seconds(self):
        """utime + stime of the daemon (/proc/PID/stat, fields 14 and 15,
        counted from the ')' that ends the command name)."""
        with open("/proc/%d/stat" % self.proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def alive(self):
        return self.proc.poll() is None

    def kill(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.close_files()

    def close_files(self):
        self.notify.close()
        self.log.close()
        self.tmp.cleanup()

    def stop(self):
        """SIGTERM by pid; returns (exit status, output)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            rc = self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            rc = "timeout"
        out = self.output()
        self.close_files()
        return rc, out


@pytest.fixture
def server_factory():
    """Starts servers on demand; stops each and asserts a clean exit."""
    started = []

    def make(*args, **kw):
        s = Server(*args, **kw)
        started.append(s)
        return s

    yield make
    failures = []
    for s in started:
        if s.proc.returncode is not None and s.notify.fileno() < 0:
            continue  # the test stopped it itself and checked
        rc, out = s.stop()
        if rc != 0:
            failures.append("%s exited %s:\n%s" % (s.argv, rc, out[-4000:]))
    assert not failures, "\n".join(failures)


@pytest.fixture(params=THREADS, ids=lambda t: "t%d" % t)
def server(request, server_factory):
    """A default server at each of the thread counts under test."""
    return server_factory(threads=request.param)


def wait_stat(c, name, pred, timeout=15.0, each=None):
    """Polls `stats` until pred(int(value)) holds (bounded); runs each()
    between polls. Returns the last stats."""
    deadline = time.monotonic() + timeout
    st = None
    while time.monotonic() < deadline:
        st = c.stats()
        if pred(int(st[name])):
            return st
        if each:
            each()
        time.sleep(0.01)
    pytest.fail("stat %s is %s after %.0f s" % (name, st and st[name], timeout))


class Conn:
    """A raw text-protocol connection: send bytes, read exact replies."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data if isinstance(data, bytes) else data.encode())

    def _fill(self):
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise EOFError("connection closed; have %r" % self.buf[:200])
        self.buf += chunk

    def line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode(errors="replace")

    def exact(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def cmd(self, data):
        self.send(data)
        return self.line()

    def get_values(self, cmdline):
        """Sends a get-like line, returns {key: (flags, value[, cas])}."""
        self.send(cmdline)
        return self.read_values()

    def read_values(self):
        """Reads one get reply (VALUE blocks up to END) without sending."""
        return {b[0]: b[1:] for b in self.read_blocks()}

    def read_blocks(self):
        """Reads one get reply: its VALUE blocks as (key, flags, data[,
        cas]) tuples, in reply order."""
        out = []
        while True:
            line = self.line()
            if line == "END":
                return out
            parts = line.split()
            assert parts[0] == "VALUE", line
            n = int(parts[3])
            data = self.exact(n + 2)
            assert data[-2:] == b"\r\n"
            rest = tuple(int(p) for p in parts[4:])
            out.append((parts[1], int(parts[2]), data[:-2]) + rest)

    def stats(self, sub=""):
        self.send("stats %s\r\n" % sub if sub else "stats\r\n")
        out = {}
        while True:
            line = self.line()
            if line == "END":
                return out
            _, name, value = line.split(" ", 2)
            out[name] = value

    def closed_by_peer(self, timeout=5.0):
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True

    def close(self):
        self.sock.close()


@pytest.fixture
def conn(server):
    c = Conn(server.connect())
    yield c
    c.close()
