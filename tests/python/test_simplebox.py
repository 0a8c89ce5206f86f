"""SimpleBox: exec, exit codes, stderr, options, concurrency, timeouts, limits, streaming."""

import asyncio
import time

import pytest

import boxlite
from conftest import run


def test_exit_codes_and_stderr(opts):
    async def main():
        async with boxlite.SimpleBox(image="busybox", **opts) as box:
            assert box.id and len(box.id) <= 32
            r = await box.exec("sh", "-c", "echo out; echo err >&2; exit 7")
            assert (r.exit_code, r.stdout, r.stderr) == (7, "out\n", "err\n")
            assert not r.ok
            r = await box.exec("true")
            assert r.exit_code == 0 and r.ok and r.stdout == ""
            r = await box.exec("sh", "-c", "kill -TERM $$")
            assert r.exit_code == 128 + 15 and r.signal == 15
            r = await box.exec("no-such-command")
            assert r.exit_code == 127
            assert "no-such-command: command not found" in r.stderr
            r = await box.exec("/etc/passwd")
            assert r.exit_code == 126
            r = await box.exec("cat", stdin=b"\x00\x01binary\xff")
            assert r.stdout_bytes == b"\x00\x01binary\xff"
            r = await box.exec(["echo", "argv", "as a list"])
            assert r.stdout == "argv as a list\n"
    run(main())


def test_options_env_cwd_user(opts):
    async def main():
        async with boxlite.SimpleBox(image="busybox", env={"GREETING": "hello"}, cwd="/tmp", user="0", **opts) as box:
            r = await box.exec("sh", "-c", 'echo "$GREETING $(pwd) $(id -u)"')
            assert r.stdout == "hello /tmp 0\n"
            r = await box.exec("sh", "-c", 'echo "$GREETING $X $(pwd) $(id -u)"', env={"X": "y"}, cwd="/",
                               user=1000)
            assert r.stdout == "hello y / 1000\n"
    run(main())


def test_four_concurrent_execs(opts):
    # Each exec waits until all four have started: only finishes if they run at once.
    script = 'touch /tmp/ready.$0; i=0; while [ $(ls /tmp | grep -c ready) -lt 4 ]; do ' \
             'i=$((i+1)); [ $i -gt 600 ] && exit 9; sleep 0.1; done; echo $0'

    async def main():
        async with boxlite.SimpleBox(image="busybox", **opts) as box:
            rs = await asyncio.gather(*[box.exec("sh", "-c", script, str(i)) for i in range(4)])
            assert [r.stdout for r in rs] == ["0\n", "1\n", "2\n", "3\n"]
            assert all(r.exit_code == 0 for r in rs)
    run(main())


def test_call_timeout(opts):
    async def main():
        async with boxlite.SimpleBox(image="busybox", **opts) as box:
            t0 = time.monotonic()
            with pytest.raises(boxlite.TimeoutError) as ei:
                await box.exec("sh", "-c", "echo started; sleep 60", timeout=2)
            took = time.monotonic() - t0
            assert took < 2 + 1.0, "TimeoutError %.2f s after a 2 s limit" % took
            assert ei.value.scope == "call"
            assert ei.value.result.stdout == "started\n"
            assert isinstance(ei.value, TimeoutError)  # also the builtin
            # The box is still usable.
            assert (await box.exec("echo", "after")).stdout == "after\n"
    run(main())


def test_box_timeout(opts):
    async def main():
        t0 = time.monotonic()
        # Generous: the deadline counts from create, and a boot under TCG on a
        # busy machine can take 10 s or more.
        box = boxlite.SimpleBox(image="busybox", timeout_seconds=25, **opts)
        async with box:
            with pytest.raises(boxlite.TimeoutError) as ei:
                await box.exec("sleep", "120")
            took = time.monotonic() - t0
            assert took < 25 + 1.0, "box deadline hit after %.2f s" % took
            assert ei.value.scope == "box"
            with pytest.raises(boxlite.BoxliteError):
                await box.exec("true")
    run(main())


def test_memory_hog_raises_resource_error(opts):
    async def main():
        async with boxlite.SimpleBox(image="python:slim", **opts) as box:
            with pytest.raises(boxlite.ResourceError) as ei:
                await box.exec("python3", "-c", "a = []\nwhile True: a.append(bytearray(16 << 20))")
            assert isinstance(ei.value, boxlite.OutOfMemoryError)
            assert ei.value.kind == "memory"
            assert "out of memory" in str(ei.value)
            assert (await box.exec("echo", "alive")).stdout == "alive\n"
    run(main())


