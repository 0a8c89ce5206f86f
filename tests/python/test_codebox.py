"""CodeBox: state across runs, restart, errors, timeouts, limits, hostile output."""

import asyncio
import time

import pytest

import boxlite
from conftest import run


def test_state_kept_and_reset_by_restart(opts):
    async def main():
        async with boxlite.CodeBox(**opts) as box:
            assert (await box.run("x = 41")).stdout == ""
            assert (await box.run("print(x + 1)")).stdout == "42\n"
            await box.run("import json\ndef f(v):\n    return json.dumps({'v': v})")
            assert (await box.run("print(f(x))")).stdout == '{"v": 41}\n'
            assert (await box.run("x * 2")).stdout == "82\n"  # a final expression is shown
            # An exception: exit_code != 0, traceback in stderr, state kept.
            r = await box.run("y = 1\nraise ValueError('boom')")
            assert r.exit_code == 1 and r.error == "ValueError"
            assert "Traceback (most recent call last)" in r.stderr
            assert "ValueError: boom" in r.stderr and "raise ValueError('boom')" in r.stderr
            assert (await box.run("print(x, y)")).stdout == "41 1\n"
            r = await box.run("import sys\nsys.exit(3)")
            assert r.exit_code == 3
            assert (await box.run("print(x)")).stdout == "41\n"
            await box.restart()
            r = await box.run("print(x)")
            assert r.exit_code == 1 and "NameError" in r.stderr
    run(main())


def test_output_capture(opts):
    async def main():
        async with boxlite.CodeBox(**opts) as box:
            r = await box.run("import os, subprocess, sys\nprint('py')\nsys.stdout.flush()\n"
                              "os.system('echo from-shell')\nsubprocess.run(['sh', '-c', 'echo sub-err >&2'])\n"
                              "print('warn', file=sys.stderr)")
            assert r.stdout == "py\nfrom-shell\n"
            assert r.stderr == "sub-err\nwarn\n"
            seen = []
            r = await box.run("for i in range(3): print(i)", on_stdout=seen.append)
            assert "".join(seen) == "0\n1\n2\n" == r.stdout
            r = await box.run("input()")
            assert r.exit_code == 1 and "EOFError" in r.stderr  # stdin is /dev/null
            # The interpreter dies: the result says so, the next run gets a fresh one.
            r = await box.run("import os\nprint('bye', flush=True)\nos._exit(5)")
            assert r.exit_code == 5 and "state is lost" in r.stderr
            assert (await box.run("print('fresh')")).stdout == "fresh\n"
            # Forked children never speak for the interpreter.
            r = await box.run("import os\npid = os.fork()\nif pid == 0:\n    print('child')\nelse:\n"
                              "    os.waitpid(pid, 0)\n    print('parent')")
            assert r.stdout == "child\nparent\n" and r.exit_code == 0
            assert (await box.run("print(pid > 0)")).stdout == "True\n"
    run(main())


