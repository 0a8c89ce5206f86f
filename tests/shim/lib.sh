# Shared shell helpers of the shim tests: a private containerd (own root,
# state, sockets, config) with the build tree's containerd-shim-boxlite-v2 on
# its PATH, and the busybox test image imported.
#   . tests/shim/lib.sh ; ctrd_start DIR [cri] ; c run ... ; ctrd_stop
# Everything lives under DIR; boxlite's sandbox state under DIR/bl-state.
: "${BOXLITE_BUILD:=$(pwd)/build}"
IMAGE=docker.io/library/busybox:test

ctrd_config() {
	dir=$1 cri=${2:-}
	if [ -n "$cri" ]; then
		disabled='"io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"'
	else
		disabled='"io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"'
	fi
	cat <<EOT
version = 2
root = "$dir/root"
state = "$dir/state"
disabled_plugins = [$disabled]
[grpc]
  address = "$dir/c.sock"
[ttrpc]
  address = "$dir/c.sock.ttrpc"
[debug]
  address = ""
  level = "${CTRD_LOG_LEVEL:-info}"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/opt"
EOT
	if [ -n "$cri" ]; then
		cat <<EOT
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$CRI_PAUSE_IMAGE"
  enable_selinux = false
  disable_apparmor = true
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.boxlite]
      runtime_type = "io.containerd.boxlite.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/cni"
EOT
	fi
}

c() { ctr --address "$CTRD_DIR/c.sock" "$@"; }

# ctrd_start DIR [cri]: starts containerd, waits for it, imports the image.
ctrd_start() {
	CTRD_DIR=$1
	mkdir -p "$CTRD_DIR/bl-state"
	chmod 0711 "$CTRD_DIR"
	ctrd_config "$CTRD_DIR" "${2:-}" >"$CTRD_DIR/config.toml"
	PATH="$BOXLITE_BUILD:$PATH" BOXLITE_STATE_DIR="$CTRD_DIR/bl-state" \
		setsid containerd --config "$CTRD_DIR/config.toml" >>"$CTRD_DIR/containerd.log" 2>&1 &
	CTRD_PID=$!
	echo "$CTRD_PID" >"$CTRD_DIR/containerd.pid"
	i=0
	until c version >/dev/null 2>&1; do
		i=$((i + 1))
		[ $i -gt 300 ] && { echo "containerd did not start" >&2; return 1; }
		sleep 0.1
	done
	c images ls -q | grep -qx "$IMAGE" ||
		c images import "$BOXLITE_BUILD/test-images/busybox-docker.tar" >/dev/null
}

ctrd_stop() {
	[ -n "${CTRD_PID:-}" ] || return 0
	kill "$CTRD_PID" 2>/dev/null
	i=0
	while kill -0 "$CTRD_PID" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
	kill -9 "$CTRD_PID" 2>/dev/null
	wait "$CTRD_PID" 2>/dev/null
	CTRD_PID=
}
