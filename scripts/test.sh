#!/usr/bin/env bash
# Runs every test stage of ringcache and ends with one line
# "N passed, N failed" counting stages; exits non-zero if any stage failed.
# Called by `make test` after the builds (normal, asan, tsan, hooks, fuzz);
# each stage prints its runner's own summary (CUnit's run summary, pytest's
# closing line, libFuzzer's run count).
#
#   normal build:  unit tests, every integration test at -t 1 and -t 4
#   ASan+UBSan:    unit tests, every integration test (LeakSanitizer on)
#   TSan:          unit tests, the integration tests at -t 4
#   libFuzzer:     each target for FUZZ_TIME seconds (30 in make test)
set -u
cd "$(dirname "$0")/.."

PY=/usr/bin/python3
FUZZ_TIME=${FUZZ_TIME:-30}
passed=0
failed=0
failed_names=()

stage() {
	local name=$1
	shift
	echo
	echo "=== $name"
	local t0=$SECONDS
	if "$@"; then
		passed=$((passed + 1))
		echo "=== ok: $name ($((SECONDS - t0)) s)"
	else
		failed=$((failed + 1))
		failed_names+=("$name")
		echo "=== FAILED: $name ($((SECONDS - t0)) s)"
	fi
}

# pytest exits 5 when it collected nothing: a failure here too.
pytest_run() {
	local bin=$1
	shift
	RINGCACHED="$PWD/$bin" "$PY" -m pytest -q -p no:cacheprovider "$@"
}

export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=99
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:exitcode=99
export TSAN_OPTIONS=halt_on_error=1:exitcode=99:second_deadlock_stack=1

stage "unit tests" build/unit_tests
stage "integration tests" pytest_run build/ringcached tests/integration
stage "unit tests (asan+ubsan)" build/asan/unit_tests
asan_integration() {
	RINGCACHE_SANITIZER=asan pytest_run build/asan/ringcached tests/integration
}
tsan_integration() {
	RINGCACHE_SANITIZER=tsan RINGCACHE_THREADS=4 pytest_run build/tsan/ringcached tests/integration
}
stage "integration tests (asan+ubsan)" asan_integration
stage "unit tests (tsan)" build/tsan/unit_tests
stage "integration tests -t 4 (tsan)" tsan_integration
stage "fuzzers (${FUZZ_TIME} s each)" make --no-print-directory fuzz FUZZ_TIME="$FUZZ_TIME"

echo
if [ $failed -ne 0 ]; then
	echo "failed stages: ${failed_names[*]}"
fi
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
