#!/bin/sh
# The CRI test: containerd's CRI plugin with a `boxlite` runtime handler
# (io.containerd.boxlite.v2) and a loopback-only CNI network, driven by
# tests/cri/pod_test.py as kubelet would; the same pod runs with runc and
# with boxlite and must show the same observations; with boxlite the pod's
# containers share ONE VM (one QEMU); nothing is left afterwards.
#   run.sh DIR
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
SRC=$(cd "$HERE/../.." && pwd)
: "${BOXLITE_BUILD:=$SRC/build}"
export BOXLITE_BUILD
. "$SRC/tests/shim/lib.sh"
DIR=$1
CRI_PAUSE_IMAGE=boxlite.test/pause:1
mkdir -p "$DIR/cni"
cat >"$DIR/cni/10-loopback.conflist" <<'EOT'
{"cniVersion": "0.4.0", "name": "boxlite-test-lo", "plugins": [{"type": "loopback"}]}
EOT
# A pause image: the busybox test image whose command waits for SIGTERM.
/usr/bin/python3 - "$BOXLITE_BUILD/test-images/busybox-docker.tar" "$DIR/pause.tar" <<'EOT'
import io, json, sys, tarfile, hashlib
src, dst = sys.argv[1], sys.argv[2]
tin = tarfile.open(src)
names = {m.name[2:] if m.name.startswith("./") else m.name: m for m in tin.getmembers()}
man = json.load(tin.extractfile(names["manifest.json"]))
cfg = json.load(tin.extractfile(names[man[0]["Config"]]))
cfg["config"]["Cmd"] = ["/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"]
data = json.dumps(cfg).encode()
name = hashlib.sha256(data).hexdigest() + ".json"
man[0]["Config"] = name
man[0]["RepoTags"] = ["boxlite.test/pause:1"]
with tarfile.open(dst, "w") as tout:
    for n, m in names.items():
        if n in ("manifest.json", "repositories", "", ".") or n.endswith(".json") and "/" not in n:
            continue
        m.name = n
        tout.addfile(m, tin.extractfile(m) if m.isfile() else None)
    for n, d in ((name, data), ("manifest.json", json.dumps(man).encode())):
        ti = tarfile.TarInfo(n)
        ti.size = len(d)
        tout.addfile(ti, io.BytesIO(d))
EOT
ctrd_start "$DIR" cri || exit 1
c -n k8s.io images import "$BOXLITE_BUILD/test-images/busybox-docker.tar" >/dev/null &&
	c -n k8s.io images import "$DIR/pause.tar" >/dev/null || { ctrd_stop; exit 1; }
sleep 1
rc=0
for h in runc boxlite; do
	mark="$DIR/running.$h"
	CRI_RUNNING_MARK=$mark /usr/bin/python3 "$HERE/pod_test.py" "$DIR/c.sock" "$h" "$IMAGE" >"$DIR/pod.$h.out" 2>&1 &
	pid=$!
	i=0
	while [ ! -e "$mark" ] && kill -0 $pid 2>/dev/null && [ $i -lt 1800 ]; do sleep 0.1; i=$((i + 1)); done
	if [ "$h" = boxlite ]; then
		# QEMU is reparented to the pod's shim (a child subreaper).
		spid=$(ps -eo pid,args | grep "^ *[0-9]* $BOXLITE_BUILD/containerd-shim-boxlite-v2 .*-address $DIR/c.sock" | awk '{print $1}' | head -n 1)
		q=$(ps -eo ppid,args | awk -v s="${spid:-none}" '$1 == s && $2 ~ /qemu-system/' | wc -l)
		echo "    QEMU processes of the pod's shim while its two containers run: $q"
		[ "$q" -eq 1 ] || { echo "  expected ONE VM for the pod, found $q"; rc=1; }
		s=$(ps -eo args | grep -c "^$BOXLITE_BUILD/containerd-shim-boxlite-v2 .*-address $DIR/c.sock")
		echo "    boxlite shims for the pod: $s"
		[ "$s" -eq 1 ] || { echo "  expected ONE shim for the pod, found $s"; rc=1; }
	fi
	rm -f "$mark"
	wait $pid || rc=1
	sed 's/^/    /' "$DIR/pod.$h.out"
done
for h in runc boxlite; do
	grep -v '^#' "$DIR/pod.$h.out" | grep -v '^QEMU\|^boxlite shims' | sed "s/handler: $h\$/handler: HANDLER/" >"$DIR/pod.$h.obs"
done
if diff -u "$DIR/pod.runc.obs" "$DIR/pod.boxlite.obs"; then
	echo "  the pod behaves under boxlite as under runc"
else
	echo "  the pod differs between runc and boxlite"
	rc=1
fi
grep -q FAILED "$DIR/pod.runc.out" "$DIR/pod.boxlite.out" && rc=1
ctrd_stop
"$SRC/tests/shim/ctr-cases.sh" "$DIR" leaks || rc=1
exit $rc
