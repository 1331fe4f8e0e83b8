"""Operations: the systemd unit, sd_notify, the watchdog, the command line,
the man page and `make install`.

The unit file must pass `systemd-analyze verify` and score an exposure of at
most 1.5 in `systemd-analyze security --offline=true`. The daemon is started
the way systemd starts it - NOTIFY_SOCKET pointing at a datagram socket this
test owns, WATCHDOG_USEC/WATCHDOG_PID for the watchdog - and every datagram is
checked: READY=1 only once a connect succeeds, a STATUS= line, STOPPING=1 on
SIGTERM, WATCHDOG=1 while every worker turns and none once one stalls (the
test build build/hooks/ringcached, `make hooks`, has `-o watchdog_stall=N`).
Every bad command line must print one line and exit 64 without listening.

Waiting is always on a socket or a process with a timeout, never a bare
sleep; every process started here is stopped by its pid.
"""
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import BIN, START_TIMEOUT, STOP_TIMEOUT, Conn, free_port

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "ringcached.service"
ENV_FILE = ROOT / "systemd" / "ringcached.conf"
MAN = ROOT / "daemon" / "ringcached.1"
README = ROOT / "README.md"
HOOKS_BIN = os.environ.get("RINGCACHED_HOOKS") or str(ROOT / "build" / "hooks" / "ringcached")
ANALYZE = shutil.which("systemd-analyze")
MAX_EXPOSURE = 1.5
EX_USAGE = 64
EX_OSERR = 71

needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze not installed (scripts/deps.sh installs `systemd`)")


# ---- helpers ---------------------------------------------------------------

class Notify:
    """A datagram socket standing in for systemd's notify socket."""

    def __init__(self, tmpdir, abstract=False):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = "rc-notify-%d-%d" % (os.getpid(), id(self))
            self.sock.bind("\0" + name)
            self.env = "@" + name
        else:
            self.env = os.path.join(tmpdir, "notify")
            self.sock.bind(self.env)
        self.log = []  # (monotonic time, datagram text)

    def recv(self, timeout):
        """One datagram, or None when `timeout` seconds pass first."""
        self.sock.settimeout(max(0.001, timeout))
        try:
            msg = self.sock.recv(4096).decode()
        except socket.timeout:
            return None
        self.log.append((time.monotonic(), msg))
        return msg

    def wait_for(self, field, timeout, proc=None):
        """Reads until a datagram has the line `field`; returns its arrival
        time, or None on timeout or when `proc` exits first."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or (proc is not None and proc.poll() is not None):
                return None
            msg = self.recv(min(left, 0.2))
            if msg is not None and field in msg.split("\n"):
                return self.log[-1][0]

    def drain_until(self, t_end):
        """Reads every datagram that arrives before monotonic time t_end."""
        while True:
            left = t_end - time.monotonic()
            if left <= 0:
                return
            self.recv(left)

    def lines(self):
        return [line for _, msg in self.log for line in msg.split("\n")]

    def close(self):
        self.sock.close()


class Daemon:
    """ringcached with exactly the argv given (no flags added), its own
    notify socket and environment; stopped by pid."""

    def __init__(self, argv, env_extra=None, abstract=False, wait_ready=True):
        self.tmp = tempfile.TemporaryDirectory(prefix="rc-ops-")
        self.notify = Notify(self.tmp.name, abstract)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("NOTIFY_", "WATCHDOG_", "LISTEN_"))}
        env["NOTIFY_SOCKET"] = self.notify.env
        env.update(env_extra or {})
        self.argv = [str(a) for a in argv]
        self.errpath = os.path.join(self.tmp.name, "stderr")
        self.err = open(self.errpath, "w+b")
        self.proc = subprocess.Popen(self.argv, env=env, stdout=self.err,
                                     stderr=subprocess.STDOUT)
        self.t_ready = None
        if wait_ready:
            self.t_ready = self.notify.wait_for("READY=1", START_TIMEOUT, self.proc)
            if self.t_ready is None:
                out = self.output()
                self.kill()
                pytest.fail("no READY=1 from %s:\n%s" % (self.argv, out))

    @property
    def pid(self):
        return self.proc.pid

    def output(self):
        self.err.flush()
        self.err.seek(0)
        return self.err.read().decode(errors="replace")

    def terminate(self, timeout=STOP_TIMEOUT):
        """SIGTERM by pid; returns the exit status, or "timeout" after a
        SIGKILL."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return "timeout"

    def kill(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def close(self):
        self.kill()
        self.notify.close()
        self.err.close()
        self.tmp.cleanup()


@pytest.fixture
def daemons():
    """Starts Daemons on demand and makes sure none outlives the test."""
    started = []

    def make(*a, **kw):
        d = Daemon(*a, **kw)
        started.append(d)
        return d

    yield make
    for d in started:
        d.close()


def tcp_argv(port, *extra, binary=None):
    return [binary or BIN, "-l", "127.0.0.1", "-p", port, *extra]


def connect(port, timeout=5.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.settimeout(timeout)
    return s


def refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2.0).close()
    except (ConnectionRefusedError, socket.timeout):
        return True
    return False


def run(argv, timeout=20, **kw):
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                          timeout=timeout, **kw)


