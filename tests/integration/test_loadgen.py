"""Integration tests of the load generator, build/rc-loadgen (scripts/loadgen*.c).

Against a real server (the one in $RINGCACHED, else /usr/bin/memcached) a
bounded verify-mode run must finish with no errors and no wrong values and a
plausible hit ratio. Bad command lines must exit with status 2 and say why.
And verify mode must catch what it exists to catch: a tiny fake memcached,
this file run as a script (`python3 test_loadgen.py --fake-server MODE`),
serves the generator honestly except for the damage MODE names - a flipped
byte, another key's value, a torn or truncated value, wrong flags, an older
version - and every kind must be counted as wrong values. Framing damage and
silence must show up as protocol errors and timeouts, within bounded time.

Every process a test starts is stopped by its pid when the test ends.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOADGEN = ROOT / "build" / "rc-loadgen"
SERVER = os.environ.get("RINGCACHED") or "/usr/bin/memcached"
RUN_TIMEOUT = 60  # seconds any one generator run may take, at most


# ---- helpers ---------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc):
    """Stops a process we started, by its pid: TERM, then KILL."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)


def wait_listening(proc, port, what):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with status {proc.returncode} at start-up")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"{what} did not listen on 127.0.0.1:{port} within 10 s")


def run_loadgen(*args):
    """Runs the generator to its end; returns (status, stdout, stderr)."""
    p = subprocess.run([str(LOADGEN), *map(str, args)], capture_output=True,
                       text=True, timeout=RUN_TIMEOUT)
    return p.returncode, p.stdout, p.stderr


def run_json(*args):
    rc, out, err = run_loadgen(*args, "--json")
    try:
        return rc, json.loads(out), err
    except json.JSONDecodeError:
        pytest.fail(f"no JSON from rc-loadgen (status {rc}): stdout={out!r} stderr={err!r}")


@pytest.fixture(scope="module", autouse=True)
def loadgen_built():
    if not (LOADGEN.is_file() and os.access(LOADGEN, os.X_OK)):
        pytest.fail(f"{LOADGEN} is missing or not executable: build it with `make`")


