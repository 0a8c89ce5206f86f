#!/bin/sh
# Runs build.sh and, while a kernel compiles, prints a progress line every
# 20 s (objects compiled so far and the time taken), so a cold build is not
# silent for minutes. Kept apart from
# build.sh because build.sh is part of the kernel cache key.
#
# Usage: progress.sh OUTPUT_VMLINUX
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cache=${BOXLITE_KERNEL_CACHE:-/var/cache/boxlite/kernel}

"$here/build.sh" "$@" &
pid=$!
trap 'kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; exit 130' INT TERM
start=$(date +%s)
while kill -0 "$pid" 2>/dev/null; do
	i=0
	while [ $i -lt 20 ] && kill -0 "$pid" 2>/dev/null; do sleep 1; i=$((i + 1)); done
	kill -0 "$pid" 2>/dev/null || break
	n=$(find "$cache" -path "$cache/build.*" -name '*.o' 2>/dev/null | wc -l)
	[ "$n" -gt 0 ] || continue
	echo "guest kernel: $n objects compiled, $(( $(date +%s) - start )) s so far"
done
wait "$pid"