def help_flags():
    """(short, long) of every flag `ringcached -h` lists."""
    out = run([BIN, "-h"]).stdout
    return re.findall(r"^\s+-(\w), --([\w-]+)", out, re.M)


def unit_for(tmpdir, exec_path):
    """A copy of the unit whose ExecStart runs `exec_path`, in tmpdir."""
    text = UNIT.read_text()
    assert re.search(r"^ExecStart=/usr/bin/ringcached ", text, re.M), \
        "the unit's ExecStart must run /usr/bin/ringcached (make install rewrites it)"
    text = re.sub(r"^ExecStart=/usr/bin/ringcached",
                  "ExecStart=" + str(exec_path), text, flags=re.M)
    path = Path(tmpdir) / "ringcached.service"
    path.write_text(text)
    return path


def unit_settings(key):
    """Every value the unit assigns to `key`, in order."""
    return re.findall(r"^%s=(.*)$" % re.escape(key), UNIT.read_text(), re.M)


# ---- the unit file ---------------------------------------------------------

@needs_analyze
def test_unit_verifies_clean(tmp_path):
    # The built daemon stands in for /usr/bin/ringcached, and MANPATH holds
    # the man page, so that verify checks ExecStart and Documentation= too.
    unit = unit_for(tmp_path, Path(BIN).resolve())
    (tmp_path / "man" / "man1").mkdir(parents=True)
    shutil.copy(MAN, tmp_path / "man" / "man1" / "ringcached.1")
    env = dict(os.environ, MANPATH=str(tmp_path / "man"), SYSTEMD_LOG_LEVEL="notice")
    r = run([ANALYZE, "verify", unit], env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (r.stdout + r.stderr).strip() == "", r.stdout + r.stderr


@needs_analyze
def test_unit_verify_sees_a_missing_binary(tmp_path):
    # The check above can fail: a unit whose binary is missing does not verify.
    unit = unit_for(tmp_path, tmp_path / "no-such-ringcached")
    r = run([ANALYZE, "verify", "--man=no", unit])
    assert r.returncode != 0 and "no-such-ringcached" in r.stdout + r.stderr


@needs_analyze
def test_unit_exposure_at_most_1_5():
    r = run([ANALYZE, "security", "--offline=true", "--no-pager", UNIT])
    out = r.stdout + r.stderr
    m = re.search(r"Overall exposure level for ringcached\.service: (\d+(?:\.\d+)?)", out)
    assert m, out
    assert float(m.group(1)) <= MAX_EXPOSURE, out


def test_unit_settings():
    assert unit_settings("Type") == ["notify"]
    assert unit_settings("NotifyAccess") == ["main"]
    assert unit_settings("DynamicUser") == ["yes"]
    assert unit_settings("EnvironmentFile") == ["-/etc/default/ringcached"]
    assert unit_settings("ExecStart") == ["/usr/bin/ringcached $OPTIONS"]
    assert unit_settings("CapabilityBoundingSet") == [""]
    assert unit_settings("RuntimeDirectory") == ["ringcached"]
    assert len(unit_settings("WatchdogSec")) == 1
    families = set(unit_settings("RestrictAddressFamilies")[0].split())
    assert families == {"AF_INET", "AF_INET6", "AF_UNIX"}


@needs_analyze
def test_unit_syscall_filter_allows_io_uring():
    # Expand the unit's allow list and deny lists with this systemd's own
    # tables: every io_uring call must be allowed and none denied.
    def expand(items):
        out = set()
        for item in items:
            if item.startswith("@"):
                r = run([ANALYZE, "syscall-filter", "--no-pager", item])
                assert r.returncode == 0, r.stderr
                lines = [ln.strip() for ln in r.stdout.splitlines()[1:]]
                out |= expand([ln for ln in lines if ln and not ln.startswith("#")])
            else:
                out.add(item)
        return out

    allow, deny = set(), set()
    for value in unit_settings("SystemCallFilter"):
        if value.startswith("~"):
            deny |= expand(value[1:].split())
        else:
            allow |= expand(value.split())
    for call in ("io_uring_setup", "io_uring_enter", "io_uring_register"):
        assert call in allow and call not in deny, call


def test_env_file_options_start_the_daemon(daemons):
    # The shipped OPTIONS are valid flags: run them with the port swapped.
    m = re.search(r'^OPTIONS="(.*)"$', ENV_FILE.read_text(), re.M)
    assert m, "systemd/ringcached.conf has no OPTIONS=\"...\" line"
    opts = shlex.split(m.group(1))
    assert "-p" in opts
    port = free_port()
    opts[opts.index("-p") + 1] = str(port)
    d = daemons([BIN, "-t", "1", *opts])
    connect(port).close()
    assert d.terminate() == 0, d.output()


# ---- sd_notify ---------------------------------------------------------------

@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_notify_ready_status_stopping(daemons, abstract):
    port = free_port()
    d = daemons(tcp_argv(port, "-t", "2"), abstract=abstract, wait_ready=False)
    assert d.notify.wait_for("READY=1", START_TIMEOUT, d.proc) is not None, d.output()
    # READY=1 means every worker accepts connections: no retry here, and
    # enough connections that SO_REUSEPORT spreads them over both workers.
    conns = [Conn(connect(port)) for _ in range(8)]
    for c in conns:
        assert c.cmd("version\r\n").startswith("VERSION ")
        c.close()
    status = [ln for ln in d.notify.lines() if ln.startswith("STATUS=")]
    assert status and all(len(s) > len("STATUS=") for s in status), d.notify.log
    assert "STOPPING=1" not in d.notify.lines()

    os.kill(d.pid, signal.SIGTERM)
    assert d.notify.wait_for("STOPPING=1", STOP_TIMEOUT) is not None, d.notify.log
    assert d.proc.wait(STOP_TIMEOUT) == 0, d.output()
    assert refused(port)


def test_no_watchdog_pings_for_another_pid(daemons):
    # WATCHDOG_PID names another process: the watchdog is not ours to feed.
    port = free_port()
    d = daemons(tcp_argv(port, "-t", "1"),
                env_extra={"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"})
    d.notify.drain_until(time.monotonic() + 1.0)
    assert "WATCHDOG=1" not in d.notify.lines(), d.notify.log
    assert d.terminate() == 0, d.output()


def test_watchdog_stops_when_a_worker_stalls(daemons):
    if not os.access(HOOKS_BIN, os.X_OK):
        pytest.skip("%s is missing: build it with `make hooks`" % HOOKS_BIN)
    port = free_port()
    # exec keeps the shell's pid, so WATCHDOG_PID=$$ is the daemon's pid.
    argv = ["sh", "-c", 'WATCHDOG_PID=$$ exec "$0" "$@"',
            *tcp_argv(port, "-t", "2", "-o", "watchdog_stall=2", binary=HOOKS_BIN)]
    d = daemons(argv, env_extra={"WATCHDOG_USEC": "200000"}, wait_ready=False)
    t0 = time.monotonic()
    t_ready = d.notify.wait_for("READY=1", START_TIMEOUT, d.proc)
    assert t_ready is not None, d.output()

    # Worker 0 stalls once the daemon's clock (whole seconds) is 2 s past
    # its start: between 1 and 2 s after it started, so after t0 + 1 and
    # before t_ready + 2.05. Pings come every 100 ms until then, and none
    # from t_ready + 2.5 on; watch 1.2 s of that silence.
    d.notify.drain_until(t_ready + 3.7)
    assert d.proc.poll() is None, d.output()
    pings = [t - t0 for t, msg in d.notify.log if "WATCHDOG=1" in msg.split("\n")]
    early = [t for t in pings if t < 1.0]
    late = [t for t in pings if t >= t_ready - t0 + 2.5]
    assert len(early) >= 3, "too few pings before the stall; pings at %s" % pings
    assert not late, "pings after the stall began; pings at %s" % pings

    # The stalled worker still sees the stop and the daemon exits cleanly.
    os.kill(d.pid, signal.SIGTERM)
    assert d.notify.wait_for("STOPPING=1", 5.0) is not None, d.notify.log
    try:
        assert d.proc.wait(5.0) == 0, d.output()
    except subprocess.TimeoutExpired:
        pytest.fail("a stalled worker kept the daemon from stopping")


# ---- the command line ------------------------------------------------------

def test_help_lists_every_flag():
    r = run([BIN, "-h"])
    assert r.returncode == 0 and r.stderr == ""
    flags = help_flags()
    expected = {("p", "port"), ("s", "unix-socket"), ("a", "unix-mask"), ("l", "listen"),
                ("U", "udp-port"), ("c", "conn-limit"), ("t", "threads"),
                ("m", "memory-limit"), ("M", "disable-evictions"),
                ("I", "max-item-size"), ("v", "verbose"), ("P", "pidfile"),
                ("u", "user"), ("C", "disable-cas"), ("B", "protocol"),
                ("R", "max-reqs-per-event"), ("b", "listen-backlog"),
                ("o", "extended"), ("A", "enable-shutdown"), ("D", "prefix-delimiter"),
                ("h", "help"), ("V", "version")}
    assert set(flags) == expected, r.stdout
    for sub in ("line_max=", "keys_max=", "conn_buffer_max=", "conn_mem_max=", "hashpower="):
        assert sub in r.stdout
    assert run([BIN, "--help"]).stdout == r.stdout


def test_version():
    r = run([BIN, "-V"])
    assert r.returncode == 0 and r.stderr == ""
    assert re.fullmatch(r"ringcached \d+\.\d+\.\d+\S*\n", r.stdout), r.stdout
    assert run([BIN, "--version"]).stdout == r.stdout


# Each bad command line, and what its one line of complaint must contain.
BAD_FLAGS = [
    (["-Z"], ["-Z", "unknown flag"]),
    (["-p", "abc"], ["-p abc"]),
    (["-p", "70000"], ["-p 70000"]),
    (["-U", "1"], ["-U 1", "UDP is not supported"]),
    (["-B", "binary"], ["-B binary"]),
    (["-o", "nosuch=1"], ["-o nosuch"]),
    (["-o", "line_max=10"], ["line_max"]),
    (["-o", "conn_mem_max=512k"], ["conn_mem_max"]),
    (["-t", "0"], ["-t 0"]),
    (["-I", "1"], ["-I 1"]),
    (["-m", "0"], ["-m 0"]),
    (["-a", "999"], ["-a 999"]),
    (["-m", "1", "-t", "1", "-I", "2m"], ["-I"]),
    (["--no-such-flag"], ["--no-such-flag"]),
    (["--port"], ["--port", "needs a value"]),
    (["extra"], ["extra", "unexpected argument"]),
    (["-D", "ab"], ["-D ab", "one character"]),
    (["-D", ""], ["-D", "one character"]),
]


@pytest.mark.parametrize("bad,says", BAD_FLAGS, ids=[" ".join(b) for b, _ in BAD_FLAGS])
def test_bad_flag_one_line_exit_64(daemons, bad, says):
    port = free_port()
    d = daemons(tcp_argv(port, "-t", "1", *bad), wait_ready=False)
    try:
        rc = d.proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail("%s did not exit" % d.argv)
    out = d.output()
    assert rc == EX_USAGE, out
    assert out.count("\n") == 1 and out.endswith("\n") and out.startswith("ringcached: "), out
    for words in says:
        assert words in out, out
    d.notify.drain_until(time.monotonic() + 0.05)
    assert d.notify.log == []
    assert refused(port)


def test_port_in_use_exits_71(daemons):
    # Something else holds the port (without SO_REUSEPORT): cannot start.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        d = daemons(tcp_argv(port, "-t", "1"), wait_ready=False)
        assert d.proc.wait(STOP_TIMEOUT) == EX_OSERR, d.output()
        assert "READY=1" not in d.notify.lines()


def test_unix_socket_in_missing_dir_exits_71(daemons, tmp_path):
    d = daemons([BIN, "-t", "1", "-s", tmp_path / "no-such-dir" / "rc.sock"],
                wait_ready=False)
    assert d.proc.wait(STOP_TIMEOUT) == EX_OSERR, d.output()


def test_long_flags(daemons):
    port = free_port()
    d = daemons([BIN, "--listen=127.0.0.1", "--port=%d" % port, "--threads=2",
                 "--memory-limit=16", "--conn-limit", "100"])
    c = Conn(connect(port))
    settings = c.stats("settings")
    c.close()
    assert settings["maxbytes"] == str(16 << 20)
    assert settings["num_threads"] == "2"
    assert settings["tcpport"] == str(port)
    assert settings["maxconns"] == "100"
    assert d.terminate() == 0, d.output()


def test_pidfile_written_and_removed(daemons, tmp_path):
    port = free_port()
    pidfile = tmp_path / "ringcached.pid"
    d = daemons(tcp_argv(port, "-t", "1", "-P", pidfile))
    assert pidfile.read_text().strip() == str(d.pid)
    assert d.terminate() == 0, d.output()
    assert not pidfile.exists()


def test_unix_socket_service_style(daemons, tmp_path):
    # What the unit's RuntimeDirectory is for: -s in a directory of its own.
    path = tmp_path / "ringcached.sock"
    d = daemons([BIN, "-t", "1", "-s", path, "-a", "0700"])
    assert (path.stat().st_mode & 0o777) == 0o700
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5.0)
    s.connect(str(path))
    c = Conn(s)
    assert c.cmd("version\r\n").startswith("VERSION ")
    c.close()
    assert d.terminate() == 0, d.output()
    assert not path.exists()


