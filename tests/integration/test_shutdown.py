"""Shutdown and start-up flags of the real daemon.

SIGTERM and SIGINT each stop ringcached gracefully: it stops accepting,
finishes the answers to requests it has already read (a pipelined batch
sent just before the signal arrives complete, in order, then the connection
closes), closes idle connections, and exits 0 within 1 s of the signal -
measured from the kill() to the exit seen on a pidfd, not by polling.

Also: -U 0 is accepted, -U 1 is refused with a message that names UDP and
exit status 64 (EX_USAGE), and without -l the daemon listens on 127.0.0.1
only (read from /proc/PID/net/tcp{,6} for the sockets the process holds).
"""
import os
import re
import select
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import BIN, THREADS, Conn, free_port

BIG_LEN = 102400
BIG_VALUE = bytes(range(256)) * (BIG_LEN // 256)
SMALL = 25


def batch_and_expected(nbig):
    """A pipelined batch: nbig 100 KB values, each followed by a multi-get
    of small ones."""
    req, want = [], []
    for r in range(nbig):
        req.append(b"get big\r\n")
        want.append({"big": (0, BIG_VALUE)})
        keys = ["s%d" % ((r * 7 + i) % 200) for i in range(SMALL)]
        req.append(("get %s\r\n" % " ".join(keys)).encode())
        want.append({k: (1, k.encode() * 3) for k in keys})
    return b"".join(req), want


def wait_exit(proc, timeout):
    """Seconds from now until proc exits (seen on a pidfd), or None."""
    fd = os.pidfd_open(proc.pid)
    try:
        r, _, _ = select.select([fd], [], [], timeout)
        return bool(r)
    finally:
        os.close(fd)


@pytest.mark.parametrize("threads", THREADS, ids=lambda t: "t%d" % t)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_signal_finishes_in_flight_and_exits_0(server_factory, sig, threads):
    s = server_factory(threads=threads)
    c = Conn(s.connect())
    assert c.cmd(b"set big 0 0 %d\r\n" % BIG_LEN + BIG_VALUE + b"\r\n") == "STORED"
    for i in range(200):
        k = b"s%d" % i
        c.send(b"set %s 1 0 %d noreply\r\n%s\r\n" % (k, len(k) * 3, k * 3))
    assert c.cmd("version\r\n").startswith("VERSION ")
    idle = [s.connect() for _ in range(10)]

    # The batch is in flight: the daemon has started answering it (the
    # first line is here) and, as we do not read on, stalls with the rest
    # of the answers still to compose or send.
    # More than a connection may hold at once (-o conn_buffer_max, 3 MiB
    # here), so that at -t 1 its parsing is paused when the signal comes.
    # At -t 4 the gets of "big" may all go to another shard at once, so
    # the batch stays within the bound there (see the report on cross-shard
    # reads and the connection bound).
    req, want = batch_and_expected(60 if threads == 1 else 20)
    b = s.connect()
    b.sendall(req)
    bc = Conn(b)
    assert bc.line() == "VALUE big 0 %d" % BIG_LEN
    bc.buf = b"VALUE big 0 %d\r\n" % BIG_LEN + bc.buf

    pidfd = os.pidfd_open(s.proc.pid)
    t0 = time.monotonic()
    os.kill(s.proc.pid, sig)

    got, errors = [], []

    def reader():
        try:
            for _ in want:
                got.append(bc.read_values())
            b.settimeout(5)
            errors.append(None if b.recv(1) == b"" else "bytes after the batch")
        except Exception as e:  # reported below
            errors.append(repr(e))

    t = threading.Thread(target=reader)
    t.start()
    # It stops accepting: a new connection is refused. One that slipped in
    # before the listener closed (the main thread closes it once it runs)
    # may be answered; once one is refused, every later one is.
    refused = False
    deadline = t0 + 2.0
    while not refused and time.monotonic() < deadline:
        try:
            n = socket.create_connection(s.addr, timeout=2)
        except (ConnectionRefusedError, ConnectionResetError):
            # reset: it was in the listener's backlog when that closed
            refused = True
            break
        try:
            n.sendall(b"version\r\n")
            n.settimeout(2)
            n.recv(100)
        except (ConnectionResetError, BrokenPipeError):
            pass
        finally:
            n.close()
    if refused:
        for _ in range(3):
            with pytest.raises((ConnectionRefusedError, ConnectionResetError)):
                socket.create_connection(s.addr, timeout=2).close()
    r, _, _ = select.select([pidfd], [], [], 5.0)
    elapsed = time.monotonic() - t0
    os.close(pidfd)
    assert r, "ringcached still running 5 s after signal %d" % sig
    rc = s.proc.wait(5)
    t.join(10)
    out = s.output()
    s.close_files()
    assert rc == 0, out[-4000:]
    assert refused, "new connections were still accepted after the signal"
    assert errors == [None], (errors, len(got), len(want))
    assert got == want
    assert elapsed < 1.0, "exit took %.3f s after the signal" % elapsed
    for sock in idle:
        sock.settimeout(2)
        assert sock.recv(1) == b""
        sock.close()
    c.close()


def test_udp_zero_is_accepted(server_factory):
    s = server_factory("-U", "0", threads=1)
    c = Conn(s.connect())
    assert c.cmd("set u 0 0 1\r\nx\r\n") == "STORED"
    assert c.stats("settings")["udpport"] == "0"
    c.close()


@pytest.mark.parametrize("port", ["1", "11211"])
def test_udp_port_is_refused(port):
    p = subprocess.run([BIN, "-l", "127.0.0.1", "-p", str(free_port()), "-U", port],
                       capture_output=True, text=True, timeout=10)
    assert p.returncode == 64, (p.returncode, p.stderr)
    assert "UDP" in p.stderr and "-U" in p.stderr, p.stderr
    assert p.stdout == ""


def listening_addrs(pid):
    """(family, hex address, port) of every LISTEN socket the process holds."""
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            m = re.match(r"socket:\[(\d+)\]", os.readlink("/proc/%d/fd/%s" % (pid, fd)))
        except OSError:
            continue
        if m:
            inodes.add(m.group(1))
    out = []
    for fam in ("tcp", "tcp6"):
        with open("/proc/%d/net/%s" % (pid, fam)) as f:
            next(f)
            for line in f:
                cols = line.split()
                addr, port = cols[1].split(":")
                if cols[3] == "0A" and cols[9] in inodes:
                    out.append((fam, addr, int(port, 16)))
    return out


def test_default_bind_is_loopback():
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="rc-test-") as tmp:
        notify_path = os.path.join(tmp, "notify")
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        notify.bind(notify_path)
        env = dict(os.environ, NOTIFY_SOCKET=notify_path)
        proc = subprocess.Popen([BIN, "-p", str(port), "-t", "1"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            ready = False
            deadline = time.monotonic() + 20
            while not ready and time.monotonic() < deadline and proc.poll() is None:
                notify.settimeout(0.5)
                try:
                    ready = "READY=1" in notify.recv(4096).decode().split("\n")
                except socket.timeout:
                    pass
            assert ready, "ringcached did not become ready"
            assert listening_addrs(proc.pid) == [("tcp", "0100007F", port)]
            c = Conn(socket.create_connection(("127.0.0.1", port), timeout=10))
            assert c.cmd("version\r\n").startswith("VERSION ")
            c.close()
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
            try:
                rc = proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                rc = proc.wait()
            out = proc.stdout.read().decode(errors="replace")
            proc.stdout.close()
            notify.close()
        assert rc == 0, out
