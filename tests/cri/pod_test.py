#!/usr/bin/python3
"""Drives containerd's CRI plugin as kubelet does, over a CRI .proto of our
own (tests/cri/cri.proto, stubs generated here with grpc_tools): one pod with
RuntimeHandler HANDLER, two containers, ExecSync in each, ContainerStatus exit
codes, then StopPodSandbox and RemovePodSandbox. Prints one observation per
line (the same lines for runc and boxlite, ids and times left out) and extra
facts after a '#'.

    pod_test.py SOCKET HANDLER IMAGE
"""
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def load_stubs():
    out = tempfile.mkdtemp(prefix="boxlite-cri-stubs-")
    subprocess.run([sys.executable, "-m", "grpc_tools.protoc", "-I", HERE,
                    "--python_out=" + out, "--grpc_python_out=" + out,
                    os.path.join(HERE, "cri.proto")], check=True)
    sys.path.insert(0, out)
    import cri_pb2
    import cri_pb2_grpc
    return cri_pb2, cri_pb2_grpc, out


def main():
    sock, handler, image = sys.argv[1], sys.argv[2], sys.argv[3]
    pb, rpc, stubs = load_stubs()
    import grpc
    ch = grpc.insecure_channel("unix://" + sock)
    rt = rpc.RuntimeServiceStub(ch)
    img = rpc.ImageServiceStub(ch)
    T = 120

    def say(*a):
        print(*a, flush=True)

    v = rt.Version(pb.VersionRequest(version="v1"), timeout=T)
    say("# runtime", v.runtime_name, v.runtime_version, v.runtime_api_version)
    st = img.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=image)), timeout=T)
    say("image present:", bool(st.image.id))

    uid = "uid-%s-%d" % (handler, os.getpid())
    meta = pb.PodSandboxMetadata(name="pod-" + handler, uid=uid, namespace="boxlite-test")
    logdir = tempfile.mkdtemp(prefix="boxlite-cri-logs-")
    # The node's network (CRI's NODE mode): containerd 1.6 wants an IP from CNI
    # for a pod network, which a loopback-only CNI configuration cannot give.
    ns = pb.NamespaceOption(network=pb.NODE)
    pconf = pb.PodSandboxConfig(metadata=meta, hostname="", log_directory=logdir,
                                linux=pb.LinuxPodSandboxConfig(
                                    security_context=pb.LinuxSandboxSecurityContext(
                                        namespace_options=ns)))
    pod = rt.RunPodSandbox(pb.RunPodSandboxRequest(config=pconf, runtime_handler=handler),
                           timeout=T).pod_sandbox_id
    ps = rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod), timeout=T).status
    say("pod state:", pb.PodSandboxState.Name(ps.state), "handler:", ps.runtime_handler)

    def create(name, cmd):
        cc = pb.ContainerConfig(metadata=pb.ContainerMetadata(name=name),
                                image=pb.ImageSpec(image=image), command=cmd,
                                envs=[pb.KeyValue(key="WHO", value=name)],
                                log_path=name + ".log",
                                linux=pb.LinuxContainerConfig(
                                    security_context=pb.LinuxContainerSecurityContext(
                                        namespace_options=ns)))
        cid = rt.CreateContainer(pb.CreateContainerRequest(pod_sandbox_id=pod, config=cc,
                                                           sandbox_config=pconf),
                                 timeout=T).container_id
        rt.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=T)
        return cid

    def status(cid):
        return rt.ContainerStatus(pb.ContainerStatusRequest(container_id=cid), timeout=T).status

    c1 = create("one", ["sh", "-c", "echo one started; exec sleep 1000"])
    c2 = create("two", ["sh", "-c", "echo two started; sleep 3; exit 3"])
    for name, cid in (("one", c1), ("two", c2)):
        r = rt.ExecSync(pb.ExecSyncRequest(container_id=cid,
                                           cmd=["sh", "-c", "echo $WHO; exit 4"],
                                           timeout=60), timeout=T)
        say("exec in %s: rc=%d out=%r err=%r" % (name, r.exit_code, r.stdout.decode(),
                                                 r.stderr.decode()))
    say("one state:", pb.ContainerState.Name(status(c1).state))
    # A resize as kubelet does it (UpdateContainerResources -> the shim's
    # Update): the container's own cgroup shows the new limits.
    rt.UpdateContainerResources(pb.UpdateContainerResourcesRequest(
        container_id=c1, linux=pb.LinuxContainerResources(
            memory_limit_in_bytes=96 << 20, cpu_period=100000, cpu_quota=50000)), timeout=T)
    # cgroup v2 (boxlite's guest) or v1 (runc on a v1 host): the same figures.
    limits = ("if [ -r /sys/fs/cgroup/memory.max ]; then m=$(cat /sys/fs/cgroup/memory.max); "
              "set -- $(cat /sys/fs/cgroup/cpu.max); q=$1 p=$2; else "
              "m=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes); "
              "q=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us); p=$(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us); "
              "fi; echo memory=$m cpu=$q/$p")
    r = rt.ExecSync(pb.ExecSyncRequest(container_id=c1, cmd=["sh", "-c", limits], timeout=60), timeout=T)
    say("one after update: rc=%d %s%s" % (r.exit_code, r.stdout.decode().strip(), r.stderr.decode().strip()))
    # Pod members: one VM for the pod (counted by the caller while this runs).
    marker = os.environ.get("CRI_RUNNING_MARK")
    if marker:
        open(marker, "w").close()
        deadline = time.time() + 60
        while os.path.exists(marker) and time.time() < deadline:
            time.sleep(0.1)
    deadline = time.time() + 120
    while status(c2).state != pb.CONTAINER_EXITED and time.time() < deadline:
        time.sleep(0.2)
    s2 = status(c2)
    say("two:", pb.ContainerState.Name(s2.state), "exit_code=%d" % s2.exit_code,
        "finished" if s2.finished_at > s2.started_at > 0 else "times wrong")
    rt.StopContainer(pb.StopContainerRequest(container_id=c1, timeout=0), timeout=T)
    s1 = status(c1)
    say("one after stop:", pb.ContainerState.Name(s1.state), "exit_code=%d" % s1.exit_code)
    for name in ("one", "two"):
        try:
            with open(os.path.join(logdir, name + ".log")) as f:
                lines = [l.rstrip("\n").split(" ", 3)[-1] for l in f]
            say("log of %s:" % name, lines)
        except OSError as e:
            say("log of %s: missing (%s)" % (name, e.strerror))
    for cid in (c1, c2):
        rt.RemoveContainer(pb.RemoveContainerRequest(container_id=cid), timeout=T)
    rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=T)
    rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=T)
    try:
        rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=pod), timeout=T)
        say("pod still there after remove")
    except grpc.RpcError as e:
        say("pod after remove:", e.code().name)
    subprocess.run(["rm", "-rf", stubs, logdir])


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # a failed RPC: print it as an observation, fail
        details = getattr(e, "details", lambda: "")()
        print("FAILED:", type(e).__name__, details or e, flush=True)
        sys.exit(1)
