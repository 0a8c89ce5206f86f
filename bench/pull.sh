#!/bin/sh
# Pull figures (never pass/fail), all against a docker-registry started here
# on 127.0.0.1 (own config and storage, a free port):
#   - `boxlite pull` of a ~100 MB image (busybox base + ~100 MB of
#     incompressible data, gzip) into an empty store: wall time and MB/s,
#     beside `skopeo copy` of the same image to a local dir in the same run;
#   - a second pull of the same image (manifest check only);
#   - disk used by two images sharing that base (blobs once) vs. the sum of
#     each pulled alone.
# Usage: pull.sh BUILD [MB]   (MB: size of the data layer, default 100)
set -eu
build=$(cd "${1:-build}" && pwd)
mb=${2:-${BENCH_PULL_MB:-100}}
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
B=$build/boxlite
for t in docker-registry skopeo python3 sha256sum gzip tar; do
	command -v $t >/dev/null 2>&1 || { echo "pull: needs $t (packaging/install-deps.sh)"; exit 0; }
done
[ -x "$B" ] || { echo "pull: build $B first"; exit 1; }

work=$(mktemp -d /tmp/boxlite-bench-pull.XXXXXX)
reg_pid=""
cleanup() {
	[ -n "$reg_pid" ] && kill "$reg_pid" 2>/dev/null && wait "$reg_pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$work/registry.yml" <<YML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$port
YML
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 &
reg_pid=$!
i=0
until python3 -c "import socket; socket.create_connection(('127.0.0.1',$port),1)" 2>/dev/null; do
	i=$((i + 1)); [ $i -gt 100 ] && { echo "pull: registry did not start"; exit 1; }
	sleep 0.1
done

sha() { sha256sum "$1" | cut -c1-64; }
size() { stat -c %s "$1"; }
dtar() { tar --sort=name --mtime=@1700000000 --owner=0 --group=0 --numeric-owner -C "$1" -cf - .; }

# An OCI layout: the busybox test rootfs as base, then one layer of dir $2.
layout() { # out data_dir tag
	out=$1 data=$2
	mkdir -p "$out/blobs/sha256"
	dtar "$imgs/busybox-rootfs" >"$work/base.tar"
	dtar "$data" >"$work/top.tar"
	gzip -n -1 <"$work/base.tar" >"$work/base.tgz"
	gzip -n -1 <"$work/top.tar" >"$work/top.tgz"
	for f in base top; do cp "$work/$f.tgz" "$out/blobs/sha256/$(sha "$work/$f.tgz")"; done
	printf '{"architecture":"amd64","os":"linux","config":{"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s","sha256:%s"]}}' \
		"$(sha "$work/base.tar")" "$(sha "$work/top.tar")" >"$work/config.json"
	cp "$work/config.json" "$out/blobs/sha256/$(sha "$work/config.json")"
	L='application/vnd.oci.image.layer.v1.tar+gzip'
	printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"%s","digest":"sha256:%s","size":%s},{"mediaType":"%s","digest":"sha256:%s","size":%s}]}' \
		"$(sha "$work/config.json")" "$(size "$work/config.json")" \
		$L "$(sha "$work/base.tgz")" "$(size "$work/base.tgz")" \
		$L "$(sha "$work/top.tgz")" "$(size "$work/top.tgz")" >"$work/manifest.json"
	cp "$work/manifest.json" "$out/blobs/sha256/$(sha "$work/manifest.json")"
	printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s}]}' \
		"$(sha "$work/manifest.json")" "$(size "$work/manifest.json")" >"$out/index.json"
	printf '{"imageLayoutVersion":"1.0.0"}' >"$out/oci-layout"
}

imgs=$work/test-images
"$top/packaging/build-test-images.sh" "$imgs" >/dev/null
mkdir -p "$work/data-big" "$work/data-small"
head -c $((mb * 1000 * 1000)) /dev/urandom >"$work/data-big/blob.bin"
echo small >"$work/data-small/hello"
layout "$work/oci-big" "$work/data-big"
layout "$work/oci-small" "$work/data-small"
skopeo copy -q --preserve-digests --dest-tls-verify=false oci:"$work/oci-big" docker://127.0.0.1:$port/bench/big:v1
skopeo copy -q --preserve-digests --dest-tls-verify=false oci:"$work/oci-small" docker://127.0.0.1:$port/bench/small:v1
bytes=$(du -sb "$work/oci-big/blobs" | cut -f1)

now() { date +%s.%N; }
el() { echo "$2 - $1" | bc; }
mbps() { echo "scale=1; $bytes / 1000000 / $1" | bc; }

export BOXLITE_IMAGE_DIR="$work/store" BOXLITE_REGISTRIES_CONF="$work/none.json"
t0=$(now); "$B" pull -q 127.0.0.1:$port/bench/big:v1; t1=$(now)
t2=$(now); "$B" pull -q 127.0.0.1:$port/bench/big:v1; t3=$(now)
t4=$(now); skopeo copy -q --src-tls-verify=false docker://127.0.0.1:$port/bench/big:v1 dir:"$work/skopeo-dir"; t5=$(now)
bp=$(el $t0 $t1) bs=$(el $t4 $t5) b2=$(el $t2 $t3)
printf 'image: %s MB compressed (2 layers)\n' "$(echo "scale=1; $bytes/1000000" | bc)"
printf 'boxlite pull (download+verify+unpack): %6.2f s  %6.1f MB/s\n' "$bp" "$(mbps $bp)"
printf 'skopeo copy to a dir (download only):  %6.2f s  %6.1f MB/s\n' "$bs" "$(mbps $bs)"
printf 'second boxlite pull (up to date):      %6.3f s\n' "$b2"

# Two images sharing the base: blobs once.
"$B" pull -q 127.0.0.1:$port/bench/small:v1
both=$(du -sb "$work/store" | cut -f1)
for r in big small; do
	BOXLITE_IMAGE_DIR="$work/store-$r" "$B" pull -q 127.0.0.1:$port/bench/$r:v1
done
alone=$(( $(du -sb "$work/store-big" | cut -f1) + $(du -sb "$work/store-small" | cut -f1) ))
printf 'two images sharing a base: %s MB in one store, %s MB pulled into separate stores (saved %s kB)\n' \
	"$(echo "scale=1; $both/1000000" | bc)" "$(echo "scale=1; $alone/1000000" | bc)" "$(( (alone - both) / 1000 ))"
