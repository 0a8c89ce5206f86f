"""CodeBox: a SimpleBox with a persistent Python interpreter, as a notebook
kernel: variables, imports and functions of one run() are there in the next.

The interpreter is `python3 -c <_driver.py>` started with a stdin pipe; it
speaks a framed protocol on its stdin/stdout (see _driver.py). Everything it
sends is untrusted: frame types and sizes are checked, the result is
validated, output is bounded; a violation kills the interpreter.
"""

import asyncio
import json
import os
import signal
import struct
import threading
import time

from . import errors
from ._box import (DEFAULT_MAX_OUTPUT, ExecResult, SimpleBox, _Output, _kill_quietly, env_list, in_thread,
                   timeout_opt)

_DRIVER = open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "_driver.py"), encoding="utf-8").read()

MAX_FRAME = 1 << 20  # the driver's chunk size
MAX_RESULT = 64 << 10  # an R frame (JSON)
MAX_CODE = 16 << 20
START_TIMEOUT = 120.0  # the interpreter's hello (slow under TCG when the host is busy)
INTERRUPT_WAIT = 5.0  # for an interrupted run to stop, before the interpreter is killed


class _Interp:
    """One interpreter process and the thread that reads its frames."""

    def __init__(self, proc, loop):
        self.proc = proc
        self.q = asyncio.Queue()
        self.loop = loop
        self.pid = None  # the driver's pid inside the box (its process group)
        self.dead = False
        self.stderr = bytearray()  # the driver's own stderr (start-up failures), bounded
        self.exit = None
        self.pending = None  # (run id, deadline) of a run interrupted at its timeout

    def post(self, *ev):
        try:
            self.loop.call_soon_threadsafe(self.q.put_nowait, ev)
        except RuntimeError:
            pass

    def read_frames(self):
        """Thread: parses frames from the interpreter's stdout."""
        buf = bytearray()
        try:
            while True:
                data = self.proc.read(1)
                if not data:
                    self.post("eof")
                    return
                buf += data
                while len(buf) >= 5:
                    t = bytes(buf[:1])
                    n = struct.unpack(">I", bytes(buf[1:5]))[0]
                    if t not in (b"H", b"O", b"E", b"R"):
                        self.post("proto", "unknown frame type %r" % t)
                        return
                    if n > (MAX_RESULT if t in (b"H", b"R") else MAX_FRAME):
                        self.post("proto", "oversized %r frame (%d bytes)" % (t, n))
                        return
                    if len(buf) < 5 + n:
                        break
                    payload = bytes(buf[5:5 + n])
                    del buf[:5 + n]
                    self.post(t.decode(), payload)
        except BaseException as e:
            self.post("error", e)

    def read_stderr(self):
        try:
            while True:
                data = self.proc.read(2)
                if not data:
                    return
                if len(self.stderr) < 64 << 10:
                    self.stderr += data[:(64 << 10) - len(self.stderr)]
        except BaseException:
            return

    def wait(self):
        try:
            self.exit = self.proc.wait()
        except BaseException as e:
            self.post("error", e)
            return
        self.post("exit", self.exit)