def test_run_timeout_keeps_box_usable(opts):
    async def main():
        async with boxlite.CodeBox(**opts) as box:
            await box.run("state = 'kept'")
            t0 = time.monotonic()
            with pytest.raises(boxlite.TimeoutError) as ei:
                await box.run("import time\nprint('before', flush=True)\ntime.sleep(60)", timeout=2)
            took = time.monotonic() - t0
            assert took < 2 + 1.0, "TimeoutError %.2f s after a 2 s limit" % took
            assert ei.value.scope == "call" and ei.value.result.stdout == "before\n"
            # Interrupted (KeyboardInterrupt): the state survived.
            assert (await box.run("print(state)")).stdout == "kept\n"
            # Code that ignores the interrupt: killed, fresh interpreter.
            t0 = time.monotonic()
            with pytest.raises(boxlite.TimeoutError):
                await box.run("import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                              "while True: time.sleep(1)", timeout=2)
            took = time.monotonic() - t0
            assert took < 2 + 1.0, "TimeoutError %.2f s after a 2 s limit" % took
            r = await box.run("print('alive')")
            assert r.stdout == "alive\n"
            r = await box.run("print(state)")
            assert "NameError" in r.stderr
    run(main())


def test_codebox_box_timeout(opts):
    async def main():
        t0 = time.monotonic()
        with pytest.raises(boxlite.TimeoutError) as ei:
            async with boxlite.CodeBox(timeout_seconds=25, **opts) as box:
                await box.run("import time\nwhile True: time.sleep(1)")
        took = time.monotonic() - t0
        assert took < 25 + 1.0, "box deadline hit after %.2f s" % took
        assert ei.value.scope == "box"
    run(main())


def test_memory_hog(opts):
    async def main():
        async with boxlite.CodeBox(**opts) as box:
            await box.run("before = 1")
            # Touching the pages: the box's memory limit OOM-kills the interpreter.
            with pytest.raises(boxlite.ResourceError) as ei:
                await box.run("a = []\nwhile True: a.append(bytearray(16 << 20))")
            assert isinstance(ei.value, boxlite.OutOfMemoryError) and ei.value.kind == "memory"
            # An allocation that fails outright: MemoryError, state kept.
            with pytest.raises(boxlite.OutOfMemoryError) as ei:
                await box.run("after = 2\nb = bytearray(1 << 40)")
            assert "MemoryError" in ei.value.result.stderr
            assert (await box.run("print(after)")).stdout == "2\n"
    run(main())


def test_fork_bomb_is_contained(opts):
    async def main():
        async with boxlite.CodeBox(pids_max=128, **opts) as box:
            try:
                r = await box.run("import os\nwhile True:\n    os.fork()", timeout=30)
                outcome = "result %d" % r.exit_code
            except (boxlite.ResourceError, boxlite.TimeoutError) as e:
                outcome = type(e).__name__
            # 128 forked interpreters can also exhaust the box's memory first.
            assert outcome in (
                "ProcessLimitError", "OutOfMemoryError", "TimeoutError"
            ) or outcome.startswith("result")
            # Harmless: the box still works and the bomb is gone.
            r = await box.run("print('alive')", timeout=60)
            assert r.stdout == "alive\n" and r.stderr == ""
            r = await box.exec("sh", "-c", "ls /proc | grep -c '^[0-9]'", timeout=60)
            assert r.exit_code == 0, r.stderr
            assert int(r.stdout) < 20, r.stdout
    run(main())


def test_disk_fill(opts):
    async def main():
        async with boxlite.CodeBox(**dict(opts, disk_mb=16)) as box:
            with pytest.raises(boxlite.ResourceError) as ei:
                await box.run("f = open('/home/sandbox/fill', 'wb')\nwhile True: f.write(b'x' * (1 << 20))")
            assert isinstance(ei.value, boxlite.DiskFullError) and ei.value.kind == "disk"
            assert "No space left on device" in ei.value.result.stderr
            assert (await box.run("import os; os.remove('/home/sandbox/fill'); print('ok')")).stdout == "ok\n"
    run(main())


def test_hostile_interpreter_output(opts):
    """Code in the box can write anything on the protocol channel: the host
    refuses it, kills that interpreter, and the box stays usable."""
    async def main():
        async with boxlite.CodeBox(**opts) as box:
            hostile = ["b'Z' * 10",  # unknown frame type
                       "b'O' + (1 << 31).to_bytes(4, 'big')",  # oversized frame
                       "b'R' + len(p).to_bytes(4, 'big') + p",  # this run's result, bad exit code
                       "b'H' + len(p).to_bytes(4, 'big') + p"]  # a second hello
            for i, bad in enumerate(hostile):
                rid = 2 * i + 1  # run ids count from 1; each round makes two runs
                code = ("import __main__, json, os\n"
                        "p = json.dumps({'id': %d, 'exit_code': 'x'}).encode()\n"
                        "os.write(__main__.POUT, %s)\nimport time; time.sleep(30)" % (rid, bad))
                with pytest.raises(boxlite.ProtocolError):
                    await box.run(code, timeout=20)
                assert (await box.run("print('still fine')")).stdout == "still fine\n"
            # A forged result for another run id is ignored: this run times out normally.
            with pytest.raises(boxlite.TimeoutError):
                await box.run("import __main__, os, json\np = json.dumps({'id': 999, 'exit_code': 0}).encode()\n"
                              "os.write(__main__.POUT, b'R' + len(p).to_bytes(4, 'big') + p)\n"
                              "import time; time.sleep(30)", timeout=3)
    run(main())


def test_codebox_needs_python(opts):
    async def main():
        with pytest.raises(boxlite.NotFoundError):
            async with boxlite.CodeBox(image="busybox", **opts):
                pass
    run(main())


def test_concurrent_runs_are_serialized(opts):
    async def main():
        async with boxlite.CodeBox(**opts) as box:
            await box.run("n = 0")
            rs = await asyncio.gather(*[box.run("n += 1\nprint(n)") for _ in range(4)])
            assert sorted(r.stdout for r in rs) == ["1\n", "2\n", "3\n", "4\n"]
            r = await box.exec("python3", "-c", "print('exec beside the interpreter')")
            assert r.stdout == "exec beside the interpreter\n"
    run(main())
