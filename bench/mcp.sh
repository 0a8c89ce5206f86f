#!/bin/sh
# `boxlite mcp` figures (never pass/fail): `tools/call run_python` through
# the official MCP TypeScript SDK over stdio, the first call of a session
# (boots the sandbox and the interpreter) and later calls (median of N),
# each the median over ROUNDS sessions; beside the Python SDK's CodeBox
# (bench/sdk.sh) and the CLI's `run --python`.
# Usage: mcp.sh BUILD [ROUNDS] [N]     (root; npm registry for the SDK)
set -u
build=$(cd "${1:-build}" && pwd)
rounds=${2:-${BENCH_ROUNDS:-3}}
n=${3:-${BENCH_N:-10}}
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "mcp: needs root"; exit 0; }
"$top/tests/mcp/setup.sh" "$build" || { echo "mcp: no MCP SDK (see above)"; exit 0; }
work=$(mktemp -d /tmp/boxlite-bench-mcp.XXXXXX)
chmod 711 "$work"
trap 'rm -rf "$work"' EXIT
trap 'exit 1' INT TERM
export BOXLITE_STATE_DIR="$work/state" BOXLITE_CLI="$build/boxlite"
export BOXLITE_KERNEL="$build/vmlinux" BOXLITE_INITRD="$build/initramfs.cpio"
median() { sort -n | awk '{a[NR] = $1} END {if (!NR) print "n/a"; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.1f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
(cd "$build/mcp-node" && node bench.mjs "$rounds" "$n") >"$work/out" 2>"$work/err" ||
	{ echo "mcp: bench failed:"; tail -5 "$work/err"; exit 1; }
first=$(awk '$1 == "first_ms" {print $2}' "$work/out" | median)
later=$(awk '$1 == "later_ms" {print $2}' "$work/out" | median)
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-66s %10s\n' "MCP tools/call run_python, first of a session (VM + interpreter)" "$first ms"
printf '%-66s %10s\n' "MCP tools/call run_python, later calls (median of $n)" "$later ms"
echo "(medians over $rounds sessions; the Python SDK's CodeBox figures: bench/sdk.sh)"
