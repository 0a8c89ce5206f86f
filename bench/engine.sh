#!/bin/sh
# The engine's figures (never pass/fail): medians of N runs under the host's
# accelerator (TCG here) of
#   - `boxlite run -- true`, cold (a new VM every time),
#   - an exec round trip in a running sandbox,
#   - the host memory (PSS) of one idle sandbox with 256 MiB guest RAM
#     (QEMU + virtiofsd + the monitor),
# each beside its floor (raw QEMU -M microvm with the same kernel and
# initramfs; a host fork+exec) and beside runc (`ctr run --rm` of the same
# busybox image under a private containerd), plus where the time goes.
# Usage: engine.sh BUILD [N]        (root; N defaults to $BENCH_N or 10)
set -u
build=$(cd "${1:-build}" && pwd)
n=${2:-${BENCH_N:-10}}
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
B=$build/boxlite
QEMU=/usr/bin/qemu-system-x86_64
CMDLINE="console=ttyS0 reboot=t panic=-1 quiet tsc=reliable no_timer_check lpj=5000000 i8042.noaux 8250.nr_uarts=1 mitigations=off cryptomgr.notests"

[ "$(id -u)" = 0 ] || { echo "engine: needs root (libvirt, containerd)"; exit 0; }
[ -x "$B" ] && [ -r "$build/vmlinux" ] && [ -r "$build/initramfs.cpio" ] ||
	{ echo "engine: build $B, $build/vmlinux and $build/initramfs.cpio first"; exit 1; }

work=$(mktemp -d /tmp/boxlite-bench.XXXXXX)
chmod 711 "$work"
export BOXLITE_STATE_DIR="$work/state" BOXLITE_KERNEL="$build/vmlinux" BOXLITE_INITRD="$build/initramfs.cpio"
ctr_pid=""
cleanup() {
	"$B" rm -f bench-idle bench-exec >/dev/null 2>&1
	[ -n "$ctr_pid" ] && {
		ctr -a "$work/ctr.sock" task kill -s KILL bench-idle >/dev/null 2>&1
		ctr -a "$work/ctr.sock" task rm -f bench-idle >/dev/null 2>&1
		ctr -a "$work/ctr.sock" container rm bench-idle >/dev/null 2>&1
		kill "$ctr_pid" 2>/dev/null; wait "$ctr_pid" 2>/dev/null
		umount -R "$work/ctr-state" 2>/dev/null
	}
	[ -n "${raw_pid:-}" ] && kill "$raw_pid" 2>/dev/null
	[ -n "${hold_pid:-}" ] && kill "$hold_pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

now_ms() { date +%s%N | awk '{printf "%.1f\n", $1 / 1000000}'; }
median() { sort -n | awk '{a[NR] = $1} END {if (!NR) print "n/a"; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.1f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
# Times a command N times; prints the median in ms.
time_n() {
	k=$1; shift
	for i in $(seq "$k"); do
		t0=$(now_ms); "$@" >/dev/null 2>&1; t1=$(now_ms)
		echo "$t0 $t1" | awk '{printf "%.1f\n", $2 - $1}'
	done | median
}
pss_kb() { # sum of Pss over pids
	tot=0
	for p in "$@"; do
		v=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null)
		tot=$((tot + ${v:-0}))
	done
	echo "$tot"
}
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }

# --- the image: one busybox image for both engines
"$top/packaging/build-test-images.sh" "$build/test-images" >/dev/null 2>&1 ||
	{ echo "engine: packaging/build-test-images.sh failed"; exit 1; }
rootfs="$build/test-images/busybox-rootfs"
ocitar="$build/test-images/busybox-oci.tar"
echo "engine: N=$n, $("$B" info | awk -F': *' '/^accelerator/ {print $2}')"

# --- cold run, with the breakdown from -v
log="$work/run.log"
: >"$log"
for i in $(seq "$n"); do
	t0=$(now_ms)
	BOXLITE_LOG=info "$B" run --rootfs "$rootfs" --memory 256 -- true >/dev/null 2>>"$log"
	t1=$(now_ms)
	echo "$t0 $t1" | awk '{printf "%.1f\n", $2 - $1}' >>"$work/cold.txt"
done
cold=$(median <"$work/cold.txt")
field() { # median of "NAME N" inside the "ready in" lines
	sed -n "s/.*ready in .*[ (]$1 \([0-9.]*\).*/\1/p" "$log" | median
}
ready=$(sed -n 's/.*ready in \([0-9.]*\) ms.*/\1/p' "$log" | median)
ran=$(sed -n 's/.*program ran \([0-9.]*\) ms.*/\1/p' "$log" | median)
released=$(sed -n 's/.*released in \([0-9.]*\) ms.*/\1/p' "$log" | median)

# --- raw QEMU floor: same kernel + initramfs, the agent reboots at once
# (boxlite.probe=none: no share to mount), QEMU exits on the reboot.
raw_boot() {
	"$QEMU" -M microvm,acpi=off -accel tcg -m 256 -nodefaults -no-user-config -nographic -global virtio-mmio.force-legacy=false \
		-serial "file:$work/raw-console.log" -no-reboot \
		-kernel "$build/vmlinux" -initrd "$build/initramfs.cpio" \
		-append "$CMDLINE boxlite.probe=none" \
		-device virtio-serial-device -chardev null,id=ch0 \
		-device virtserialport,chardev=ch0,name=org.boxlite.agent
}
raw=$(time_n "$n" raw_boot)