def _parse_json(payload, what):
    try:
        v = json.loads(payload.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise errors.ProtocolError("interpreter sent a malformed %s frame" % what)
    if not isinstance(v, dict):
        raise errors.ProtocolError("interpreter sent a malformed %s frame" % what)
    return v


class CodeBox(SimpleBox):
    """A box with a persistent Python interpreter. `await box.run(code)`
    returns ExecResult(stdout, stderr, exit_code); state lasts until
    restart(). An exception gives exit_code 1 and the traceback in stderr
    (state kept); a run past its timeout raises TimeoutError (the run is
    interrupted with KeyboardInterrupt and the state kept; if the code does
    not stop, the interpreter is killed and the next run starts afresh).
    Uncaught MemoryError / ENOSPC / fork failures raise the ResourceError
    subclasses, with .result holding the run's output.

    Takes SimpleBox's options (image defaults to the Python image,
    "default", also named "python:slim") and python= (the interpreter
    command, default "python3")."""

    _kind = "CodeBox"

    def __init__(self, image=None, *, python="python3", **kw):
        super().__init__(image, **kw)
        if not isinstance(python, str) or not python:
            raise errors.InvalidArgumentError("python must be the interpreter's command name")
        self._python = python
        self._interp = None
        self._rid = 0
        self._run_lock = asyncio.Lock() if _lock_ok() else None

    def _lock(self):
        if self._run_lock is None:
            self._run_lock = asyncio.Lock()
        return self._run_lock

    async def _after_start(self):
        try:
            await self._start_interp()
        except BaseException:
            await self.close()
            raise

    async def _before_close(self):
        self._interp = None

    async def _start_interp(self):
        sb = self._require()
        loop = asyncio.get_running_loop()
        proc = await in_thread(sb.exec, [self._python, "-c", _DRIVER], None, None, None, True)
        it = _Interp(proc, loop)
        for fn, name in ((it.read_frames, "boxlite-codebox"), (it.read_stderr, "boxlite-codebox-err"),
                         (it.wait, "boxlite-codebox-wait")):
            threading.Thread(target=fn, daemon=True, name=name).start()
        self._interp = it
        try:
            ev = await asyncio.wait_for(it.q.get(), START_TIMEOUT)
        except asyncio.TimeoutError:
            await self._kill_interp(it)
            raise errors.TimeoutError("the Python interpreter did not start within %d s" % START_TIMEOUT,
                                      scope="call")
        except asyncio.CancelledError:
            await self._kill_interp(it)
            raise
        if ev[0] == "H":
            hello = _parse_json(ev[1], "hello")
            pid = hello.get("pid")
            if isinstance(pid, int) and not isinstance(pid, bool) and 1 < pid < (1 << 22):
                it.pid = pid
            return it
        await self._kill_interp(it)
        if ev[0] == "error":
            raise ev[1]
        detail = it.stderr.decode("utf-8", "replace").strip()[-2000:]
        if ev[0] == "exit" and ev[1][0] == 127:
            raise errors.NotFoundError("%s not found in the image: CodeBox needs a Python image" % self._python)
        raise errors.BoxliteError("the Python interpreter failed to start%s" % (": " + detail if detail else ""))

    async def _kill_interp(self, it):
        """Kills the interpreter; its keeper kills everything it started."""
        if it is None or it.dead:
            return
        it.dead = True
        if self._interp is it:
            self._interp = None
        sb = self._sb
        if sb is None or sb.closed:
            return
        # The driver's keeper then kills its whole process group.
        await in_thread(_kill_quietly, it.proc)

    async def _settle(self, it):
        """After a run timed out: waits (bounded) for its interrupted result,
        which keeps the interpreter and its state; else kills it."""
        rid, until = it.pending
        it.pending = None
        while True:
            try:
                ev = await asyncio.wait_for(it.q.get(), max(until - time.monotonic(), 0))
            except asyncio.TimeoutError:
                await self._kill_interp(it)
                return
            if ev[0] in ("O", "E"):
                continue  # the rest of the timed-out run's output
            if ev[0] == "R":
                try:
                    if _parse_json(ev[1], "result").get("id") == rid:
                        return
                    continue
                except errors.ProtocolError:
                    pass
            await self._kill_interp(it)
            return

    def _drop_interp(self, it):
        """Like _kill_interp without waiting for the kill to be done."""
        it.dead = True
        if self._interp is it:
            self._interp = None
        threading.Thread(target=_kill_quietly, args=(it.proc,), daemon=True).start()

    async def restart(self):
        """A fresh interpreter: the state of earlier runs is gone."""
        async with self._lock():
            if self._interp is not None:
                await self._kill_interp(self._interp)
            await self._start_interp()

    async def run(self, code, timeout=None, *, on_stdout=None, on_stderr=None, max_output_bytes=None):
        """Runs Python code in the persistent interpreter. Returns ExecResult;
        a final expression's repr is printed (as in a notebook)."""
        if not isinstance(code, str):
            raise errors.InvalidArgumentError("code must be a str, not %s" % type(code).__name__)
        tmo = timeout_opt("timeout", timeout)
        limit = self._max_output if max_output_bytes is None else max_output_bytes
        self._require()
        async with self._lock():
            return await self._run_locked(code, tmo, on_stdout, on_stderr, limit)

    async def _run_locked(self, code, tmo, on_stdout, on_stderr, limit):
        it = self._interp
        if it is not None and it.pending is not None:
            await self._settle(it)
            it = self._interp
        if it is not None:
            # Leftovers between runs (output of background threads; a death).
            while not it.q.empty():
                ev = it.q.get_nowait()
                if ev[0] in ("eof", "exit", "proto", "error"):
                    await self._kill_interp(it)
                    it = None
                    break
        if it is None or it.dead:
            it = await self._start_interp()
        t0 = time.monotonic()  # the timeout counts from here, not the interpreter's start
        self._rid += 1
        rid = self._rid
        body = struct.pack(">Q", rid) + code.encode("utf-8", "surrogatepass")
        if len(body) > MAX_CODE:
            raise errors.InvalidArgumentError("code is over %d MiB" % (MAX_CODE >> 20))
        outs = {1: _Output("stdout", on_stdout, limit), 2: _Output("stderr", on_stderr, limit)}
        deadline = None if tmo is None else t0 + tmo
        try:
            await in_thread(it.proc.write, b"C" + struct.pack(">I", len(body)) + body)
            while True:
                wait = None if deadline is None else max(deadline - time.monotonic(), 0)
                try:
                    ev = await asyncio.wait_for(it.q.get(), wait)
                except asyncio.TimeoutError:
                    # Interrupt (KeyboardInterrupt) and tell the caller now;
                    # the next run waits for the interrupted one to settle
                    # (state kept) or kills the interpreter (see _settle).
                    threading.Thread(target=_kill_quietly, args=(it.proc, signal.SIGINT), daemon=True).start()
                    it.pending = (rid, time.monotonic() + INTERRUPT_WAIT)
                    raise errors.TimeoutError(
                        "run timed out after %g s (interrupted with KeyboardInterrupt)" % tmo, scope="call",
                        result=self._result(outs, 128 + signal.SIGINT, t0))
                kind = ev[0]
                if kind == "O":
                    await outs[1].feed(ev[1])
                elif kind == "E":
                    await outs[2].feed(ev[1])
                elif kind == "R":
                    r = _parse_json(ev[1], "result")
                    if r.get("id") != rid:
                        continue  # a stale or forged result: not this run's
                    code_ = r.get("exit_code")
                    if not isinstance(code_, int) or isinstance(code_, bool) or not 0 <= code_ <= 255:
                        raise errors.ProtocolError("interpreter sent a bad exit code")
                    err = r.get("error")
                    err = err[:100] if isinstance(err, str) else None
                    res = self._result(outs, code_, t0, err)
                    await outs[1].finish()
                    await outs[2].finish()
                    self._raise_resource(r, res)
                    return res
                elif kind == "H":
                    raise errors.ProtocolError("interpreter sent a second hello")
                elif kind in ("eof", "exit"):
                    status = it.exit
                    if status is None:
                        try:
                            ev2 = await asyncio.wait_for(it.q.get(), 10)
                            status = ev2[1] if ev2[0] == "exit" else None
                        except asyncio.TimeoutError:
                            status = None
                    await self._kill_interp(it)
                    code_ = status[0] if status else 1
                    res = self._result(outs, code_ if 0 < code_ <= 255 else 1, t0)
                    if status and status[3] is not None:
                        raise errors.OutOfMemoryError(
                            "the Python interpreter ran out of memory and was killed (state lost): %s" % status[3],
                            result=res)
                    res.stderr_bytes += (
                        "boxlite: the Python interpreter exited with status %d; its state is lost\n" % code_).encode()
                    return res
                elif kind == "proto":
                    await self._kill_interp(it)
                    raise errors.ProtocolError("the interpreter broke the protocol (%s); it was killed" % ev[1])
                elif kind == "error":
                    await self._kill_interp(it)
                    raise ev[1]
        except asyncio.CancelledError:
            # The awaiting task was cancelled mid-run: the interpreter goes.
            self._drop_interp(it)
            raise
        except errors.ProtocolError:
            await self._kill_interp(it)
            raise

    @staticmethod
    def _result(outs, exit_code, t0, error=None):
        return ExecResult(bytes(outs[1].buf), bytes(outs[2].buf), exit_code=exit_code,
                          truncated=outs[1].truncated or outs[2].truncated, duration=time.monotonic() - t0,
                          error=error)

    @staticmethod
    def _raise_resource(r, res):
        kind = r.get("resource")
        if kind == "memory":
            raise errors.OutOfMemoryError("the code ran out of memory (MemoryError)", result=res)
        if kind == "disk":
            raise errors.DiskFullError("the box's writable layer is full (No space left on device)", result=res)
        if kind == "pids":
            raise errors.ProcessLimitError("the box's process limit was reached (fork failed)", result=res)


def _lock_ok():
    # asyncio.Lock binds to a loop on first use from 3.10; before, at
    # creation (then it is made lazily, inside the loop).
    import sys
    return sys.version_info >= (3, 10)
