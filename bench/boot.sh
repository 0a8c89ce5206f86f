#!/bin/sh
# Boot to the agent's probe marker under the host's accelerator (TCG here):
# through libvirt (embedded driver) and raw QEMU + virtiofsd as the floor.
# Usage: boot.sh BUILD [N]
set -eu
build=${1:-build}
n=${2:-10}
"$build/bench/boot_probe" "$build/vmlinux" "$build/initramfs.cpio" "$n" raw
"$build/bench/boot_probe" "$build/vmlinux" "$build/initramfs.cpio" "$n"
if [ -S /run/libvirt/libvirt-sock ]; then
	"$build/bench/boot_probe" "$build/vmlinux" "$build/initramfs.cpio" "$n" qemu:///system
fi
