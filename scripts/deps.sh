#!/usr/bin/env bash
# Installs the Debian packages ringcached needs to build and test, but only the
# ones that are missing. Safe to run repeatedly; called by `make run`/`make test`.
# On a machine without apt-get it prints what to install and fails.
set -euo pipefail

# package -> a file whose presence shows it is installed
declare -A probe=(
  [build-essential]=/usr/bin/gcc
  [pkg-config]=/usr/bin/pkg-config
  [liburing-dev]=/usr/include/liburing.h
  [libmimalloc-dev]=/usr/include/mimalloc.h
  [libcunit1-dev]=/usr/include/CUnit/Basic.h
  [libxxhash-dev]=/usr/include/xxhash.h
  [libsystemd-dev]=/usr/include/systemd/sd-daemon.h
  [memcached]=/usr/bin/memcached
  [libmemcached-tools]=/usr/bin/memccapable
  [python3-pymemcache]=/usr/lib/python3/dist-packages/pymemcache/__init__.py
  [python3-pytest]=/usr/lib/python3/dist-packages/pytest/__init__.py
  [clang]=/usr/bin/clang
  [libclang-rt-14-dev]=/usr/lib/llvm-14/lib/clang/14.0.6/lib/linux/libclang_rt.fuzzer-x86_64.a
  [systemd]=/usr/bin/systemd-analyze
  # real clients and a proxy for tests/integration/test_real_clients.py and
  # test_twemproxy.py (globs: the paths carry PHP's API and Perl's versions)
  [php-cli]=/usr/bin/php
  [php-memcached]='/usr/lib/php/*/memcached.so'
  [php-memcache]='/usr/lib/php/*/memcache.so'
  [libcache-memcached-fast-perl]='/usr/lib/*/perl5/*/Cache/Memcached/Fast.pm'
  [nutcracker]=/usr/sbin/nutcracker
  # the Prometheus endpoint (-o metrics_port) and its check in
  # tests/integration/test_observability.py (promtool)
  [libmicrohttpd-dev]=/usr/include/microhttpd.h
  [prometheus]=/usr/bin/promtool
  # make bench's instruction pass and scripts/latcost.py (callgrind)
  [valgrind]=/usr/bin/callgrind_control
)

# A probe may be a glob; the package is there when it matches an existing file.
present() { compgen -G "$1" >/dev/null; }

missing=()
for pkg in "${!probe[@]}"; do
  present "${probe[$pkg]}" || missing+=("$pkg")
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "deps: this is not a Debian-like system; install the equivalents of: ${missing[*]}" >&2
  exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "deps: run as root, or install: ${missing[*]}" >&2; exit 1
  fi
fi

echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq </dev/null
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null >/dev/null
# Debian starts memcached as a service when it is installed; tests start their own.
if [[ " ${missing[*]} " == *" memcached "* ]] && command -v systemctl >/dev/null 2>&1; then
  $SUDO systemctl disable --now memcached >/dev/null 2>&1 || true
fi
# The same for Prometheus: the tests only need its promtool.
if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null 2>&1; then
  $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
# The same for twemproxy: the tests run their own nutcracker on free ports.
if [[ " ${missing[*]} " == *" nutcracker "* ]] && command -v systemctl >/dev/null 2>&1; then
  $SUDO systemctl disable --now nutcracker >/dev/null 2>&1 || true
fi
