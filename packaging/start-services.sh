#!/bin/sh
# Starts the daemons boxlite's tests use, on machines without systemd:
# virtlogd and libvirtd (for qemu:///system) and containerd. Idempotent.
set -eu
running() { pgrep -x "$1" >/dev/null 2>&1; }

mkdir -p /run/libvirt /var/log/boxlite
if ! running virtlogd; then
	virtlogd -d
fi
if ! running libvirtd; then
	libvirtd -d
fi
if ! running containerd; then
	mkdir -p /run/containerd
	nohup containerd >/var/log/boxlite/containerd.log 2>&1 &
fi
# Wait for the sockets (at most 30 s each).
for sock in /run/libvirt/libvirt-sock /run/containerd/containerd.sock; do
	i=0
	while [ ! -S "$sock" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
	[ -S "$sock" ] || { echo "start-services: $sock did not appear" >&2; exit 1; }
done
echo "services: virtlogd, libvirtd, containerd running"
