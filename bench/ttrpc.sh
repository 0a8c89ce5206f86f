#!/bin/sh
# ttrpc benchmark: the C server (bench/ttrpc_echo_server.c) against containerd's
# Go ttrpc server (go-ttrpc-peer serve), both driven by the same Go load
# generator in the same run: 1 and 16 callers x 100 B and 64 KiB payloads.
# Usage: bench/ttrpc.sh BUILD [SECONDS]   (GO_TTRPC_SHARED overrides ../shared)
set -eu
build=$(cd "${1:-build}" && pwd)
secs=${2:-${BENCH_SECONDS:-5}}
root=$(cd "$(dirname "$0")/.." && pwd)
shared=${GO_TTRPC_SHARED:-$root/../shared/bench/go-ttrpc}
out=$build/bench
mkdir -p "$out"
if [ ! -x "$out/go-ttrpc-peer" ]; then
	if [ ! -x "$shared/build.sh" ]; then
		echo "bench/ttrpc.sh: skipped: no Go peer at $shared" >&2
		exit 0
	fi
	"$shared/build.sh" "$out/go-ttrpc-peer" >/dev/null
fi
pkgflags=$(pkg-config --cflags --libs libprotobuf-c)
${CC:-gcc} -std=gnu17 -O2 -g -pthread -D_GNU_SOURCE -Wall -Wextra -Werror -Wno-unused-parameter \
	-I"$root/common" -I"$build/gen" -o "$out/ttrpc_echo_server" "$root/bench/ttrpc_echo_server.c" \
	"$build/libblcommon.a" $pkgflags

tmp=$(mktemp -d)
cpid="" gpid=""
cleanup() {
	[ -n "$cpid" ] && kill "$cpid" 2>/dev/null
	[ -n "$gpid" ] && kill "$gpid" 2>/dev/null
	wait 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT INT TERM
"$out/ttrpc_echo_server" "$tmp/c.sock" & cpid=$!
"$out/go-ttrpc-peer" serve "$tmp/go.sock" & gpid=$!
for i in $(seq 50); do
	[ -S "$tmp/c.sock" ] && [ -S "$tmp/go.sock" ] && break
	sleep 0.1
done

field() { echo "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }

echo "ttrpc echo round trips, Go load generator, ${secs}s per cell ($(nproc) CPUs)"
printf '%-8s %-7s | %9s %8s %8s | %9s %8s %8s | %6s\n' callers bytes "C rps" "C p50us" "C p99us" \
	"Go rps" "Go p50us" "Go p99us" "C/Go"
for bytes in 100 65536; do
	for callers in 1 16; do
		c=$("$out/go-ttrpc-peer" load "$tmp/c.sock" "$callers" "$secs" "$bytes")
		g=$("$out/go-ttrpc-peer" load "$tmp/go.sock" "$callers" "$secs" "$bytes")
		cr=$(field "$c" rps) gr=$(field "$g" rps)
		printf '%-8s %-7s | %9s %8s %8s | %9s %8s %8s | %6s\n' "$callers" "$bytes" \
			"$cr" "$(field "$c" p50_us)" "$(field "$c" p99_us)" \
			"$gr" "$(field "$g" p50_us)" "$(field "$g" p99_us)" \
			"$(awk -v a="$cr" -v b="$gr" 'BEGIN { printf "%.2f", a / b }')"
	done
done
