#!/bin/sh
# Builds boxlite's default image (Debian 12 minbase + Python 3 with its
# standard library, compiled to bytecode, + a shell, non-root user `sandbox`
# uid 1000) and installs it into the image store as the names `default` and
# `python:slim`; and a busybox image (Debian's busybox-static and its applet
# links) as `busybox` and `busybox:latest`. Both are plain directory images.
#
#   packaging/build-default-image.sh [STORE_DIR]
#
# STORE_DIR defaults to $BOXLITE_IMAGE_DIR, else /var/lib/boxlite/images. The
# store layout is the one runtime/image.c reads:
#   STORE/images/<key>/rootfs       the root filesystem (immutable once in place)
#   STORE/images/<key>/config.json  the image config (Env, Cmd, WorkingDir, User)
#   STORE/names/default -> ../images/<key>
#   STORE/lock                      flock held while the name table changes
# <key> is the sha256 of this script (for busybox: of this script and the
# busybox binary), so a rerun with an unchanged script is a no-op, and
# changing the script rebuilds. Needs root and the Debian mirror.
set -eu

STORE=${1:-${BOXLITE_IMAGE_DIR:-/var/lib/boxlite/images}}
SUITE=bookworm
PACKAGES=python3-minimal,python3
NAMES="default python:slim"
BUSYBOX_NAMES="busybox busybox:latest"
BUSYBOX=${BUSYBOX:-/bin/busybox}
SELF=$(readlink -f "$0")
KEY=$(sha256sum "$SELF" | cut -c1-64)

mkdir -p "$STORE"
chmod 0700 "$STORE"
mkdir -p "$STORE/images" "$STORE/names" "$STORE/tmp" "$STORE/locks"

# Every name in $2.. points at images/$1.
names_point_at() {
	for n in $(echo "$@" | cut -d' ' -f2-); do
		[ "$(readlink "$STORE/names/$n" 2>/dev/null)" = "../images/$1" ] || return 1
	done
	[ -d "$STORE/images/$1/rootfs" ]
}

# install_image STAGE KEY NAME...: moves STAGE to images/KEY under the store
# lock, switches each name atomically, and drops the images the names used
# to point at when no other name uses them.
install_image() {
	stage=$1 key=$2
	shift 2
	exec 9>"$STORE/lock"
	flock 9
	olds=""
	for n in "$@"; do
		olds="$olds $(readlink "$STORE/names/$n" 2>/dev/null || true)"
	done
	if [ -e "$STORE/images/$key" ]; then
		mv "$STORE/images/$key" "$STORE/tmp/trash.$$"
		rm -rf "$STORE/tmp/trash.$$"
	fi
	mv "$stage" "$STORE/images/$key"
	for n in "$@"; do
		ln -sfn "../images/$key" "$STORE/names/.new.$$"
		mv -T "$STORE/names/.new.$$" "$STORE/names/$n"
	done
	for old in $olds; do
		[ "$old" = "../images/$key" ] && continue
		find "$STORE/names" -maxdepth 1 -type l -lname "$old" | grep -q . && continue
		old_key=${old#../images/}
		case "$old_key" in
		*/* | "") ;;
		*)
			# A running sandbox's read-only view still shows it: leave it
			# (`boxlite` image gc or the next rebuild removes it).
			if grep -qs -- "/images/$old_key/rootfs" /proc/[0-9]*/mountinfo; then
				echo "image $old_key: still in use by a sandbox, kept"
			else
				rm -rf "$STORE/images/$old_key"
			fi
			;;
		esac
	done
	flock -u 9
	exec 9>&-
}

# ---------------------------------------------------------------- busybox
build_busybox() {
	[ -x "$BUSYBOX" ] || { echo "busybox image: $BUSYBOX missing (busybox-static)" >&2; exit 1; }
	bkey=$(cat "$SELF" "$BUSYBOX" | sha256sum | cut -c1-64)
	# shellcheck disable=SC2086
	if names_point_at "$bkey" $BUSYBOX_NAMES; then
		echo "busybox image: up to date ($STORE/images/$bkey)"
		return 0
	fi
	bstage=$(mktemp -d "$STORE/tmp/busybox.XXXXXX")
	trap 'rm -rf "$bstage"' EXIT
	trap 'exit 1' INT TERM
	B="$bstage/rootfs"
	mkdir -p "$B/bin" "$B/etc" "$B/tmp" "$B/root" "$B/home/sandbox" "$B/proc" "$B/sys" "$B/dev"
	cp "$BUSYBOX" "$B/bin/busybox"
	for applet in $("$BUSYBOX" --list); do
		[ "$applet" = busybox ] || ln -sf busybox "$B/bin/$applet"
	done
	mkdir -p "$B/usr"
	ln -s ../bin "$B/usr/bin"
	ln -s bin "$B/sbin"
	printf 'root:x:0:0:root:/root:/bin/sh\nsandbox:x:1000:1000:boxlite sandbox:/home/sandbox:/bin/sh\n' >"$B/etc/passwd"
	printf 'root:x:0:\nsandbox:x:1000:\n' >"$B/etc/group"
	echo boxlite >"$B/etc/hostname"
	: >"$B/etc/resolv.conf"
	chmod 1777 "$B/tmp"
	chmod 0700 "$B/root"
	chown 1000:1000 "$B/home/sandbox"
	cat >"$bstage/config.json" <<'JSON'
{
  "Env": ["PATH=/bin", "HOME=/home/sandbox"],
  "Cmd": ["/bin/sh"],
  "WorkingDir": "/home/sandbox",
  "User": "1000:1000"
}
JSON
	printf 'busybox image built by packaging/build-default-image.sh from %s\n' "$BUSYBOX" >"$bstage/source"
	chmod 0755 "$bstage"
	# shellcheck disable=SC2086
	install_image "$bstage" "$bkey" $BUSYBOX_NAMES
	trap - EXIT
	echo "busybox image: $STORE/images/$bkey/rootfs ($BUSYBOX_NAMES)"
}
build_busybox

# shellcheck disable=SC2086
if names_point_at "$KEY" $NAMES; then
	echo "default image: up to date ($STORE/images/$KEY)"
	exit 0
fi

# The first Debian mirror apt is configured with (one-line or deb822 format).
mirror() {
	m=""
	if [ -f /etc/apt/sources.list ]; then
		m=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { print $i; exit } }' /etc/apt/sources.list)
	fi
	if [ -z "$m" ]; then
		m=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
			awk '/^URIs:/ && $2 !~ /security/ { print $2; exit }')
	fi
	echo "${m:-http://deb.debian.org/debian}"
}

