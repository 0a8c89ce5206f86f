#!/bin/sh
# Builds boxlite's default image (Debian 12 minbase + Python 3 with its
# standard library + a shell, non-root user `sandbox` uid 1000) and installs it into the image
# store as the name `default`, as a plain directory image.
#
#   packaging/build-default-image.sh [STORE_DIR]
#
# STORE_DIR defaults to $BOXLITE_IMAGE_DIR, else /var/lib/boxlite/images. The
# store layout is the one runtime/image.c reads:
#   STORE/images/<key>/rootfs       the root filesystem (immutable once in place)
#   STORE/images/<key>/config.json  the image config (Env, Cmd, WorkingDir, User)
#   STORE/names/default -> ../images/<key>
#   STORE/lock                      flock held while the name table changes
# <key> is the sha256 of this script, so a rerun with an unchanged script is a
# no-op, and changing the script rebuilds. Needs root and the Debian mirror.
set -eu

STORE=${1:-${BOXLITE_IMAGE_DIR:-/var/lib/boxlite/images}}
SUITE=bookworm
PACKAGES=python3-minimal,python3
SELF=$(readlink -f "$0")
KEY=$(sha256sum "$SELF" | cut -c1-64)

mkdir -p "$STORE"
chmod 0700 "$STORE"
mkdir -p "$STORE/images" "$STORE/names" "$STORE/tmp" "$STORE/locks"

if [ -d "$STORE/images/$KEY/rootfs" ] && [ "$(readlink "$STORE/names/default" 2>/dev/null)" = "../images/$KEY" ]; then
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

# Install under the store lock: move into place, then switch the name
# atomically; drop the previous default image when no other name uses it.
exec 9>"$STORE/lock"
flock 9
OLD=$(readlink "$STORE/names/default" 2>/dev/null || true)
if [ -e "$STORE/images/$KEY" ]; then
	mv "$STORE/images/$KEY" "$STORE/tmp/trash.$$"
	rm -rf "$STORE/tmp/trash.$$"
fi
mv "$STAGE" "$STORE/images/$KEY"
ln -sfn "../images/$KEY" "$STORE/names/.default.$$"
mv -T "$STORE/names/.default.$$" "$STORE/names/default"
if [ -n "$OLD" ] && [ "$OLD" != "../images/$KEY" ]; then
	if ! find "$STORE/names" -maxdepth 1 -type l -lname "$OLD" | grep -q .; then
		old_key=${OLD#../images/}
		case "$old_key" in
		*/* | "") ;;
		*) rm -rf "$STORE/images/$old_key" ;;
		esac
	fi
fi
flock -u 9

SIZE=$(du -sh "$STORE/images/$KEY/rootfs" | cut -f1)
echo "default image: $STORE/images/$KEY/rootfs ($SIZE, $(($(date +%s) - START)) s)"
