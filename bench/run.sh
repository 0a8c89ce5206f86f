#!/bin/sh
# make bench: every benchmark, each printing its figures beside a baseline.
# Figures only; nothing here passes or fails on speed.
set -u
build=${1:-build}
here=$(cd "$(dirname "$0")" && pwd)
for b in boot ttrpc engine pool pull sdk shim mcp serve net; do
	if [ -x "$here/$b.sh" ]; then
		echo "=== bench: $b"
		"$here/$b.sh" "$build" || echo "bench $b failed (rc=$?)"
	fi
done
