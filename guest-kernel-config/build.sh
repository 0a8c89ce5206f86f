#!/bin/sh
# Builds the boxlite guest kernel (an uncompressed vmlinux with a PVH entry)
# from Debian's linux-source-6.1 package plus boxlite.config, and caches it
# outside the work tree keyed by the fragment, this script and the source
# package version. A cached build is reused in seconds.
#
# Usage: build.sh OUTPUT_VMLINUX
# Env:   BOXLITE_KERNEL_CACHE (default /var/cache/boxlite/kernel), JOBS
set -eu

out=${1:?usage: build.sh OUTPUT_VMLINUX}
here=$(cd "$(dirname "$0")" && pwd)
cache=${BOXLITE_KERNEL_CACHE:-/var/cache/boxlite/kernel}
tarball=/usr/src/linux-source-6.1.tar.xz
frag=$here/boxlite.config

die() { echo "build.sh: $*" >&2; exit 1; }

[ -r "$tarball" ] || die "$tarball missing: install the linux-source-6.1 package (make deps)"
srcver=$(dpkg-query -W -f='${Version}' linux-source-6.1 2>/dev/null) || die "linux-source-6.1 is not installed"
key=$( (cat "$frag" "$0"; echo "$srcver") | sha256sum | cut -c1-16)
dir=$cache/$key

if [ -s "$dir/vmlinux" ]; then
	echo "guest kernel: cached $dir/vmlinux (key $key)"
else
	echo "guest kernel: building $key from linux-source-6.1 $srcver (takes ~10 min on 2 cores)"
	mkdir -p "$cache"
	work=$(mktemp -d "$cache/build.XXXXXX")
	trap 'rm -rf "$work"' EXIT INT TERM
	tar -C "$work" -xf "$tarball"
	src=$work/linux-source-6.1
	make -s -C "$src" tinyconfig
	"$src/scripts/kconfig/merge_config.sh" -m -O "$src" "$src/.config" "$frag" >/dev/null
	make -s -C "$src" olddefconfig
	# Every option the fragment asks for must have survived olddefconfig.
	missing=0
	while IFS= read -r line; do
		case "$line" in
		CONFIG_*=*) grep -qxF "$line" "$src/.config" || { echo "lost: $line" >&2; missing=1; } ;;
		"# CONFIG_"*" is not set")
			opt=${line#\# }; opt=${opt%% *}
			if grep -q "^$opt=" "$src/.config"; then echo "still set: $opt" >&2; missing=1; fi ;;
		esac
	done < "$frag"
	[ "$missing" = 0 ] || die "required kernel options did not survive olddefconfig (see above)"
	make -s -C "$src" -j"${JOBS:-$(nproc)}" vmlinux
	mkdir -p "$dir.tmp"
	cp "$src/vmlinux" "$dir.tmp/vmlinux"
	strip --strip-debug "$dir.tmp/vmlinux" 2>/dev/null || true
	cp "$src/.config" "$dir.tmp/config"
	rm -rf "$dir"
	mv "$dir.tmp" "$dir"
	echo "guest kernel: built $dir/vmlinux"
fi
mkdir -p "$(dirname "$out")"
cp "$dir/vmlinux" "$out.tmp"
mv "$out.tmp" "$out"
