"""Integrity under eviction pressure: the load generator's verify mode.

build/rc-loadgen --verify stores values that carry their key, a version and
a checksum, and checks every hit. Against ringcached -t 4 -m 16 with 100
connections and values of 64 B..100 KB (verify mode needs 53 B at least) the working set is far larger than
memory, so items are evicted all the time while cross-shard gets and sets
run: any lifetime bug (a value read from a freed or reused item, a reply
copied from the wrong batch offset, a torn value) shows up as a wrong value
or a framing (protocol) error. The run lasts $RINGCACHE_SOAK_SECONDS
(default 10; `make soak` runs 60).
"""
import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import Conn

ROOT = Path(__file__).resolve().parents[2]
LOADGEN = ROOT / "build" / "rc-loadgen"
SECONDS = float(os.environ.get("RINGCACHE_SOAK_SECONDS", "10"))


def test_verify_under_eviction(server_factory):
    if not os.access(LOADGEN, os.X_OK):
        pytest.fail("%s is missing: build it with `make`" % LOADGEN)
    s = server_factory("-m", "16", "-c", "1024", threads=4)
    argv = [str(LOADGEN), "-s", "127.0.0.1:%d" % s.port, "--verify", "--json",
            "-q", "-c", "100", "-t", "4", "-P", "2", "-r", "1:1",
            "-v", "64-102400", "-k", "20000", "-D", str(SECONDS),
            "--seed", "4242"]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=SECONDS + 60)
    try:
        d = json.loads(p.stdout)
    except json.JSONDecodeError:
        pytest.fail("no JSON from rc-loadgen (status %d): %r %r"
                    % (p.returncode, p.stdout[-2000:], p.stderr[-2000:]))
    assert s.alive(), s.output()[-4000:]
    summary = {k: d[k] for k in ("requests", "gets", "sets", "hits", "hit_ratio",
                                 "errors", "protocol_errors", "server_errors",
                                 "conn_errors", "timeouts", "wrong_values")}
    assert d["wrong_values"] == 0, summary
    assert d["protocol_errors"] == 0, summary
    assert d["conn_errors"] == 0 and d["timeouts"] == 0, summary
    assert d["server_errors"] == 0, summary
    assert p.returncode == 0, (summary, p.stderr[-2000:])
    assert d["requests"] > 0 and d["gets"] > 0 and d["sets"] > 0, summary
    assert d["hits"] > 0, summary  # the checker saw values to check
    c = Conn(s.connect())
    st = c.stats()
    c.close()
    assert int(st["evictions"]) > 0, st
    assert int(st["bytes"]) <= 16 << 20, st
