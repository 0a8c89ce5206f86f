#!/bin/bash
# The Debian packages end to end (run by tests/integration/test_deb, as root):
#   deb-test.sh SRC BUILD WORK build     make deb: the .debs in BUILD/deb
#   deb-test.sh SRC BUILD WORK lintian   lintian: no error
#   deb-test.sh SRC BUILD WORK chroot    a fresh Debian 12 root (debootstrap
#       and apt-get, cached as tarballs keyed by the package list): dpkg -i, boxlite
#       --version / info / a VM, pkg-config, python3 -c 'import boxlite',
#       then purge leaves no file of the packages
#   deb-test.sh SRC BUILD WORK host      on this host, the packages' files
#       unpacked into WORK/root (nothing goes to /usr): a C program built
#       with pkg-config against them creates a sandbox and runs a command,
#       their boxlite runs `run -- true`, their shim serves
#       `ctr run --runtime io.containerd.boxlite.v2` on a private containerd
# Prints "SKIP: reason" and exits 0 when it cannot run here.
set -u
src=$(cd "$1" && pwd) build=$(cd "$2" && pwd) work=$3 what=$4
mkdir -p "$work"
work=$(cd "$work" && pwd)
deb=$build/deb
MIRROR=${BOXLITE_DEB_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
CACHE=${BOXLITE_DEB_CACHE:-/var/cache/boxlite/deb-test}
OURS="boxlite containerd-shim-boxlite libboxlite0 libboxlite-dev python3-boxlite"
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
skip() { echo "SKIP: $*"; exit 0; }
debs() { for p in $OURS; do ls "$deb/${p}_"*.deb; done; }
have_debs() { for p in $OURS; do ls "$deb/${p}_"*.deb >/dev/null 2>&1 || return 1; done; }

# Mounts for a chroot that boots VMs; undone by unmount_root.
mount_root() {
	r=$1
	# The root is a mount point (libvirt makes "/" a slave mount for QEMU).
	mount --bind "$r" "$r" && mount --make-rprivate "$r"
	mount -t proc proc "$r/proc"
	mount --rbind /sys "$r/sys" && mount --make-rslave "$r/sys"
	mount --rbind /dev "$r/dev" && mount --make-rslave "$r/dev"
	mount -t tmpfs tmpfs "$r/run"
	mount -t tmpfs tmpfs "$r/tmp"
	# One allocator of QEMU uids with the host's sandboxes (runtime/vm.c).
	if [ -d /run/boxlite/uids ]; then
		mkdir -p "$r/run/boxlite/uids" && mount --bind /run/boxlite/uids "$r/run/boxlite/uids"
	fi
}
unmount_root() {
	r=$1
	mountpoint -q "$r" && umount -R -l "$r"
	return 0
}

# The root: debootstrap minbase (cached by suite and mirror), then, with
# apt-get in the root and services kept from starting by a policy-rc.d that
# stays, what the packages depend on, so dpkg -i needs no network (cached by
# the hash of that package list): a dependency change costs an apt-get run,
# not a debootstrap.
make_root() {
	root=$1
	deps=$(for d in $(debs); do dpkg-deb -f "$d" Depends; done | tr ',' '\n' |
		sed 's/(.*)//; s/:any//; s/|.*//; s/ //g' | grep -v '^$' | sort -u | grep -vxF "$(echo "$OURS" | tr ' ' '\n')")
	pkgs=$(printf '%s\n' $deps pkg-config | sort -u | tr '\n' ' ' | sed 's/ $//')
	base=$CACHE/$SUITE-minbase-$(printf '%s %s\n' "$SUITE" "$MIRROR" | sha256sum | cut -c1-12).tar.zst
	tarball=$CACHE/$SUITE-minbase-deps-$(printf '%s %s %s\n' "$SUITE" "$MIRROR" "$pkgs" | sha256sum | cut -c1-16).tar.zst
	mkdir -p "$root" "$CACHE"
	if [ -s "$tarball" ]; then
		echo "root: cached $tarball"
		tar -C "$root" --zstd -xf "$tarball"
		return 0
	fi
	start=$(date +%s)
	if [ -s "$base" ]; then
		echo "root: cached $base"
		tar -C "$root" --zstd -xf "$base"
	else
		echo "root: debootstrap --variant=minbase $SUITE ($MIRROR)"
		if ! debootstrap --variant=minbase "$SUITE" "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1; then
			tail -5 "$work/debootstrap.log"
			grep -qiE 'could not|failed to|unable to' "$work/debootstrap.log" &&
				skip "debootstrap could not reach $MIRROR"
			fail "debootstrap failed"
			return 1
		fi
		printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
		chmod 0755 "$root/usr/sbin/policy-rc.d"
		in_root apt-get clean
		echo "root: debootstrap took $(($(date +%s) - start)) s"
		tar -C "$root" --zstd -cf "$base.tmp" . && mv "$base.tmp" "$base"
	fi
	echo "root: apt-get install $pkgs"
	mount -t proc proc "$root/proc"
	# shellcheck disable=SC2086
	in_root sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $pkgs" \
		>"$work/apt.log" 2>&1
	rc=$?
	umount "$root/proc"
	if [ "$rc" -ne 0 ]; then
		tail -5 "$work/apt.log"
		grep -qiE 'could not resolve|failed to fetch|temporary failure' "$work/apt.log" &&
			skip "apt-get in the root could not reach $MIRROR"
		fail "apt-get install in the root failed"
		return 1
	fi
	in_root apt-get clean
	rm -rf "$root/var/lib/apt/lists/"*
	echo "root: built in $(($(date +%s) - start)) s"
	tar -C "$root" --zstd -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
}

in_root() { chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LC_ALL=C.UTF-8 "$@"; }

case $what in
build)
	command -v dpkg-buildpackage >/dev/null && command -v dh >/dev/null ||
		skip "dpkg-buildpackage or debhelper missing (packaging/install-deps.sh)"
	[ -s "$build/vmlinux" ] || skip "$build/vmlinux missing (make all)"
	before=$(git -C "$src" status --porcelain 2>/dev/null)
	start=$(date +%s)
	make -C "$src" BUILD="$build" deb >"$work/make-deb.log" 2>&1 || { tail -30 "$work/make-deb.log"; fail "make deb failed"; }
	echo "make deb: $(($(date +%s) - start)) s"
	have_debs || fail "make deb did not produce every package: $(ls "$deb")"
	[ "$(git -C "$src" status --porcelain 2>/dev/null)" = "$before" ] || fail "make deb changed the checkout"
	for d in $(debs); do echo "  $(basename "$d"): $(dpkg-deb -f "$d" Depends)"; done
	;;