START=$(date +%s)
STAGE=$(mktemp -d "$STORE/tmp/default.XXXXXX")
cleanup() { rm -rf "$STAGE"; }
trap cleanup EXIT
trap 'exit 1' INT TERM

MIRROR=$(mirror)
echo "default image: debootstrap $SUITE from $MIRROR"
# python3-minimal alone lacks most of the standard library (no json, no
# subprocess): python3 adds it for about 15 MB, which code sandboxes need.
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$STAGE/rootfs" "$MIRROR" \
	>"$STAGE/debootstrap.log" 2>&1 || {
	tail -n 30 "$STAGE/debootstrap.log" >&2
	echo "default image: debootstrap failed" >&2
	exit 1
}

R="$STAGE/rootfs"
# Trim what a sandbox never needs: package lists and caches, docs, man pages,
# locales other than C, logs.
rm -rf "$R"/var/lib/apt/lists/* "$R"/var/cache/apt/* "$R"/var/cache/debconf/*-old \
	"$R"/usr/share/doc/* "$R"/usr/share/man/* "$R"/usr/share/info/* \
	"$R"/usr/share/lintian "$R"/usr/share/linda "$R"/usr/share/locale/* \
	"$R"/usr/share/i18n/locales/* "$R"/var/log/* "$R"/tmp/* "$R"/var/tmp/* \
	"$R"/debootstrap
find "$R/usr/lib" -name __pycache__ -type d -prune -exec rm -rf {} +
# `python` as well as `python3` (what python-is-python3 does), for code that says so.
[ -e "$R/usr/bin/python" ] || ln -s python3 "$R/usr/bin/python"
# Bytecode for the whole standard library, compiled by the image's own
# interpreter: under TCG `import asyncio` takes 3.4 s from source, 0.74 s
# from bytecode, and the image is read-only in sandboxes (the overlay would
# lose what a sandbox compiles).
chroot "$R" /usr/bin/python3 -m compileall -q /usr/lib/python3 /usr/lib/python3.11 \
	>"$STAGE/compileall.log" 2>&1 || {
	tail -n 20 "$STAGE/compileall.log" >&2
	echo "default image: compileall failed" >&2
	exit 1
}
rm -f "$STAGE/compileall.log"
# Same policy as runtime/image.c for unpacked images: no setuid/setgid files
# in the host-side store (sandboxes run with no_new_privileges anyway), no
# device nodes (the guest mounts devtmpfs).
find "$R" -xdev -type f -perm /6000 -exec chmod ug-s {} +
find "$R/dev" -mindepth 1 -delete

# The unprivileged user sandboxed code runs as by default.
grep -q '^sandbox:' "$R/etc/group" || echo 'sandbox:x:1000:' >>"$R/etc/group"
grep -q '^sandbox:' "$R/etc/passwd" ||
	echo 'sandbox:x:1000:1000:boxlite sandbox:/home/sandbox:/bin/sh' >>"$R/etc/passwd"
grep -q '^sandbox:' "$R/etc/shadow" || echo 'sandbox:!:19000::::::' >>"$R/etc/shadow"
mkdir -p "$R/home/sandbox"
chown 1000:1000 "$R/home/sandbox"
chmod 0755 "$R/home/sandbox"
echo boxlite >"$R/etc/hostname"
: >"$R/etc/resolv.conf"

cat >"$STAGE/config.json" <<'JSON'
{
  "Env": [
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME=/home/sandbox",
    "LANG=C.UTF-8",
    "PYTHONDONTWRITEBYTECODE=1"
  ],
  "Cmd": ["/bin/sh"],
  "WorkingDir": "/home/sandbox",
  "User": "1000:1000"
}
JSON
printf 'default image built by packaging/build-default-image.sh (%s, %s)\n' "$SUITE" "$MIRROR" \
	>"$STAGE/source"
rm -f "$STAGE/debootstrap.log"
chmod 0755 "$STAGE"

# shellcheck disable=SC2086
install_image "$STAGE" "$KEY" $NAMES
trap - EXIT
SIZE=$(du -sh "$STORE/images/$KEY/rootfs" | cut -f1)
echo "default image: $STORE/images/$KEY/rootfs ($SIZE, $(($(date +%s) - START)) s; names: $NAMES)"