def test_very_verbose_starts(daemons):
    port = free_port()
    d = daemons(tcp_argv(port, "-t", "2", "-vv"))
    c = Conn(connect(port))
    assert c.cmd("no_such_command\r\n") == "ERROR"
    assert c.cmd("version\r\n").startswith("VERSION ")
    c.close()
    assert d.terminate() == 0, d.output()
    assert d.output() != ""


# ---- documentation ---------------------------------------------------------

def test_man_page_documents_every_flag():
    text = MAN.read_text()
    for short, lng in help_flags():
        assert re.search(r"\\-%s\b" % short, text), "-%s missing from %s" % (short, MAN)
        assert ("\\-\\-" + lng.replace("-", "\\-")) in text, "--%s missing" % lng
    for sub in ("line_max=", "keys_max=", "conn_buffer_max=", "conn_mem_max=", "hashpower="):
        assert sub in text
    for words in ("SIGTERM", "EXIT STATUS", "64", "71", "NOTIFY_SOCKET", "WATCHDOG=1"):
        assert words in text


def test_man_page_renders_without_warnings():
    groff = shutil.which("groff")
    if groff is None:
        pytest.skip("groff not installed")
    r = run([groff, "-man", "-Tascii", "-ww", "-z", MAN])
    assert r.returncode == 0 and r.stderr == "", r.stderr
    r = run([groff, "-man", "-Tascii", MAN])
    text = re.sub(r".\x08", "", r.stdout)  # overstrike bold and underline
    assert "--memory-limit=NUM" in text and "EXIT STATUS" in text, text