lintian)
	have_debs || skip "no packages in $deb (the build case failed or was skipped)"
	command -v lintian >/dev/null || skip "lintian missing (packaging/install-deps.sh)"
	lintian --tag-display-limit 0 $(debs) >"$work/lintian.log" 2>&1
	cat "$work/lintian.log"
	n=$(grep -c '^E: ' "$work/lintian.log")
	echo "lintian: $n errors, $(grep -c '^W: ' "$work/lintian.log") warnings"
	[ "$n" -eq 0 ] || fail "lintian found $n errors"
	;;
chroot)
	have_debs || skip "no packages in $deb (the build case failed or was skipped)"
	command -v debootstrap >/dev/null || skip "debootstrap missing"
	root=$work/root
	make_root "$root" || exit 1
	trap 'unmount_root "$root"' EXIT
	trap 'exit 130' INT TERM
	mount_root "$root"
	# What the root holds before: every path, for the purge check.
	list() { (cd "$root" && find . -xdev \( -path ./proc -o -path ./sys -o -path ./dev -o -path ./run -o -path ./tmp \) -prune -o -print | sort); }
	list >"$work/before"
	mkdir -p "$root/debs" && cp $(debs) "$root/debs/"
	in_root sh -c 'dpkg -i /debs/*.deb' >"$work/dpkg-i.log" 2>&1 || { cat "$work/dpkg-i.log"; fail "dpkg -i failed"; }
	rm -rf "$root/debs"
	v=$(in_root boxlite --version) && echo "chroot: $v" || fail "boxlite --version"
	in_root boxlite info >"$work/info" 2>&1 && sed 's/^/  /' "$work/info" || { cat "$work/info"; fail "boxlite info"; }
	grep -q /usr/lib/boxlite/vmlinux "$work/info" || fail "boxlite info does not name /usr/lib/boxlite/vmlinux"
	m=$(in_root pkg-config --modversion boxlite) && echo "chroot: pkg-config --modversion boxlite: $m" || fail "pkg-config --modversion boxlite"
	[ "$m" = "${v#boxlite }" ] || fail "pkg-config says '$m', boxlite --version '$v'"
	in_root pkg-config --cflags --libs boxlite | grep -q -- -lboxlite || fail "pkg-config --libs boxlite"
	in_root python3 -c 'import boxlite, boxlite._ffi as f; print("python3:", f.library().path)' || fail "python3 -c 'import boxlite'"
	in_root man -w boxlite-run >/dev/null 2>&1 || [ -f "$root/usr/share/man/man1/boxlite-run.1.gz" ] || fail "no boxlite-run(1)"
	[ -f "$root/usr/share/bash-completion/completions/boxlite" ] || fail "no bash completion"
	# A VM from the dpkg-installed files and the root's own QEMU and libvirt.
	# libvirt's QEMU mount namespace cannot build its /dev inside a chroot
	# (QEMU: "Could not open /dev/urandom"); the host case boots the packages.
	if [ -n "${BOXLITE_DEB_CHROOT_VM:-}" ] && [ -d "$build/test-images/busybox-rootfs" ]; then
		cp -a "$build/test-images/busybox-rootfs" "$root/busybox"
		if out=$(in_root boxlite run --rootfs /busybox --memory 128 -- sh -c 'echo deb-ok' 2>&1); then
			[ "$out" = deb-ok ] && echo "chroot: boxlite run: $out" || fail "boxlite run printed '$out'"
		else
			echo "$out"
			fail "boxlite run --rootfs /busybox in the chroot failed"
		fi
		rm -rf "$root/busybox"
	else
		echo "chroot: no VM here (BOXLITE_DEB_CHROOT_VM=1 tries one; libvirt's namespace needs a real /dev)"
	fi
	in_root sh -c "dpkg --purge $OURS" >"$work/purge.log" 2>&1 || { cat "$work/purge.log"; fail "dpkg --purge failed"; }
	in_root dpkg -l $OURS 2>/dev/null | grep -E '^[a-z]i' && fail "packages still installed"
	unmount_root "$root"
	mount_root "$root"
	list >"$work/after"
	if ! diff "$work/before" "$work/after" >"$work/diff"; then
		cat "$work/diff"
		fail "purge left the root different from before the install"
	else
		echo "chroot: purge left exactly the files that were there before ($(wc -l <"$work/before") paths)"
	fi
	unmount_root "$root"
	trap - EXIT INT TERM
	grep -qE " $root[ /]" /proc/self/mounts || rm -rf --one-file-system "$root"
	;;