def test_disk_fill_fails_with_enospc(opts):
    async def main():
        async with boxlite.SimpleBox(image="busybox", **dict(opts, disk_mb=16)) as box:
            r = await box.exec("dd", "if=/dev/zero", "of=/home/sandbox/fill", "bs=1M", "count=64")
            assert r.exit_code != 0
            assert "No space left on device" in r.stderr
            assert (await box.exec("echo", "alive")).stdout == "alive\n"
    run(main())


def test_streaming_callbacks_and_iterator(opts):
    async def main():
        async with boxlite.SimpleBox(image="busybox", **opts) as box:
            seen = []
            done_first = asyncio.Event()

            def out(text):
                seen.append(("out", text))
                done_first.set()

            async def err(text):
                seen.append(("err", text))

            task = asyncio.ensure_future(box.exec(
                "sh", "-c", "echo one; sleep 1; echo two >&2; echo three", on_stdout=out, on_stderr=err))
            await asyncio.wait_for(done_first.wait(), 60)
            assert not task.done()  # "one" came while the command was still running
            r = await task
            # Each stream keeps its order; stdout and stderr are two pipes, so
            # "two" and "three" (written back to back) may come either way.
            assert seen[0] == ("out", "one\n")
            assert [t for k, t in seen if k == "out"] == ["one\n", "three\n"]
            assert [t for k, t in seen if k == "err"] == ["two\n"]
            assert r.stdout == "one\nthree\n" and r.stderr == "two\n"
            chunks = []
            s = box.stream("sh", "-c", "echo a; echo b >&2; exit 3")
            async for c in s:
                chunks.append((c.stream, c.text))
            assert sorted(chunks) == [("stderr", "b\n"), ("stdout", "a\n")]
            assert s.result.exit_code == 3
            # Big output is bounded per call, the rest drained.
            r = await box.exec("sh", "-c", "yes | head -c 3000000", max_output_bytes=1000)
            assert len(r.stdout_bytes) == 1000 and r.truncated and r.exit_code == 0
    run(main())


@pytest.mark.novm
def test_bad_arguments_raise_at_once():
    with pytest.raises(boxlite.InvalidArgumentError, match="memory_mb"):
        boxlite.SimpleBox(memory_mb=-1)
    with pytest.raises(ValueError, match="cpus"):
        boxlite.SimpleBox(cpus=0)
    with pytest.raises(boxlite.InvalidArgumentError):
        boxlite.CodeBox(memory_mib=32)
    with pytest.raises(boxlite.InvalidArgumentError, match="memory_mb or memory_mib"):
        boxlite.SimpleBox(memory_mb=256, memory_mib=512)
    with pytest.raises(boxlite.InvalidArgumentError, match="timeout_seconds"):
        boxlite.SimpleBox(timeout_seconds=0)
    with pytest.raises(boxlite.InvalidArgumentError, match="env"):
        boxlite.SimpleBox(env=["NOEQUALS"])
    with pytest.raises(boxlite.InvalidArgumentError, match="cwd"):
        boxlite.SimpleBox(cwd="relative")
    with pytest.raises(boxlite.InvalidArgumentError):
        boxlite.SimpleBox(image="")


def test_unknown_image(opts):
    async def main():
        t0 = time.monotonic()
        with pytest.raises(boxlite.ImageNotFoundError) as ei:
            async with boxlite.SimpleBox(image="no-such-image:latest", **opts):
                pass
        assert "no-such-image" in str(ei.value)
        assert isinstance(ei.value, boxlite.NotFoundError)
        assert time.monotonic() - t0 < 30  # no VM was booted for it

        box = boxlite.SimpleBox(image="busybox", **opts)
        with pytest.raises(boxlite.StateError):
            await box.exec("true")  # not started
        async with box:
            with pytest.raises(boxlite.InvalidArgumentError):
                await box.exec()
            with pytest.raises(boxlite.InvalidArgumentError):
                await box.exec("echo", "a\0b")
            with pytest.raises(boxlite.InvalidArgumentError):
                await box.exec("true", timeout=-1)
    run(main())
