#!/bin/sh
# Host preparation that udev does on an ordinary Debian host but that
# container-like build machines (no udev) lack. Idempotent; run as root.
#
# /dev/kvm: Debian's udev rule makes it root:kvm 0660 (libvirt-qemu is in the
# kvm group). Left at root:root 0600, libvirt's capability probe and its
# validity check disagree about KVM, and libvirt re-probes QEMU (~4 s) before
# every domain it starts.
set -eu
if [ -c /dev/kvm ] && getent group kvm >/dev/null; then
	if [ "$(stat -c %G /dev/kvm)" != kvm ]; then
		chgrp kvm /dev/kvm
		chmod 0660 /dev/kvm
		echo "host-setup: /dev/kvm set to root:kvm 0660 (as Debian's udev rule does)"
	fi
fi
mkdir -p /run/boxlite /var/cache/boxlite /var/lib/boxlite
