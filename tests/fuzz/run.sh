#!/bin/sh
# Runs every libFuzzer target BUILD/fuzz/fuzz_* for SECONDS each, with its seed
# corpus tests/fuzz/corpus/<name>/ (copied, so new inputs stay out of git).
# Usage: run.sh BUILD SECONDS
set -eu
build=${1:-build}
secs=${2:-60}
here=$(cd "$(dirname "$0")" && pwd)
rc=0
for bin in "$build"/fuzz/fuzz_*; do
	[ -x "$bin" ] || continue
	name=$(basename "$bin" | sed 's/^fuzz_//')
	work=$build/fuzz/work-$name
	mkdir -p "$work/corpus" "$work/artifacts"
	[ -d "$here/corpus/$name" ] && cp -n "$here/corpus/$name"/* "$work/corpus/" 2>/dev/null || true
	echo "=== fuzz_$name for ${secs}s"
	if ! "$bin" -max_total_time="$secs" -timeout=20 -rss_limit_mb=4096 -print_final_stats=1 \
		-artifact_prefix="$work/artifacts/" "$work/corpus" >"$work/log" 2>&1; then
		rc=1
		echo "fuzz_$name: FAILED (see $work/log, artifacts in $work/artifacts)"
	fi
	grep -E '^stat::number_of_executed_units|^stat::new_units_added|^Done|ERROR' "$work/log" || true
done
exit $rc
