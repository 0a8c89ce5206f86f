#!/bin/sh
# The warm pool's figures (never pass/fail), medians of N under the host's
# accelerator (TCG here), beside runc (`ctr run --rm`, private containerd)
# and the raw-QEMU boot floor in the same run:
#   - `boxlite run -- true` cold (no pool) and warm (a pooled VM ready),
#   - `boxlite create` cold and warm,
#   - idle host memory (PSS of QEMU + virtiofsd + owners, the pool's owner
#     shared out) and CPU per sandbox with K idle sandboxes, K = 1 and
#     $BENCH_IDLE (default 20; 100/200 only when asked: BENCH_IDLE="1 20 100"),
#   - start latency (cold and warm run) while $BENCH_SPIN (default 2)
#     sandboxes spin their vCPU.
# Usage: pool.sh BUILD [N]        (root; N defaults to $BENCH_N or 5)
set -u
build=$(cd "${1:-build}" && pwd)
n=${2:-${BENCH_N:-5}}
idle_ks=${BENCH_IDLE:-"1 20"}
spin=${BENCH_SPIN:-2}
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
B=$build/boxlite
QEMU=/usr/bin/qemu-system-x86_64
CMDLINE="console=ttyS0 reboot=t panic=-1 quiet tsc=reliable no_timer_check lpj=5000000 i8042.noaux 8250.nr_uarts=1 mitigations=off cryptomgr.notests"
MEM=128
# The same clock argument boxlite gives a TCG guest (runtime/vm.c).
[ -r /run/boxlite/tsc-khz ] && CMDLINE="$CMDLINE tsc_early_khz=$(cat /run/boxlite/tsc-khz)"

[ "$(id -u)" = 0 ] || { echo "pool: needs root"; exit 0; }
[ -x "$B" ] && [ -r "$build/vmlinux" ] || { echo "pool: build $B first"; exit 1; }

