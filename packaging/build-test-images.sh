#!/bin/sh
# Builds small busybox test images without the network, from the host's
# busybox-static, in every form bl_image_resolve() accepts:
#
#   OUTDIR/busybox-rootfs/        plain rootfs directory
#   OUTDIR/busybox-oci/           OCI image layout (one gzip layer)
#   OUTDIR/busybox-oci.tar        the same layout as an OCI archive
#   OUTDIR/busybox-docker.tar     docker-archive (docker save format)
#
#   packaging/build-test-images.sh [OUTDIR]     (default: build/test-images)
#
# Output is reproducible (sorted entries, fixed mtimes, numeric owners 0/1000)
# and cached: nothing is rebuilt while this script and busybox are unchanged.
# Needs: busybox-static, tar, gzip, sha256sum. Not root.
set -eu

OUT=${1:-build/test-images}
BUSYBOX=${BUSYBOX:-/bin/busybox}
SELF=$(readlink -f "$0")

[ -x "$BUSYBOX" ] || { echo "build-test-images: $BUSYBOX missing (apt-get install busybox-static)" >&2; exit 1; }
file_is_static() { ! ldd "$1" >/dev/null 2>&1; }
file_is_static "$BUSYBOX" || { echo "build-test-images: $BUSYBOX is not static" >&2; exit 1; }

STAMP=$(cat "$SELF" "$BUSYBOX" | sha256sum | cut -c1-64)
if [ "$(cat "$OUT/.stamp" 2>/dev/null)" = "$STAMP" ]; then
	echo "test images: up to date in $OUT"
	exit 0
fi

mkdir -p "$OUT"
WORK=$(mktemp -d "$OUT/.work.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
trap 'exit 1' INT TERM

# --- rootfs: busybox plus its applet links, a passwd with root and sandbox
R="$WORK/busybox-rootfs"
mkdir -p "$R/bin" "$R/etc" "$R/tmp" "$R/root" "$R/home/sandbox" "$R/proc" "$R/sys" "$R/dev"
cp "$BUSYBOX" "$R/bin/busybox"
for applet in $("$BUSYBOX" --list); do
	[ "$applet" = busybox ] || ln -sf busybox "$R/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\nsandbox:x:1000:1000:sandbox:/home/sandbox:/bin/sh\n' >"$R/etc/passwd"
printf 'root:x:0:\nsandbox:x:1000:\n' >"$R/etc/group"
echo boxlite-test >"$R/etc/hostname"
chmod 1777 "$R/tmp"
chmod 0700 "$R/root"

# Deterministic tar of a directory's contents.
dtar() {
	tar --sort=name --mtime=@1700000000 --owner=0 --group=0 --numeric-owner \
		--format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
		-C "$1" -cf - .
}
sha() { sha256sum "$1" | cut -c1-64; }
size() { stat -c %s "$1"; }

# --- the layer, uncompressed (diff_id) and gzip (OCI blob)
dtar "$R" >"$WORK/layer.tar"
gzip -n -9 <"$WORK/layer.tar" >"$WORK/layer.tar.gz"
DIFF_ID=$(sha "$WORK/layer.tar")

# JSON below holds only fixed text, hex digests and decimal sizes: nothing to escape.
printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["/bin/sh"],"WorkingDir":"/","User":"0:0"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created_by":"boxlite build-test-images.sh"}]}' \
	"$DIFF_ID" >"$WORK/config.json"
CFG=$(sha "$WORK/config.json")

# --- OCI layout
L="$WORK/busybox-oci"
mkdir -p "$L/blobs/sha256"
LAYER=$(sha "$WORK/layer.tar.gz")
cp "$WORK/layer.tar.gz" "$L/blobs/sha256/$LAYER"
cp "$WORK/config.json" "$L/blobs/sha256/$CFG"
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s}]}' \
	"$CFG" "$(size "$WORK/config.json")" "$LAYER" "$(size "$WORK/layer.tar.gz")" >"$WORK/manifest.json"
MAN=$(sha "$WORK/manifest.json")
cp "$WORK/manifest.json" "$L/blobs/sha256/$MAN"
printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"latest"},"platform":{"architecture":"amd64","os":"linux"}}]}' \
	"$MAN" "$(size "$WORK/manifest.json")" >"$L/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' >"$L/oci-layout"
dtar "$L" >"$WORK/busybox-oci.tar"

# --- docker-archive: <id>/layer.tar, <config digest>.json, manifest.json
D="$WORK/docker"
mkdir -p "$D/$DIFF_ID"
cp "$WORK/layer.tar" "$D/$DIFF_ID/layer.tar"
echo 1.0 >"$D/$DIFF_ID/VERSION"
cp "$WORK/config.json" "$D/$CFG.json"
printf '[{"Config":"%s.json","RepoTags":["busybox:test"],"Layers":["%s/layer.tar"]}]' "$CFG" "$DIFF_ID" >"$D/manifest.json"
printf '{"busybox":{"test":"%s"}}' "$DIFF_ID" >"$D/repositories"
dtar "$D" >"$WORK/busybox-docker.tar"

# --- publish
rm -rf "$OUT/busybox-rootfs" "$OUT/busybox-oci"
mv "$R" "$OUT/busybox-rootfs"
mv "$L" "$OUT/busybox-oci"
mv "$WORK/busybox-oci.tar" "$OUT/busybox-oci.tar"
mv "$WORK/busybox-docker.tar" "$OUT/busybox-docker.tar"
echo "$STAMP" >"$OUT/.stamp"
echo "test images: $OUT (manifest sha256:$MAN)"
