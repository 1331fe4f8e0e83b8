#!/usr/bin/env bash
# Runs every test stage of ringcache and ends with one line
# "N passed, N failed" counting stages; exits non-zero if any stage failed.
# Called by `make test` after the build; each stage prints its runner's own
# summary (CUnit's run summary, pytest's closing line).
set -u
cd "$(dirname "$0")/.."

PY=/usr/bin/python3
passed=0
failed=0
failed_names=()

stage() {
	local name=$1
	shift
	echo
	echo "=== $name"
	if "$@"; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
		failed_names+=("$name")
		echo "=== FAILED: $name"
	fi
}

pytest_run() {
	local bin=$1
	shift
	RINGCACHED="$PWD/$bin" "$PY" -m pytest -q -p no:cacheprovider "$@"
	local rc=$?
	# pytest exits 5 when it collected nothing: that is a failure here too.
	return $rc
}

stage "unit tests" build/unit_tests
stage "integration tests" pytest_run build/ringcached tests/integration

echo
if [ $failed -ne 0 ]; then
	echo "failed stages: ${failed_names[*]}"
fi
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
