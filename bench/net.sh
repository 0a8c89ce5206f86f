#!/bin/sh
# The network's cost at start (never pass/fail): `boxlite run -- true` with
# and without --network (QEMU user networking, the per-sandbox nftables table,
# the DNS responder), medians of N; and the host memory of QEMU with and
# without it (RSS of an idle long-lived sandbox).
# Usage: net.sh BUILD [N]        (root; N defaults to $BENCH_N or 5)
set -u
build=$(cd "${1:-build}" && pwd)
n=${2:-${BENCH_N:-5}}
B=$build/boxlite
[ "$(id -u)" = 0 ] || { echo "net: needs root"; exit 0; }
command -v nft >/dev/null 2>&1 || [ -x /usr/sbin/nft ] || { echo "net: nftables missing"; exit 0; }
work=$(mktemp -d /tmp/boxlite-bench-net.XXXXXX)
chmod 711 "$work"
export BOXLITE_STATE_DIR="$work/state" BOXLITE_BUILD="$build"
img=${BENCH_IMAGE:-busybox}
cleanup() {
	"$B" rm -f bench-net-a >/dev/null 2>&1
	"$B" rm -f bench-net-b >/dev/null 2>&1
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

now_ms() { date +%s%N | awk '{printf "%.1f\n", $1 / 1000000}'; }
median() { sort -n | awk '{a[NR] = $1} END {if (!NR) print "n/a"; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.1f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
time_n() {
	for i in $(seq "$n"); do
		t0=$(now_ms); "$@" >/dev/null 2>&1; t1=$(now_ms)
		echo "$t0 $t1" | awk '{printf "%.1f\n", $2 - $1}'
	done | median
}
"$B" run --image "$img" -- true >/dev/null 2>&1 # warm caches
off=$(time_n "$B" run --image "$img" -- true)
on=$(time_n "$B" run --image "$img" --network --allow host:1 -p 0:80 -- true)
echo "net: boxlite run -- true, median of $n: without network $off ms, with --network $on ms"
echo "$off $on" | awk '{printf "net: the network adds %.0f ms to a start (target <= 50 ms)\n", $2 - $1}'
# The host-side set-up alone (firewall table, DNS responder, port checks),
# as the library logs it: less noisy than the difference above.
for i in $(seq "$n"); do
	"$B" run -v --image "$img" --network --allow host:1 -p 0:80 -- true 2>&1 |
		sed -n 's/.*network set up in \([0-9.]*\) ms.*/\1/p'
done | median | awk '{print "net: host-side network set-up (nft table, DNS responder), median: " $1 " ms"}'

rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null; }
qpid() { "$B" ls 2>/dev/null | awk -v id="$1" '$1 == id {print}' >/dev/null; pgrep -f "guest=boxlite-$1" | head -n 1; }
"$B" create --image "$img" --name bench-net-a >/dev/null 2>&1
"$B" create --image "$img" --name bench-net-b --network >/dev/null 2>&1
sleep 2
a=$(qpid bench-net-a) b=$(qpid bench-net-b)
if [ -n "$a" ] && [ -n "$b" ]; then
	echo "net: idle QEMU RSS: without network $(rss "$a") KiB, with --network $(rss "$b") KiB"
fi
