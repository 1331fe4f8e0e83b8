"""Helpers of the measurement scripts (latcost.py, latagree.py): a ringcached
on a free 127.0.0.1 port, optionally under a wrapper such as valgrind, that
is ready when it sends READY=1 on a notify socket of ours (as under systemd:
no polling) and is stopped by its pid; `stats` listings; rc-loadgen runs.
"""
import json
import os
import signal
import socket
import subprocess
import tempfile

TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Daemon:
    def __init__(self, binary, *args, wrapper=(), ready_timeout=120):
        self.tmp = tempfile.TemporaryDirectory(prefix="rc-measure-")
        self.port = free_port()
        notify = os.path.join(self.tmp.name, "notify")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(notify)
        self.notify.settimeout(ready_timeout)
        self.log = open(os.path.join(self.tmp.name, "stderr"), "w+b")
        argv = [*wrapper, binary, "-l", "127.0.0.1", "-p", str(self.port),
                *[str(a) for a in args]]
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=dict(os.environ, NOTIFY_SOCKET=notify))
        try:
            while "READY=1" not in self.notify.recv(4096).decode().split("\n"):
                pass
        except socket.timeout:
            self.stop()
            raise RuntimeError("%s did not become ready:\n%s" % (argv, self.output()))

    @property
    def server(self):
        return "127.0.0.1:%d" % self.port

    def cpu_seconds(self):
        """utime + stime of the daemon (fields 14 and 15 of /proc/PID/stat,
        counted from the ')' that ends the command name)."""
        with open("/proc/%d/stat" % self.proc.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK

    def stats(self, group=""):
        """`stats [group]` as a dict of name -> value string."""
        with socket.create_connection(("127.0.0.1", self.port), 10) as s:
            s.sendall(("stats %s\r\n" % group).encode())
            buf = b""
            while not buf.endswith(b"END\r\n"):
                chunk = s.recv(65536)
                if not chunk:
                    raise RuntimeError("connection closed during stats")
                buf += chunk
        out = {}
        for line in buf.decode().split("\r\n"):
            parts = line.split(" ", 2)
            if len(parts) == 3 and parts[0] == "STAT":
                out[parts[1]] = parts[2]
        return out

    def command(self, line):
        """Sends one command; its one-line reply."""
        with socket.create_connection(("127.0.0.1", self.port), 10) as s:
            s.sendall(line.encode() + b"\r\n")
            buf = b""
            while not buf.endswith(b"\r\n"):
                chunk = s.recv(4096)
                if not chunk:
                    raise RuntimeError("connection closed after " + line)
                buf += chunk
        return buf.decode().rstrip("\r\n")

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self):
        """SIGTERM by pid; the exit status."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            rc = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            rc = self.proc.wait()
        self.notify.close()
        self.log.close()
        self.tmp.cleanup()
        return rc


def loadgen(lg, server, args):
    """Runs rc-loadgen to its end; its --json result."""
    argv = [lg, "-s", server, "-q", "--json", *[str(a) for a in args]]
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=1800)
    if p.returncode != 0:
        raise RuntimeError("%s failed (%d): %s%s" % (argv, p.returncode, p.stdout, p.stderr))
    return json.loads(p.stdout)

