#!/bin/sh
# Installs every Debian 12 package boxlite needs to build, test and run.
# Idempotent; run as root (make deps).
set -eu
PKGS="
build-essential pkg-config clang clang-format bc flex bison libelf-dev xz-utils cpio kmod
linux-source-6.1
qemu-system-x86 qemu-utils libvirt-daemon libvirt-daemon-system libvirt-clients libvirt-dev
libxml2-dev libjson-c-dev libarchive-dev libcap-dev libprotobuf-c-dev protobuf-c-compiler
libcunit1-dev
containerd runc containernetworking-plugins python3-grpcio python3-grpc-tools
busybox-static debootstrap e2fsprogs
golang-go golang-github-containerd-ttrpc-dev
procps psmisc iproute2 util-linux
libssl-dev libcurl4-openssl-dev libmicrohttpd-dev
docker-registry skopeo apache2-utils openssl curl
nftables
python3 python3-pytest python3-pip python3-venv
chromium nodejs
dpkg-dev debhelper dh-python lintian fakeroot bash-completion man-db zstd
"
# npm: Debian's package, unless a node with its own npm is installed already.
command -v npm >/dev/null 2>&1 || PKGS="$PKGS npm"
missing=""
for p in $PKGS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
# The MCP tests' client (the official TypeScript SDK, from the npm registry)
# needs npm: Debian's package, unless the installed nodejs brings its own.
command -v npm >/dev/null 2>&1 || missing="$missing npm"
if [ -z "$missing" ]; then
	echo "deps: all installed"
	exit 0
fi
echo "deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing
# The image tests start their own registry on 127.0.0.1 with their own config;
# the package's service (every interface, port 5000) must not run.
if command -v systemctl >/dev/null 2>&1; then
	systemctl disable --now docker-registry >/dev/null 2>&1 || true
fi
