#!/bin/sh
# The Python SDK's figures (never pass/fail), medians of N under the host's
# accelerator (TCG here):
#   - from entering `async with CodeBox()` to the first run() result (a new
#     VM and interpreter each time), and a further run() in the same box;
#   - the same through the CLI: `boxlite run --python` (a new VM each time)
#     and `boxlite exec ID -- python3 -c` in a long-lived sandbox (a new
#     interpreter each time: the CLI keeps no state);
#   - a plain `python3 -c` on the host.
# Usage: sdk.sh BUILD [N]        (root; N defaults to $BENCH_N or 10)
set -u
build=$(cd "${1:-build}" && pwd)
n=${2:-${BENCH_N:-10}}
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
B=$build/boxlite
[ "$(id -u)" = 0 ] || { echo "sdk: needs root"; exit 0; }
[ -r "$build/libboxlite.so" ] || { echo "sdk: build $build/libboxlite.so first"; exit 1; }
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3

work=$(mktemp -d /tmp/boxlite-bench-sdk.XXXXXX)
chmod 711 "$work"
export BOXLITE_STATE_DIR="$work/state" BOXLITE_BUILD="$build" BOXLITE_LIBRARY="$build/libboxlite.so"
cleanup() {
	"$B" rm -f bench-sdk >/dev/null 2>&1
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

now_ms() { date +%s%N | awk '{printf "%.1f\n", $1 / 1000000}'; }
median() { sort -n | awk '{a[NR] = $1} END {if (!NR) print "n/a"; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.1f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
time_n() {
	k=$1; shift
	for i in $(seq "$k"); do
		t0=$(now_ms); "$@" >/dev/null 2>&1; t1=$(now_ms)
		echo "$t0 $t1" | awk '{printf "%.1f\n", $2 - $1}'
	done | median
}

sdk=$(PYTHONPATH="$top/sdk/python" "$PY" - "$n" <<'PY'
import asyncio, statistics, sys, time
import boxlite
n = int(sys.argv[1])

async def main():
    first = []
    for _ in range(n):
        t0 = time.monotonic()
        async with boxlite.CodeBox(memory_mb=256) as box:
            r = await box.run("print(2 + 2)")
            first.append((time.monotonic() - t0) * 1000)
            assert r.stdout == "4\n", r
    again, state = [], []
    async with boxlite.CodeBox(memory_mb=256) as box:
        await box.run("x = 0")
        for _ in range(n):
            t0 = time.monotonic()
            r = await box.run("print(2 + 2)")
            again.append((time.monotonic() - t0) * 1000)
        for _ in range(n):
            t0 = time.monotonic()
            await box.run("x += 1\nx")
            state.append((time.monotonic() - t0) * 1000)
    print("%.1f %.1f %.1f" % (statistics.median(first), statistics.median(again), statistics.median(state)))

asyncio.run(main())
PY
)
set -- $sdk
sdk_first=${1:-n/a} sdk_again=${2:-n/a} sdk_state=${3:-n/a}

cli_first=$(time_n "$n" "$B" run --memory 256 --python 'print(2 + 2)')
"$B" create --name bench-sdk --memory 256 >/dev/null 2>&1 || "$B" create --memory 256 >"$work/id" 2>/dev/null
id=bench-sdk
[ -s "$work/id" ] && id=$(cat "$work/id")
cli_again=$(time_n "$n" "$B" exec "$id" -- python3 -c 'print(2 + 2)')
host=$(time_n "$n" "$PY" -c 'print(2 + 2)')

printf '%-58s %10s ms\n' "CodeBox: enter + first run() result (new VM each)" "$sdk_first"
printf '%-58s %10s ms\n' "CodeBox: a further run() in the same box" "$sdk_again"
printf '%-58s %10s ms\n' "CodeBox: a further run() using state (x += 1)" "$sdk_state"
printf '%-58s %10s ms\n' "CLI: boxlite run --python (new VM each)" "$cli_first"
printf '%-58s %10s ms\n' "CLI: boxlite exec ID -- python3 -c (running sandbox)" "$cli_again"
printf '%-58s %10s ms\n' "host: python3 -c" "$host"
echo "(medians of $n; TCG: $(grep -qE 'vmx|svm' /proc/cpuinfo && echo no || echo yes))"
