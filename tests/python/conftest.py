"""Shared set-up of the SDK tests: real VMs under TCG through the real
libboxlite.so. Each test gets its own state directory (so leak checks look
only at its own sandboxes) and checks that nothing is left behind."""

import asyncio
import os
import shutil
import sys
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(REPO, "sdk", "python"))

BUILD = os.environ.get("BOXLITE_BUILD") or os.path.join(REPO, "build")
os.environ["BOXLITE_BUILD"] = BUILD
if not os.environ.get("BOXLITE_LIBRARY") and os.path.exists(os.path.join(BUILD, "libboxlite.so")):
    os.environ["BOXLITE_LIBRARY"] = os.path.join(BUILD, "libboxlite.so")

import boxlite  # noqa: E402

STORE = os.environ.get("BOXLITE_IMAGE_DIR", "/var/lib/boxlite/images")
SMALL = dict(memory_mb=256, disk_mb=64)


def _vm_skip_reason():
    if os.geteuid() != 0:
        return "SDK VM tests need root"
    for f in ("libboxlite.so", "vmlinux", "initramfs.cpio"):
        if not os.path.exists(os.path.join(BUILD, f)):
            return "%s/%s missing (run make)" % (BUILD, f)
    for n in ("default", "python:slim", "busybox"):
        if not os.path.exists(os.path.join(STORE, "names", n)):
            return "image %s missing (run make image)" % n
    return None


VM_SKIP = _vm_skip_reason()


def pytest_collection_modifyitems(config, items):
    if VM_SKIP is None:
        return
    print("SKIP: %s" % VM_SKIP)
    for it in items:
        if "novm" not in it.keywords:
            it.add_marker(pytest.mark.skip(reason=VM_SKIP))


def pytest_configure(config):
    config.addinivalue_line("markers", "novm: needs no VM")


def leftovers(state_dir):
    """What our sandboxes left: processes naming the state dir (QEMU's
    channel socket, virtiofsd's source), mounts below it, entries in it."""
    found = []
    needle = state_dir.encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if needle in cmd:
            found.append("process %s: %s" % (pid, cmd.replace(b"\0", b" ")[:200].decode("utf-8", "replace")))
    with open("/proc/self/mountinfo") as f:
        for line in f:
            if state_dir in line:
                found.append("mount: " + line.strip())
    if os.path.isdir(state_dir):
        for e in os.listdir(state_dir):
            found.append("state entry: " + e)
    return found


def assert_clean(state_dir, wait=20.0):
    deadline = time.monotonic() + wait
    while True:
        left = leftovers(state_dir)
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert left == [], "left behind: %s" % left


@pytest.fixture
def state_dir():
    d = tempfile.mkdtemp(prefix="boxlite-sdk-test-")
    os.chmod(d, 0o711)  # QEMU (libvirt-qemu) reaches the channel socket below it
    yield d
    try:
        assert_clean(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def opts(state_dir):
    """Keyword options for a small box in this test's state dir."""
    return dict(SMALL, state_dir=state_dir)


def run(coro, timeout=600):
    """Runs a coroutine on a fresh event loop (one per test)."""
    return asyncio.run(asyncio.wait_for(coro, timeout))
