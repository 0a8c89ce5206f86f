"""boxlite.sync: the same classes and behaviour without asyncio."""

import threading
import time

import pytest

import boxlite
import boxlite.sync as bs
from conftest import leftovers


def test_sync_codebox_and_simplebox(opts, state_dir):
    with bs.CodeBox(**opts) as box:
        assert box.id
        box.run("x = 41")
        assert box.run("print(x + 1)").stdout == "42\n"
        r = box.run("1 / 0")
        assert r.exit_code == 1 and "ZeroDivisionError" in r.stderr
        t0 = time.monotonic()
        with pytest.raises(boxlite.TimeoutError):
            box.run("import time\ntime.sleep(60)", timeout=2)
        assert time.monotonic() - t0 < 3
        assert box.run("print(x)").stdout == "41\n"
        box.restart()
        assert "NameError" in box.run("x").stderr
        assert box.exec("sh", "-c", "echo $0", "exec").stdout == "exec\n"
        box.write_file("/tmp/f", b"data")
        assert box.read_file("/tmp/f") == b"data"
        chunks = list(box.stream("sh", "-c", "echo a"))
        assert [c.text for c in chunks] == ["a\n"]
    assert box.closed
    assert leftovers(state_dir) == []
    # The same exception classes.
    assert bs.TimeoutError is boxlite.TimeoutError and bs.ResourceError is boxlite.ResourceError


def test_sync_boxes_from_threads(opts, state_dir):
    out = {}

    def work(i):
        with bs.SimpleBox(image="busybox", **opts) as box:
            out[i] = box.exec("echo", str(i)).stdout

    ts = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(300)
    assert out == {0: "0\n", 1: "1\n"}
    with pytest.raises(boxlite.InvalidArgumentError):
        bs.SimpleBox(cpus=0)
    with pytest.raises(boxlite.ImageNotFoundError):
        with bs.SimpleBox(image="no-such-image", **opts):
            pass