def test_readme_flag_table_has_every_flag():
    text = README.read_text()
    table = [ln for ln in text.splitlines() if ln.startswith("| `")]
    for short, lng in help_flags():
        assert any("`-%s" % short in ln for ln in table), "-%s not in README's table" % short
        assert any("--%s" % lng in ln for ln in table), "--%s not in README's table" % lng


# ---- make install ----------------------------------------------------------

def test_make_install_and_uninstall(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("make not installed")
    dest = tmp_path / "root"
    # A make of its own: nothing inherited from a `make test` around us.
    menv = {k: v for k, v in os.environ.items()
            if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}

    def make(prefix, target):
        return run(["make", "--no-print-directory", "-C", ROOT, "DESTDIR=%s" % dest,
                    "PREFIX=%s" % prefix, target], timeout=300, env=menv)

    r = make("/usr", "install")
    assert r.returncode == 0, r.stdout + r.stderr
    binary = dest / "usr/bin/ringcached"
    unit = dest / "lib/systemd/system/ringcached.service"
    env = dest / "etc/default/ringcached"
    man = dest / "usr/share/man/man1/ringcached.1"
    for f in (binary, unit, env, man):
        assert f.is_file(), "%s not installed" % f
    assert os.access(binary, os.X_OK)
    assert (unit.stat().st_mode & 0o777) == 0o644
    assert re.findall(r"^ExecStart=(.*)$", unit.read_text(), re.M) == \
        ["/usr/bin/ringcached $OPTIONS"]
    assert env.read_text() == ENV_FILE.read_text()
    assert man.read_text() == MAN.read_text()
    assert run([binary, "-V"]).stdout == run([BIN, "-V"]).stdout

    # Another PREFIX rewrites ExecStart; an edited options file is kept.
    env.write_text('OPTIONS="-p 11999"\n')
    r = make("/opt/rc", "install")
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.findall(r"^ExecStart=(.*)$", unit.read_text(), re.M) == \
        ["/opt/rc/bin/ringcached $OPTIONS"]
    assert (dest / "opt/rc/bin/ringcached").is_file()
    assert env.read_text() == 'OPTIONS="-p 11999"\n'
    r = make("/opt/rc", "uninstall")
    assert r.returncode == 0, r.stdout + r.stderr
    assert not (dest / "opt/rc/bin/ringcached").exists()

    r = make("/usr", "uninstall")
    assert r.returncode == 0, r.stdout + r.stderr
    left = [p for p in dest.rglob("*") if p.is_file()]
    assert left == [], left
