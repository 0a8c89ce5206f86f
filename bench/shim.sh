#!/bin/sh
# containerd-shim-boxlite-v2 beside runc, through a private containerd and
# ctr (figures only, never pass/fail; medians of N, TCG here):
#   - cold `ctr run --rm IMAGE ID /bin/true`,
#   - `ctr task exec` of `true` in a running task,
#   - host memory (PSS) per idle task: the shim, QEMU and virtiofsd for
#     boxlite; the shim and the container's processes for runc.
# Usage: shim.sh BUILD [N]        (root; N defaults to $BENCH_N or 10)
set -u
build=$(cd "${1:-build}" && pwd)
n=${2:-${BENCH_N:-10}}
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "shim: needs root (containerd)"; exit 0; }
command -v containerd >/dev/null && command -v ctr >/dev/null ||
	{ echo "shim: containerd/ctr not installed"; exit 0; }
[ -x "$build/containerd-shim-boxlite-v2" ] && [ -r "$build/test-images/busybox-docker.tar" ] ||
	{ echo "shim: build the shim and the test images first (make all test-images)"; exit 1; }

BOXLITE_BUILD=$build
. "$top/tests/shim/lib.sh"
work=$(mktemp -d /tmp/boxlite-bench-shim.XXXXXX)
cleanup() {
	for id in idle-runc idle-boxlite; do
		c task kill -s KILL "$id" >/dev/null 2>&1
		sleep 0.5
		c task rm -f "$id" >/dev/null 2>&1
		c container rm "$id" >/dev/null 2>&1
	done
	ctrd_stop
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
ctrd_start "$work" || exit 1

now_ms() { date +%s%N | awk '{printf "%.1f\n", $1 / 1000000}'; }
median() { sort -n | awk '{a[NR] = $1} END {if (!NR) print "n/a"; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.1f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
rt() { [ "$1" = boxlite ] && echo io.containerd.boxlite.v2 || echo io.containerd.runc.v2; }
pss_kb() {
	tot=0
	for p in "$@"; do
		v=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null)
		tot=$((tot + ${v:-0}))
	done
	echo $tot
}
# Pids of a process and all its descendants.
tree() {
	echo "$1"
	for ch in $(cat /proc/"$1"/task/*/children 2>/dev/null); do tree "$ch"; done
}

for r in runc boxlite; do
	for i in $(seq "$n"); do
		t0=$(now_ms)
		c run --rm --runtime "$(rt $r)" "$IMAGE" "bench-$r-$i" /bin/true >/dev/null 2>&1
		t1=$(now_ms)
		echo "$t0 $t1" | awk '{printf "%.1f\n", $2 - $1}'
	done | median >"$work/run.$r"
done

for r in runc boxlite; do
	c run -d --runtime "$(rt $r)" "$IMAGE" "idle-$r" sleep 100000 >/dev/null 2>&1
	i=0
	while ! c task ls 2>/dev/null | grep -q "^idle-$r .*RUNNING"; do
		sleep 0.2; i=$((i + 1)); [ $i -gt 300 ] && break
	done
	sleep 3 # let the guest settle
	for i in $(seq "$n"); do
		t0=$(now_ms)
		c task exec --exec-id "x$i" "idle-$r" /bin/true >/dev/null 2>&1
		t1=$(now_ms)
		echo "$t0 $t1" | awk '{printf "%.1f\n", $2 - $1}'
	done | median >"$work/exec.$r"
	shim=$(ps -eo pid,args | grep "containerd-shim-.*-address $work/c.sock" | grep -- "-id idle-$r\( \|\$\)" | awk '{print $1}' | head -n 1)
	pids=""
	[ -n "$shim" ] && pids=$(tree "$shim")
	if [ "$r" = boxlite ]; then
		# QEMU and virtiofsd are reparented to the shim (a subreaper) or run under libvirt.
		for p in /proc/[0-9]*; do
			cat "$p/cmdline" 2>/dev/null | tr '\0' ' ' | grep -q "$work/bl-state" && pids="$pids ${p#/proc/}"
		done
	fi
	pids=$(echo $pids | tr ' ' '\n' | sort -u)
	echo "$(pss_kb $pids)" | awk '{printf "%.1f\n", $1 / 1024}' >"$work/pss.$r"
done

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
printf '%-44s %12s %12s\n' "figure (median of $n, TCG)" boxlite runc
printf '%-44s %10s ms %9s ms\n' "ctr run --rm IMAGE ID /bin/true" "$(cat "$work/run.boxlite")" "$(cat "$work/run.runc")"
printf '%-44s %10s ms %9s ms\n' "ctr task exec (true) in a running task" "$(cat "$work/exec.boxlite")" "$(cat "$work/exec.runc")"
printf '%-44s %9s MiB %8s MiB\n' "host PSS per idle task (256 MiB guest)" "$(cat "$work/pss.boxlite")" "$(cat "$work/pss.runc")"
