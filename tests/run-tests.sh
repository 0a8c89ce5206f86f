#!/bin/sh
# Runs boxlite's CUnit test programs and the Python SDK's pytest suite
# (tests/python), and prints one closing line:
#   "tests: N passed, N failed, N skipped"
# Usage: run-tests.sh [--unit-only|--integration-only] BUILD_DIR
# Unit tests run from BUILD_DIR and, when built, BUILD_DIR/asan (ASan+UBSan).
set -u
mode=all
case "${1:-}" in --unit-only|--integration-only) mode=${1#--}; shift ;; esac
build=${1:-build}
export BOXLITE_BUILD=$(cd "$build" && pwd)
logdir=$(mktemp -d)
trap 'rm -rf "$logdir"' EXIT
passed=0 failed=0 skipped=0 broken=""

run_one() {
	bin=$1 label=$2
	log=$logdir/$(echo "$label" | tr '/ ' '__').log
	echo "=== $label"
	start=$(date +%s)
	ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0} \
	UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
		"$bin" >"$log" 2>&1
	rc=$?
	cat "$log"
	# CUnit's summary: "tests  <total> <ran> <passed> <failed> <inactive>"
	line=$(grep -E '^ +tests +[0-9]+' "$log" | tail -n 1)
	if [ -n "$line" ]; then
		set -- $line
		p=$4 f=$5
	else
		p=0 f=1
	fi
	s=$(grep -c '^SKIP: ' "$log")
	p=$((p - s))
	[ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && { f=1; }
	[ "$rc" -ne 0 ] && broken="$broken $label(rc=$rc)"
	passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
	echo "--- $label: passed $p, failed $f, skipped $s ($(( $(date +%s) - start ))s)"
}

# The SDK's pytest suite (tests/python): its summary line ("N passed, N
# failed, N skipped, N errors") is counted like a CUnit summary. $1: a pytest
# marker expression, $2: the label.
run_pytest() {
	label=$2
	log=$logdir/pytest_$(echo "$label" | tr '/ ' '__').log
	echo "=== $label"
	py=""
	for cand in /usr/bin/python3 python3; do
		if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import pytest' 2>/dev/null; then
			py=$cand
			break
		fi
	done
	if [ -z "$py" ]; then
		echo "SKIP: pytest is not installed (Debian: python3-pytest); the SDK tests did not run"
		skipped=$((skipped + 1))
		return
	fi
	start=$(date +%s)
	here=$(cd "$(dirname "$0")" && pwd)
	"$py" -m pytest -p no:cacheprovider -q -rs -m "$1" "$here/python" >"$log" 2>&1
	rc=$?
	cat "$log"
	summary=$(grep -E '^(=+ )?[0-9]+ (passed|failed|skipped|error|errors|deselected)' "$log" | tail -n 1)
	num() { echo "$summary" | grep -oE "[0-9]+ $1" | head -n 1 | cut -d' ' -f1; }
	p=$(num passed) f=$(num failed) s=$(num skipped) e=$(num error)
	p=${p:-0} f=${f:-0} s=${s:-0} e=${e:-0}
	f=$((f + e))
	# rc 5: nothing collected for this marker (fine); other non-zero codes
	# without a counted failure are a broken run.
	if [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ] && [ "$f" -eq 0 ]; then f=1; fi
	[ "$rc" -ne 0 ] && [ "$rc" -ne 5 ] && broken="$broken $label(rc=$rc)"
	passed=$((passed + p)) failed=$((failed + f)) skipped=$((skipped + s))
	echo "--- $label: passed $p, failed $f, skipped $s ($(( $(date +%s) - start ))s)"
}

if [ "$mode" != integration-only ]; then
	for b in "$build"/tests/unit/test_*; do
		[ -x "$b" ] && run_one "$b" "unit/$(basename "$b")"
	done
	for b in "$build"/asan/tests/unit/test_*; do
		[ -x "$b" ] && run_one "$b" "asan/$(basename "$b")"
	done
	run_pytest novm "python/sdk (no VM)"
fi
if [ "$mode" != unit-only ]; then
	for b in "$build"/tests/integration/test_*; do
		[ -x "$b" ] && run_one "$b" "integration/$(basename "$b")"
	done
	run_pytest "not novm" "python/sdk (VMs)"
fi
[ -n "$broken" ] && echo "failing programs:$broken"
echo "tests: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
