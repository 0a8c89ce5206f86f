#!/bin/sh
# Packs the guest agent as /init into an uncompressed newc initramfs
# (uncompressed: decompression is slow under TCG and the agent is small).
# Usage: mkinitramfs.sh AGENT_BINARY OUTPUT
set -eu
agent=${1:?usage: mkinitramfs.sh AGENT OUTPUT}
out=$(realpath -m "${2:?usage: mkinitramfs.sh AGENT OUTPUT}")
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT INT TERM
mkdir -p "$stage/dev" "$stage/proc" "$stage/sys" "$stage/run" "$stage/tmp" "$stage/mnt"
install -m 0755 "$agent" "$stage/init"
strip "$stage/init"
# Reproducible: fixed owner and mtime, sorted names.
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort |
	cpio --quiet -o -H newc -R 0:0 --reproducible > "$out.tmp")
mv "$out.tmp" "$out"
