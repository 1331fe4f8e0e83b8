#!/usr/bin/env python3
"""Server CPU per request of meta commands against their classic peers.

Starts ringcached (-t 1 by default) on a free loopback port, stores 1000 keys
of 100-byte values, then for each workload sends a fixed number of requests
pipelined in batches of 100 over one connection and reads every reply,
reading the server's utime + stime from /proc/PID/stat before and after.
Workloads run A B A B ... (ROUNDS rounds); the table gives the median CPU
ns per request of each and the ratio to its classic peer.

    python3 scripts/metabench.py [--requests N] [--rounds R] [--bin PATH]
"""
import argparse
import os
import signal
import socket
import statistics
import subprocess
import time

TICK = os.sysconf("SC_CLK_TCK")
VAL = b"v" * 100
KEYS = [b"key:%06d" % i for i in range(1000)]

WORKLOADS = {
    "get": lambda k: b"get %s\r\n" % k,
    "mg v": lambda k: b"mg %s v\r\n" % k,
    "mg v f": lambda k: b"mg %s v f\r\n" % k,
    "set": lambda k: b"set %s 0 0 100\r\n%s\r\n" % (k, VAL),
    "ms": lambda k: b"ms %s 100\r\n%s\r\n" % (k, VAL),
    "ms T0 F0": lambda k: b"ms %s 100 T0 F0\r\n%s\r\n" % (k, VAL),
}
PEER = {"mg v": "get", "mg v f": "get", "ms": "set", "ms T0 F0": "set"}


def cpu(pid):
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / TICK


def drive(sock, batch, reply_len, batches):
    for _ in range(batches):
        sock.sendall(batch)
        got = 0
        while got < reply_len:
            got += len(sock.recv(1 << 20))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=400000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(__file__), "..", "build", "ringcached"))
    a = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([a.bin, "-p", str(port), "-l", "127.0.0.1", "-t", str(a.threads), "-m", "256"])
    try:
        for _ in range(100):
            try:
                sock = socket.create_connection(("127.0.0.1", port))
                break
            except OSError:
                time.sleep(0.05)
        for k in KEYS:
            sock.sendall(b"set %s 0 0 100\r\n%s\r\n" % (k, VAL))
            sock.recv(100)
        res = {w: [] for w in WORKLOADS}
        for r in range(a.rounds):
            for name, mk in WORKLOADS.items():
                batches = []
                for b in range(10):
                    batches.append(b"".join(mk(KEYS[(b * 100 + i) % 1000]) for i in range(100)))
                # one reply length per batch, measured once
                lens = []
                for bt in batches:
                    sock.sendall(bt + b"mn\r\n")
                    buf = b""
                    while not buf.endswith(b"MN\r\n"):
                        buf += sock.recv(1 << 20)
                    lens.append(len(buf) - 4)
                n = a.requests // 1000
                c0 = cpu(proc.pid)
                for _ in range(n):
                    for bt, ln in zip(batches, lens):
                        drive(sock, bt, ln, 1)
                c1 = cpu(proc.pid)
                res[name].append((c1 - c0) / (n * 1000) * 1e9)
        print("%-10s %12s %8s" % ("workload", "ns CPU/req", "ratio"))
        for name in WORKLOADS:
            med = statistics.median(res[name])
            peer = PEER.get(name)
            ratio = med / statistics.median(res[peer]) if peer else 1.0
            print("%-10s %12.0f %8.3f   runs %s" % (name, med, ratio,
                  " ".join("%.0f" % x for x in res[name])))
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(10)


if __name__ == "__main__":
    main()