@pytest.fixture(scope="module")
def server():
    """A real server on a free loopback port; yields 'host:port'."""
    if not os.access(SERVER, os.X_OK):
        pytest.fail(f"server {SERVER} (from $RINGCACHED or the default) is not executable")
    port = free_port()
    cmd = [SERVER, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-t", "2", "-m", "64"]
    if os.geteuid() == 0:
        cmd += ["-u", "nobody"]  # memcached refuses root without -u
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_listening(proc, port, SERVER)
        yield f"127.0.0.1:{port}"
    finally:
        stop(proc)
        proc.stderr.close()


@pytest.fixture
def fake_server(request):
    """The fake memcached in the mode the test names; yields 'host:port'."""
    proc = subprocess.Popen([sys.executable, __file__, "--fake-server", request.param],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        if not line.strip().isdigit():
            pytest.fail(f"fake server did not start (said {line!r})")
        yield f"127.0.0.1:{int(line)}"
    finally:
        stop(proc)
        proc.stdout.close()


# ---- against a real server -------------------------------------------------

@pytest.mark.parametrize("shape", [
    ["-c", 8, "-t", 2, "-P", 4, "-k", 2000, "-d", "zipf"],
    ["-c", 6, "-t", 2, "-P", 2, "-k", 3000, "-m", 5, "-v", "60-3000", "-r", "1:1"],
    ["-c", 4, "-t", 1, "-P", 8, "-k", 500, "-d", "zipf:1.3", "-r", "1:1"],
], ids=["zipf-pipelined", "multiget-sizes", "hot-keys"])
def test_verify_run_is_clean(server, shape):
    n = 30000
    rc, d, err = run_json("-s", server, "--verify", "--prefill", "-n", n, *shape)
    assert d["wrong_values"] == 0, err
    assert d["errors"] == 0, (d, err)
    assert rc == 0, err
    assert d["requests"] == n
    assert d["gets"] + d["sets"] == n
    assert d["prefill"]["sets"] == d["keys"]
    # Every key was stored first and 64 MiB holds them all.
    assert d["hit_ratio"] > 0.95, d
    lat = d["latency_us"]["all"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p999"] <= lat["max"]


def test_hit_ratio_without_prefill(server):
    # Fresh keys, sets only half the time: plenty of misses, and some hits.
    prefix = f"nopre{os.getpid()}:"
    rc, d, err = run_json("-s", server, "--verify", "-n", 5000, "-c", 4, "-k", 100000,
                          "--key-prefix", prefix, "-r", "1:1")
    assert (rc, d["errors"], d["wrong_values"]) == (0, 0, 0), err
    assert d["get_keys"] > 0 and d["hits"] + d["misses"] == d["get_keys"]
    assert d["hit_ratio"] < 0.2, d


def test_open_loop_holds_its_rate(server):
    rc, d, err = run_json("-s", server, "--rate", 2000, "-D", 1.5, "-c", 4)
    assert (rc, d["errors"]) == (0, 0), err
    assert d["mode"] == "open"
    assert 1600 < d["rps"] < 2400, d


def test_text_report(server):
    rc, out, err = run_loadgen("-s", server, "-n", 2000, "-c", 2)
    assert rc == 0, err
    for word in ("req/s", "hits", "errors", "p50", "p99.9", "max", "cpu"):
        assert word in out
    assert "\r" not in out  # no progress line when stdout is not a terminal


# ---- the command line ------------------------------------------------------

@pytest.mark.parametrize("args, says", [
    (["--conns", "0"], "--conns"),
    (["--conns", "lots"], "--conns"),
    (["--threads", "4", "--conns", "2"], "--threads"),
    (["--ratio", "0:0"], "--ratio"),
    (["--ratio", "9"], "--ratio"),
    (["--dist", "pareto"], "--dist"),
    (["--dist", "zipf:-1"], "--dist"),
    (["--value-size", "10-5"], "--value-size"),
    (["--verify", "--value-size", "10"], "--verify"),
    (["--pipeline", "0"], "--pipeline"),
    (["--multiget", "99999"], "--multiget"),
    (["--duration", "0"], "--duration"),
    (["--rate", "-5"], "--rate"),
    (["--requests", "0"], "--requests"),
    (["--server", "no-port-here"], "--server"),
    (["--key-prefix", "a b"], "--key-prefix"),
    (["--bogus"], "--bogus"),
    (["--pipeline"], "needs a value"),
    (["stray"], "stray"),
])
def test_bad_option_exits_2(args, says):
    rc, out, err = run_loadgen(*args)
    assert rc == 2, (args, out, err)
    assert says in err and "rc-loadgen" in err, err
    assert out == ""


def test_help_lists_options():
    rc, out, _ = run_loadgen("--help")
    assert rc == 0
    for opt in ("--server", "--conns", "--threads", "--pipeline", "--ratio", "--multiget",
                "--keys", "--dist", "--value-size", "--rate", "--duration", "--requests",
                "--prefill", "--verify", "--json"):
        assert opt in out


def test_unreachable_server_exits_1():
    rc, _, err = run_loadgen("-s", f"127.0.0.1:{free_port()}", "-n", 10)
    assert rc == 1
    assert "cannot connect" in err


# ---- verify mode catches damage ------------------------------------------

VERIFY_AGAINST_FAKE = ["--verify", "--prefill", "-t", 1, "-c", 2, "-P", 2, "-k", 40,
                       "-r", "1:1", "-n", 4000, "-D", 20]


@pytest.mark.parametrize("fake_server", ["honest"], indirect=True)
def test_fake_server_is_honest_when_told(fake_server):
    rc, d, err = run_json("-s", fake_server, *VERIFY_AGAINST_FAKE)
    assert (rc, d["errors"], d["wrong_values"]) == (0, 0, 0), err
    assert d["hit_ratio"] == 1.0


@pytest.mark.parametrize("fake_server", ["flip", "other-key", "torn", "truncate", "pad",
                                         "flags", "stale"], indirect=True)
def test_verify_detects_wrong_values(fake_server):
    rc, d, err = run_json("-s", fake_server, *VERIFY_AGAINST_FAKE)
    assert d["wrong_values"] > 0, (d, err)
    assert d["errors"] == 0, err  # the damage is in values, not in framing
    assert rc == 1
    assert "wrong value for key" in err


@pytest.mark.parametrize("fake_server", ["bad-length", "unasked-key", "garbage"],
                         indirect=True)
def test_protocol_damage_is_counted(fake_server):
    # A connection whose framing broke may wait for bytes that never come:
    # the run still ends at its duration (the last -D wins).
    rc, d, err = run_json("-s", fake_server, *VERIFY_AGAINST_FAKE, "-D", 3, "--timeout", 0.5)
    assert d["protocol_errors"] > 0, (d, err)
    assert rc == 1


@pytest.mark.parametrize("fake_server", ["silent"], indirect=True)
def test_silent_server_ends_in_bounded_time(fake_server):
    t0 = time.monotonic()
    rc, d, err = run_json("-s", fake_server, "-c", 3, "-P", 2, "-D", 1, "--timeout", 0.5)
    assert time.monotonic() - t0 < 10
    assert d["timeouts"] == 6 and d["requests"] == 0, d
    assert rc == 1


@pytest.mark.parametrize("fake_server", ["stall"], indirect=True)
def test_open_loop_counts_a_stall(fake_server):
    # The fake server stalls for 1 s after its 300th request. Open loop must
    # charge that second to every request that fell due during it, measured
    # from its intended send time; a closed-loop count would charge it to the
    # two requests in flight only and leave p90 at a fraction of a millisecond.
    rc, d, err = run_json("-s", fake_server, "--rate", 1000, "-D", 2, "-c", 2, "-k", 100,
                          "-r", "1:1", "--timeout", 5)
    assert (rc, d["errors"], d["unsent"]) == (0, 0, 0), (d, err)
    assert d["requests"] >= 1900, d
    assert d["latency_us"]["all"]["p90"] > 300_000, d
    assert d["latency_us"]["all"]["max"] > 800_000, d


@pytest.mark.parametrize("fake_server", ["silent"], indirect=True)
def test_open_loop_counts_requests_never_sent(fake_server):
    rc, d, err = run_json("-s", fake_server, "--rate", 200, "-D", 1, "-c", 2,
                          "--timeout", 0.3)
    assert d["timeouts"] == 2 and d["requests"] == 0, d
    assert 150 < d["unsent"] <= 198, d
    assert d["errors"] == d["timeouts"] + d["unsent"], d
    assert rc == 1


# ---- the fake server (runs as its own process) -----------------------------

def fake_server_main(mode):
    """A threaded memcached subset (set, get) that damages some replies.

    Keys whose number is a multiple of 3 are damaged as `mode` says; the
    others are served honestly. 'silent' never answers; 'stall' answers
    honestly but pauses every connection for 1 s after the 300th request. Every stored version is kept so that the
    'stale' and 'torn' modes can serve older data."""
    import socketserver
    import threading

    store = {}  # key -> [(flags, data), ...] oldest first
    lock = threading.Lock()
    stall = {"seen": 0, "until": 0.0}  # 'stall': 1 s pause after 300 requests

    def maybe_stall():
        with lock:
            stall["seen"] += 1
            if stall["seen"] == 300:
                stall["until"] = time.monotonic() + 1.0
            wait = stall["until"] - time.monotonic()
        if wait > 0:
            time.sleep(wait)

    def damaged(key):
        try:
            return int(key.rsplit(b":", 1)[1]) % 3 == 0
        except (IndexError, ValueError):
            return False

    def reply(key):
        with lock:
            hist = list(store.get(key, ()))
            others = [k for k in store if k != key]
        if not hist:
            return b""
        flags, data = hist[-1]
        name = key
        if damaged(key):
            if mode == "flip":
                i = len(data) // 2
                data = data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:]
            elif mode == "other-key" and others:
                flags, data = store[others[0]][-1]
            elif mode == "torn" and len(hist) > 1:
                data = data[:len(data) // 2] + hist[-2][1][len(data) // 2:]
            elif mode == "truncate":
                data = data[:-1]
            elif mode == "pad":
                data = data + b"x"
            elif mode == "flags":
                flags ^= 1
            elif mode == "stale" and len(hist) > 1:
                flags, data = hist[0]
            elif mode == "bad-length":
                return b"VALUE %s %d %d\r\n%s\r\n" % (key, flags, len(data) + 5, data)
            elif mode == "unasked-key":
                name = b"nosuchkey"
            elif mode == "garbage":
                return b"HELLO THERE\r\n"
        return b"VALUE %s %d %d\r\n%s\r\n" % (name, flags, len(data), data)

    class Handler(socketserver.StreamRequestHandler):
        def handle(self):
            while True:
                line = self.rfile.readline()
                if not line:
                    return
                if mode == "silent":
                    continue
                if mode == "stall":
                    maybe_stall()
                parts = line.split()
                if len(parts) == 5 and parts[0] == b"set":
                    n = int(parts[4])
                    data = self.rfile.read(n + 2)[:n]
                    with lock:
                        store.setdefault(parts[1], []).append((int(parts[2]), data))
                    self.wfile.write(b"STORED\r\n")
                elif len(parts) >= 2 and parts[0] == b"get":
                    self.wfile.write(b"".join(reply(k) for k in parts[1:]) + b"END\r\n")
                else:
                    self.wfile.write(b"ERROR\r\n")

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True

    with Server(("127.0.0.1", 0), Handler) as srv:
        print(srv.server_address[1], flush=True)
        srv.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--fake-server":
        fake_server_main(sys.argv[2])
    else:
        sys.exit("usage: test_loadgen.py --fake-server MODE")