work=$(mktemp -d /tmp/boxlite-bench-pool.XXXXXX)
chmod 711 "$work"
export BOXLITE_STATE_DIR="$work/state" BOXLITE_KERNEL="$build/vmlinux" BOXLITE_INITRD="$build/initramfs.cpio"
ctr_pid=""
cleanup() {
	"$B" pool stop >/dev/null 2>&1
	for d in "$BOXLITE_STATE_DIR"/*; do [ -d "$d" ] && "$B" rm -f "$(basename "$d")" >/dev/null 2>&1; done
	[ -n "$ctr_pid" ] && { kill "$ctr_pid" 2>/dev/null; wait "$ctr_pid" 2>/dev/null; umount -R "$work/ctr-state" 2>/dev/null; }
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

now_ms() { date +%s%N | awk '{printf "%.1f\n", $1 / 1000000}'; }
median() { sort -n | awk '{a[NR] = $1} END {if (!NR) print "n/a"; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.1f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
once_ms() { t0=$(now_ms); "$@" >/dev/null 2>&1; t1=$(now_ms); echo "$t0 $t1" | awk '{printf "%.1f\n", $2 - $1}'; }
pss_kb() { tot=0; for p in "$@"; do v=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null); tot=$((tot + ${v:-0})); done; echo "$tot"; }
ticks() { tot=0; for p in "$@"; do v=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null); tot=$((tot + ${v:-0})); done; echo "$tot"; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
wait_ready() { for i in $(seq 1200); do "$B" pool status 2>/dev/null | grep -q '^ready *[1-9]' && return 0; sleep 0.1; done; return 1; }

"$top/packaging/build-test-images.sh" "$build/test-images" >/dev/null 2>&1 ||
	{ echo "pool: packaging/build-test-images.sh failed"; exit 1; }
rootfs="$build/test-images/busybox-rootfs"
ocitar="$build/test-images/busybox-oci.tar"
echo "pool: N=$n, guests of $MEM MiB, $("$B" info | sed -n 's/^accelerator: *//p')"

# --- floors: raw QEMU boot (the agent reboots at once) and runc
raw_boot() {
	"$QEMU" -M microvm,acpi=off -accel tcg -m $MEM -nodefaults -no-user-config -nographic -global virtio-mmio.force-legacy=false \
		-serial "file:$work/raw-console.log" -no-reboot -kernel "$build/vmlinux" -initrd "$build/initramfs.cpio" \
		-append "$CMDLINE boxlite.probe=none" -device virtio-serial-device -chardev null,id=ch0 \
		-device virtserialport,chardev=ch0,name=org.boxlite.agent
}
raw=$(for i in $(seq "$n"); do once_ms raw_boot; done | median)
runc="n/a"
if command -v containerd >/dev/null && command -v ctr >/dev/null; then
	cat >"$work/ctr.toml" <<EOF
version = 2
root = "$work/ctr-root"
state = "$work/ctr-state"
[grpc]
  address = "$work/ctr.sock"
[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
EOF
	containerd --config "$work/ctr.toml" >"$work/containerd.log" 2>&1 &
	ctr_pid=$!
	for i in $(seq 100); do [ -S "$work/ctr.sock" ] && break; sleep 0.1; done
	C="ctr -a $work/ctr.sock"
	if $C images import --index-name bench/busybox:latest "$ocitar" >/dev/null 2>&1 ||
		$C images import --base-name bench/busybox "$ocitar" >/dev/null 2>&1; then
		img=$($C images ls -q | head -n 1)
		runc_once() { $C run --rm "$img" "bench-$$-$(date +%s%N)" /bin/true; }
		runc=$(for i in $(seq "$n"); do once_ms runc_once; done | median)
	fi
	kill "$ctr_pid" 2>/dev/null; wait "$ctr_pid" 2>/dev/null; ctr_pid=""
fi

# --- cold (no pool)
run_true() { "$B" run --rootfs "$rootfs" --memory $MEM -- true; }
create_rm() { id=$("$B" create --rootfs "$rootfs" --memory $MEM) && echo "$id" >"$work/last-id"; }
cold_run=$(for i in $(seq "$n"); do once_ms run_true; done | median)
cold_create=$(for i in $(seq "$n"); do once_ms create_rm; "$B" rm -f "$(cat "$work/last-id")" >/dev/null 2>&1; done | median)

# --- warm (a pool of one; each start waits for the refill first)
"$B" pool start --size 1 --memory $MEM --wait >/dev/null || { echo "pool: pool start failed"; exit 1; }
warm_run=$(for i in $(seq "$n"); do wait_ready; once_ms run_true; done | median)
warm_create=$(for i in $(seq "$n"); do wait_ready; once_ms create_rm; "$B" rm -f "$(cat "$work/last-id")" >/dev/null 2>&1; done | median)
served=$("$B" pool status | awk '/^served/ {print $2}')

# --- idle cost per sandbox (pooled; owners: monitors + the pool's owner)
idle_lines=""
for k in $idle_ks; do
	: >"$work/ids"
	for i in $(seq "$k"); do
		wait_ready
		"$B" create --rootfs "$rootfs" --memory $MEM >>"$work/ids" 2>/dev/null
	done
	wait_ready
	sleep 10
	# Taken VMs were booted as spares: their command lines name .pool/.
	qemus=$(for id in $(cat "$work/ids"); do sed -n 's/.*"qemu_pid": *\([0-9]*\).*/\1/p' "$BOXLITE_STATE_DIR/$id/meta.json" | head -n 1; done | tr '\n' ' ')
	spare_vfs=$(for d in "$BOXLITE_STATE_DIR"/.pool/*/; do [ -d "$d" ] && pgrep -f "virtiofsd.*source=${d%/}/share"; done | tr '\n' ' ')
	vfs=$(for p in $(pgrep -f "virtiofsd.*$BOXLITE_STATE_DIR"); do case " $spare_vfs " in *" $p "*) ;; *) echo "$p" ;; esac; done | tr '\n' ' ')
	mons=$(for id in $(cat "$work/ids"); do sed -n 's/.*"pid": *\([0-9]*\).*/\1/p' "$BOXLITE_STATE_DIR/$id/meta.json" | head -n 1; done | tr '\n' ' ')
	owner=$("$B" pool status | awk '/^pid/ {print $2}')
	got=$(echo $qemus | wc -w)
	q=$(pss_kb $qemus) v=$(pss_kb $vfs) m=$(pss_kb $mons) o=$(pss_kb $owner)
	t0=$(ticks $qemus $vfs $mons); sleep 10; t1=$(ticks $qemus $vfs $mons)
	hz=$(getconf CLK_TCK)
	per=$(awk -v q="$q" -v v="$v" -v m="$m" -v o="$o" -v k="$got" 'BEGIN {if (k) printf "%.1f", (q + v + m + o / k) / k / 1024; else print "n/a"}')
	cpu=$(awk -v a="$t0" -v b="$t1" -v k="$got" -v hz="$hz" 'BEGIN {if (k) printf "%.2f", (b - a) / hz / 10 * 100 / k; else print "n/a"}')
	idle_lines="$idle_lines$(printf '  K=%-4s %6s MiB/sandbox (QEMU %s, virtiofsd %s, monitor %s MiB each; pool owner %s MiB shared), CPU %s %% of a core each' \
		"$got" "$per" "$(mib $((q / (got ? got : 1))))" "$(mib $((v / (got ? got : 1))))" "$(mib $((m / (got ? got : 1))))" "$(mib "$o")" "$cpu")
"
	for id in $(cat "$work/ids"); do "$B" rm -f "$id" >/dev/null 2>&1; done
done

# --- start latency while sandboxes spin their vCPU (cold and warm)
: >"$work/spin-ids"
for i in $(seq "$spin"); do
	BOXLITE_POOL=off "$B" create --rootfs "$rootfs" --memory $MEM -- sh -c 'while :; do :; done' >>"$work/spin-ids" 2>/dev/null
done
sleep 2
spin_warm=$(for i in $(seq "$n"); do wait_ready; once_ms run_true; done | median)
"$B" pool stop >/dev/null 2>&1
spin_cold=$(for i in $(seq "$n"); do once_ms run_true; done | median)
for id in $(cat "$work/spin-ids"); do "$B" rm -f "$id" >/dev/null 2>&1; done

echo
printf '%-44s %10s %10s %22s %12s\n' "median of $n (ms)" "cold" "warm" "floor (raw QEMU boot)" "runc (ctr)"
printf '%-44s %10s %10s %22s %12s\n' "boxlite run -- true" "$cold_run" "$warm_run" "$raw" "$runc"
printf '%-44s %10s %10s\n' "boxlite create" "$cold_create" "$warm_create"
printf '%-44s %10s %10s\n' "run -- true, $spin sandboxes spinning" "$spin_cold" "$spin_warm"
echo "pooled VMs served: $served"
echo "idle cost per sandbox ($MEM MiB guests, pooled, after 10 s idle; CPU over 10 s):"
printf '%s' "$idle_lines"
