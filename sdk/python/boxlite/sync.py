"""The synchronous twin of boxlite: the same classes and behaviour without
asyncio.

    from boxlite.sync import CodeBox
    with CodeBox() as box:
        print(box.run("print(2 + 2)").stdout)

Each call runs the async implementation on one private event loop in a
background thread (shared by every sync box of the process), so sync boxes
may be used from several threads at once. on_stdout/on_stderr callbacks run
in that loop's thread. Ctrl-C (KeyboardInterrupt) during a call cancels it;
leaving the `with` block destroys the box.
"""

import asyncio
import concurrent.futures
import threading

from . import _box, _codebox
from .errors import *  # noqa: F401,F403 (the same exceptions)
from ._box import ExecResult, OutputChunk  # noqa: F401

_loop = None
_loop_lock = threading.Lock()


def _get_loop():
    global _loop
    with _loop_lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            t = threading.Thread(target=loop.run_forever, daemon=True, name="boxlite-sync-loop")
            t.start()
            _loop = loop
        return _loop


def _call(coro_fn, *args, **kw):
    loop = _get_loop()

    async def make():
        return await coro_fn(*args, **kw)

    fut = asyncio.run_coroutine_threadsafe(make(), loop)
    try:
        return fut.result()
    except KeyboardInterrupt:
        fut.cancel()
        try:
            fut.result(timeout=30)
        except BaseException:
            pass
        raise
    except concurrent.futures.CancelledError:
        raise _box.errors.CancelledError("the call was cancelled")


class _SyncBox:
    _async_cls = None

    def __init__(self, *args, **kw):
        # Built inside the loop (asyncio objects bind to it).
        self._a = _call(self._make, args, kw)

    async def _make(self, args, kw):
        return self._async_cls(*args, **kw)

    @property
    def id(self):
        return self._a.id

    @property
    def state_dir(self):
        return self._a.state_dir

    @property
    def closed(self):
        return self._a.closed

    def start(self):
        _call(self._a.start)
        return self

    def close(self):
        _call(self._a.close)

    def kill(self):
        self._a.kill()

    def __enter__(self):
        return self.start()

    def __exit__(self, et, ev, tb):
        self.close()
        return False

    def exec(self, *argv, **kw):
        return _call(self._a.exec, *argv, **kw)

    def stream(self, *argv, **kw):
        """Iterator of OutputChunk; afterwards .result holds the ExecResult."""
        return _SyncStream(self._a, argv, kw)

    def port(self, guest_port, proto="tcp"):
        return self._a.port(guest_port, proto)

    def network_refused(self):
        return self._a.network_refused()

    def write_file(self, path, data, mode=0o644):
        return _call(self._a.write_file, path, data, mode)

    def read_file(self, path, max_bytes=64 << 20):
        return _call(self._a.read_file, path, max_bytes)

    def copy_in(self, host_path, box_path):
        return _call(self._a.copy_in, host_path, box_path)

    def copy_out(self, box_path, host_path, max_bytes=256 << 20):
        return _call(self._a.copy_out, box_path, host_path, max_bytes)


class _SyncStream:
    def __init__(self, abox, argv, kw):
        self._abox, self._argv, self._kw = abox, argv, kw
        self._s = None
        self.result = None

    def __iter__(self):
        return self

    def __next__(self):
        if self._s is None:
            self._s = _call(self._mk)
        try:
            return _call(self._s.__anext__)
        except StopAsyncIteration:
            self.result = self._s.result
            raise StopIteration

    async def _mk(self):
        return self._abox.stream(*self._argv, **self._kw)


class SimpleBox(_SyncBox):
    __doc__ = _box.SimpleBox.__doc__
    _async_cls = _box.SimpleBox


class CodeBox(_SyncBox):
    __doc__ = _codebox.CodeBox.__doc__
    _async_cls = _codebox.CodeBox

    def run(self, code, timeout=None, **kw):
        return _call(self._a.run, code, timeout, **kw)

    def restart(self):
        _call(self._a.restart)


__all__ = ["SimpleBox", "CodeBox", "ExecResult", "OutputChunk"]