# --- runc through containerd (private root, imported OCI archive)
runc_cold="n/a" runc_exec="n/a" runc_pss="n/a"
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
		runc_cold=$(time_n "$n" runc_once)
		$C run -d "$img" bench-idle /bin/sleep 100000 >/dev/null 2>&1
		sleep 1
		runc_exec_once() { $C task exec --exec-id "e$(date +%s%N)" bench-idle /bin/true; }
		runc_exec=$(time_n "$n" runc_exec_once)
		shim=$(pgrep -f "containerd-shim-runc-v2.*$work" | head -n 1)
		task=$($C task ls 2>/dev/null | awk '/bench-idle/ {print $2}')
		runc_pss=$(mib "$(pss_kb $shim $(pgrep -P "${shim:-0}") $task)")
	else
		echo "engine: ctr images import failed (see $work/containerd.log)"
	fi
fi

# --- exec round trip and idle PSS in a long-lived sandbox (256 MiB)
"$B" create --rootfs "$rootfs" --memory 256 --name bench-exec >/dev/null ||
	{ echo "engine: boxlite create failed"; exit 1; }
exec_wall=$(time_n "$((n * 2))" "$B" exec bench-exec -- true)
for i in $(seq "$((n * 2))"); do
	BOXLITE_LOG=info "$B" exec bench-exec -- true 2>&1 >/dev/null |
		sed -n 's/.*exec round trip \([0-9.]*\) ms.*/\1/p'
done | median >"$work/exec_rtt"
exec_rtt=$(cat "$work/exec_rtt")
host_exec=$(time_n "$((n * 2))" /bin/true)
ping_rtt=$("$B" __ping bench-exec 50 2>/dev/null || echo n/a)
kernel_to_agent=$("$B" logs bench-exec | sed -n 's/^boxlite-agent\[\([0-9.]*\)\].*/\1/p' | head -n 1)
sleep 5 # idle
meta="$BOXLITE_STATE_DIR/bench-exec/meta.json"
mon=$(sed -n 's/.*"pid": *\([0-9]*\).*/\1/p' "$meta" | head -n 1)
qpid=$(sed -n 's/.*"qemu_pid": *\([0-9]*\).*/\1/p' "$meta" | head -n 1)
vfs=$(pgrep -f "virtiofsd.*source=$rootfs" | tr '\n' ' ')
q_kb=$(pss_kb "$qpid")
v_kb=$(pss_kb $vfs)
m_kb=$(pss_kb "$mon")
box_pss=$(mib $((q_kb + v_kb + m_kb)))
"$B" rm -f bench-exec >/dev/null 2>&1

# raw QEMU idle (same RAM, agent waiting on a connected channel)
raw_pss="n/a"
"$QEMU" -M microvm,acpi=off -accel tcg -m 256 -nodefaults -no-user-config -nographic -global virtio-mmio.force-legacy=false \
	-serial "file:$work/raw-idle.log" -no-reboot \
	-kernel "$build/vmlinux" -initrd "$build/initramfs.cpio" -append "$CMDLINE" \
	-device virtio-serial-device -chardev "socket,id=ch0,path=$work/raw.sock,server=on,wait=off" \
	-device virtserialport,chardev=ch0,name=org.boxlite.agent 2>/dev/null &
raw_pid=$!
for i in $(seq 50); do [ -S "$work/raw.sock" ] && break; sleep 0.1; done
python3 -c 'import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); time.sleep(60)' "$work/raw.sock" &
hold_pid=$!
sleep 8
kill -0 "$raw_pid" 2>/dev/null && raw_pss=$(mib "$(pss_kb "$raw_pid")")
kill "$raw_pid" "$hold_pid" 2>/dev/null
wait "$raw_pid" 2>/dev/null
raw_pid="" hold_pid=""

echo
printf '%-40s %12s %22s %18s\n' "median of $n" "boxlite" "floor" "runc (ctr)"
printf '%-40s %12s %22s %18s\n' "cold run of true (ms)" "$cold" "$raw (raw QEMU boot)" "$runc_cold"
printf '%-40s %12s %22s %18s\n' "exec round trip, CLI wall (ms)" "$exec_wall" "$host_exec (host exec)" "$runc_exec"
printf '%-40s %12s %22s %18s\n' "exec round trip, in boxlite (ms)" "$exec_rtt" "" ""
printf '%-40s %12s %22s %18s\n' "agent Ping via monitor (ms)" "$ping_rtt" "" ""
printf '%-40s %12s %22s %18s\n' "idle host PSS, 256 MiB guest (MiB)" "$box_pss" "$raw_pss (raw QEMU)" "$runc_pss"
echo
echo "idle PSS split: QEMU $(mib "$q_kb") MiB, virtiofsd $(mib "$v_kb") MiB, monitor $(mib "$m_kb") MiB"
echo "where a cold run's time goes (medians, ms):"
echo "  image resolve        $(field image)"
echo "  libvirt open         $(field libvirt)"
echo "  VM start (libvirt create: QEMU + virtiofsd, paused, QMP, resumed)  $(field 'VM start')"
echo "  kernel + agent ready $(field agent)   (guest uptime at agent start: ${kernel_to_agent:-?} s)"
echo "  Init (clock)         $(field init)"
echo "  container create     $(field container)"
echo "  sandbox ready        $ready"
echo "  program ran          $ran   (StartProcess + output + WaitProcess)"
echo "  release              $released   (kill QEMU, libvirt destroy, state removal)"
