"""Many boxes from one loop; cancellation, early exit, Ctrl-C and garbage
collection leave no QEMU, virtiofsd, mount, socket or state directory."""

import asyncio
import gc
import os
import signal
import subprocess
import sys
import textwrap
import warnings

import pytest

import boxlite
from conftest import REPO, assert_clean, leftovers, run


def test_eight_boxes_from_one_loop(state_dir):
    async def one(i):
        async with boxlite.SimpleBox(image="busybox", memory_mb=128, disk_mb=16, state_dir=state_dir) as box:
            r = await box.exec("sh", "-c", "echo box $0 $(hostname)", str(i))
            return box.id, r.stdout

    async def main():
        res = await asyncio.gather(*[one(i) for i in range(8)])
        assert [out for _, out in res] == ["box %d boxlite\n" % i for i in range(8)]
        assert len({bid for bid, _ in res}) == 8
    run(main())
    assert_clean(state_dir)


def test_cancel_while_booting_and_while_running(opts, state_dir):
    async def main():
        # Cancelled while the VM boots.
        t = asyncio.ensure_future(boxlite.SimpleBox(image="busybox", **opts).__aenter__())
        await asyncio.sleep(0.3)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        assert leftovers(state_dir) == []

        # Cancelled while a command runs inside `async with`.
        started = asyncio.Event()

        async def work():
            async with boxlite.SimpleBox(image="busybox", **opts) as box:
                started.set()
                await box.exec("sleep", "600")

        t = asyncio.ensure_future(work())
        await asyncio.wait_for(started.wait(), 120)
        await asyncio.sleep(0.5)
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        assert leftovers(state_dir) == []

        # A cancelled exec kills its process; the box lives on.
        async with boxlite.SimpleBox(image="busybox", **opts) as box:
            t = asyncio.ensure_future(box.exec("sleep", "600"))
            await asyncio.sleep(1)
            t.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t
            assert (await box.exec("echo", "ok")).stdout == "ok\n"
    run(main())


def test_early_exit_by_exception(opts, state_dir):
    class Boom(Exception):
        pass

    async def main():
        with pytest.raises(Boom):
            async with boxlite.CodeBox(**opts) as box:
                await box.run("x = 1")
                raise Boom()
        assert box.closed
        assert leftovers(state_dir) == []
    run(main())


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_and_sigterm_leave_nothing(opts, state_dir, sig):
    script = textwrap.dedent("""
        import asyncio, signal, sys
        sys.path.insert(0, %r)
        import boxlite
        signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM as Ctrl-C
        async def main():
            async with boxlite.CodeBox(memory_mb=256, state_dir=%r) as box:
                print("ready", flush=True)
                await box.run("import time\\ntime.sleep(600)")
        try:
            asyncio.run(main())
        except KeyboardInterrupt:
            sys.exit(130)
    """) % (os.path.join(REPO, "sdk", "python"), state_dir)
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, env=os.environ.copy())
    try:
        assert p.stdout.readline() == b"ready\n"
        assert len(os.listdir(state_dir)) == 1  # the box is there
        p.send_signal(sig)
        assert p.wait(120) == 130
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert_clean(state_dir)


def test_garbage_collected_box_is_destroyed_with_warning(opts, state_dir):
    async def main():
        box = boxlite.SimpleBox(image="busybox", **opts)
        await box.start()
        assert (await box.exec("true")).exit_code == 0
        assert len(os.listdir(state_dir)) == 1
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            del box
            gc.collect()
        assert any(issubclass(x.category, ResourceWarning) and "never closed" in str(x.message) for x in w)
    run(main())
    assert_clean(state_dir, wait=60)