host)
	have_debs || skip "no packages in $deb (the build case failed or was skipped)"
	root=$work/root
	rm -rf --one-file-system "$root" && mkdir -p "$root"
	# Each VM's QEMU runs under a uid of its own: it must reach the guest files.
	chmod 0755 "$work" "$root"
	for d in $(debs); do dpkg-deb -x "$d" "$root"; done
	pcdir=$root/usr/lib/$(dpkg-architecture -qDEB_HOST_MULTIARCH)/pkgconfig
	export PKG_CONFIG_SYSROOT_DIR=$root PKG_CONFIG_LIBDIR=$pcdir
	cat >"$work/prog.c" <<-'EOF'
		/* A sandbox from the packaged libboxlite: runs argv[1..] in it. */
		#include <boxlite/boxlite.h>
		#include <stdio.h>
		int main(int argc, char **argv)
		{
			bl_error_t err = BL_ERROR_INIT;
			bl_sandbox_options o = {.rootfs = argv[1], .memory_mib = 128, .args = (const char *const *)argv + 2};
			bl_sandbox *sb = NULL;
			bl_process *p = NULL;
			bl_exit ex;
			char buf[4096];
			ssize_t n = 0;
			if (argc < 3)
				return 2;
			bl_host_prepare();
			int r = bl_sandbox_create(&o, &sb, &err);
			if (r == 0)
				r = bl_sandbox_start(sb, &p, &err);
			while (r == 0 && (n = bl_process_read(p, 1, buf, sizeof(buf), &err)) > 0)
				fwrite(buf, 1, (size_t)n, stdout);
			if (r == 0 && n < 0)
				r = -1;
			if (r == 0)
				r = bl_process_wait(p, &ex, &err);
			if (r == 0)
				printf("exit %d\n", ex.status);
			else
				fprintf(stderr, "prog: %s\n", err.msg);
			if (r == 0)
				bl_sandbox_stop(sb, &err);
			bl_process_free(p);
			bl_sandbox_destroy(sb);
			return r < 0 ? 125 : 0;
		}
	EOF
	# shellcheck disable=SC2046
	cc -std=gnu17 -Wall -Werror -o "$work/prog" "$work/prog.c" $(pkg-config --cflags --libs boxlite) ||
		{ fail "cc \$(pkg-config --cflags --libs boxlite) prog.c"; exit 1; }
	echo "host: built with $(pkg-config --cflags --libs boxlite)"
	img=$build/test-images/busybox-rootfs
	[ -d "$img" ] || skip "$img missing (make test-images)"
	export BOXLITE_STATE_DIR=$work/state BOXLITE_KERNEL=$root/usr/lib/boxlite/vmlinux BOXLITE_INITRD=$root/usr/lib/boxlite/initramfs.cpio
	out=$(LD_LIBRARY_PATH=$(dirname "$pcdir") "$work/prog" "$img" sh -c 'echo from-c; exit 7' 2>&1)
	echo "host: prog: $(echo "$out" | tr '\n' ' ')"
	[ "$out" = "$(printf 'from-c\nexit 7')" ] || fail "the C program did not run its command in a sandbox"
	LD_LIBRARY_PATH=$(dirname "$pcdir") ldd "$work/prog" | grep -q "libboxlite.so.0 => $root" || fail "prog is not linked to the packaged libboxlite.so.0"
	unset BOXLITE_KERNEL BOXLITE_INITRD
	# The packaged CLI finds its guest in its own prefix (usr/lib/boxlite).
	out=$(env -u BOXLITE_BUILD "$root/usr/bin/boxlite" run --rootfs "$img" -- true 2>&1) && echo "host: boxlite run -- true: ok" ||
		{ echo "$out"; fail "the packaged boxlite run -- true"; }
	env -u BOXLITE_BUILD "$root/usr/bin/boxlite" info | grep -q "$root/usr/lib/boxlite/vmlinux" || fail "the packaged boxlite does not use its own guest kernel"
	# The packaged shim through a private containerd (tests/shim/lib.sh).
	if command -v containerd >/dev/null && command -v ctr >/dev/null && [ -f "$build/test-images/busybox-docker.tar" ]; then
		mkdir -p "$work/bin"
		ln -sf "$root/usr/bin/containerd-shim-boxlite-v2" "$work/bin/"
		ln -sfn "$build/test-images" "$work/bin/test-images"
		BOXLITE_BUILD=$work/bin
		. "$src/tests/shim/lib.sh"
		ctrd_start "$work/ctrd" || fail "containerd did not start"
		out=$(c run --rm --runtime io.containerd.boxlite.v2 "$IMAGE" deb-ctr sh -c 'echo hello from the packaged shim; exit 3' 2>&1)
		rc=$?
		echo "host: ctr run: $out (exit $rc)"
		[ "$rc" -eq 3 ] && [ "$out" = "hello from the packaged shim" ] || fail "ctr run --runtime io.containerd.boxlite.v2 with the packaged shim"
		ctrd_stop
		umount -R "$work/ctrd/root" 2>/dev/null
	else
		echo "SKIP: containerd, ctr or the busybox test image missing: no ctr run"
	fi
	left=$(pgrep -af "$work" | grep -E 'qemu|virtiofsd|containerd|/prog ' | grep -v deb-test.sh)
	[ -z "$left" ] || { echo "$left"; fail "processes of the test left"; }
	grep -q " $work/" /proc/self/mounts || rm -rf --one-file-system "$root" "$work/ctrd" "$work/state" "$work/bin"
	;;
*)
	echo "usage: deb-test.sh SRC BUILD WORK build|lintian|chroot|host" >&2
	exit 2
	;;
esac
[ "$fails" -eq 0 ]
