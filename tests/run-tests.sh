#!/bin/sh
# Runs boxlite's CUnit test programs and prints one closing line:
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

if [ "$mode" != integration-only ]; then
	for b in "$build"/tests/unit/test_*; do
		[ -x "$b" ] && run_one "$b" "unit/$(basename "$b")"
	done
	for b in "$build"/asan/tests/unit/test_*; do
		[ -x "$b" ] && run_one "$b" "asan/$(basename "$b")"
	done
fi
if [ "$mode" != unit-only ]; then
	for b in "$build"/tests/integration/test_*; do
		[ -x "$b" ] && run_one "$b" "integration/$(basename "$b")"
	done
fi
[ -n "$broken" ] && echo "failing programs:$broken"
echo "tests: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
