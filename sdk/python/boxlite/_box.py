"""SimpleBox: a sandbox (one micro-VM) and the processes run in it, asyncio.

Blocking library calls run in their own threads (never in the event loop),
so many boxes and many execs per box run at once from one loop.
"""

import asyncio
import codecs
import math
import os
import signal
import threading
import time
import warnings
import weakref

from . import _core
from . import errors

DEFAULT_MAX_OUTPUT = 16 << 20  # bytes kept per stream and call; the rest is drained and dropped


def in_thread(fn, *args):
    """Runs fn(*args) in a new daemon thread; returns an asyncio future.

    Daemon threads (not an executor): a thread blocked in the library must
    never hold up interpreter exit, whose atexit hook cancels the boxes that
    are still open (which makes those calls return)."""
    loop = asyncio.get_running_loop()
    fut = loop.create_future()

    def deliver(ok, value):
        if fut.cancelled():
            return
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)

    def work():
        try:
            res = (True, fn(*args))
        except BaseException as e:  # delivered to the awaiting task
            res = (False, e)
        try:
            loop.call_soon_threadsafe(deliver, *res)
        except RuntimeError:
            pass  # the loop is closed: nobody waits any more

    # An exception nobody awaits any more (the caller was cancelled) is not
    # an error worth a "never retrieved" warning.
    fut.add_done_callback(lambda f: f.cancelled() or f.exception())
    threading.Thread(target=work, daemon=True, name="boxlite-call").start()
    return fut


class ExecResult:
    """The outcome of exec() or run(): text stdout/stderr (UTF-8, invalid
    bytes replaced), exit_code (the status, 128+N for signal N), and the raw
    bytes."""

    __slots__ = ("stdout_bytes", "stderr_bytes", "exit_code", "signal", "oom_killed",
                 "truncated", "duration", "error")

    def __init__(self, stdout=b"", stderr=b"", exit_code=0, signal=0, oom_killed=False,
                 truncated=False, duration=0.0, error=None):
        self.stdout_bytes = stdout
        self.stderr_bytes = stderr
        self.exit_code = exit_code
        self.signal = signal
        self.oom_killed = oom_killed
        self.truncated = truncated
        self.duration = duration
        self.error = error  # CodeBox: the exception's type name, if any

    @property
    def stdout(self):
        return self.stdout_bytes.decode("utf-8", "replace")

    @property
    def stderr(self):
        return self.stderr_bytes.decode("utf-8", "replace")

    @property
    def ok(self):
        return self.exit_code == 0

    def __repr__(self):
        def short(s):
            return repr(s if len(s) <= 60 else s[:57] + "...")
        return "ExecResult(exit_code=%d, stdout=%s, stderr=%s)" % (
            self.exit_code, short(self.stdout), short(self.stderr))


class OutputChunk:
    """One piece of output of a streamed exec: stream is "stdout" or "stderr",
    data the bytes, text the decoded text (UTF-8 sequences never split)."""

    __slots__ = ("stream", "data", "text")

    def __init__(self, stream, data, text):
        self.stream, self.data, self.text = stream, data, text

    def __repr__(self):
        return "OutputChunk(%s, %r)" % (self.stream, self.text)


# ------------------------------------------------------------------ options

def _int_opt(name, v, lo, hi, unit=""):
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        else:
            raise errors.InvalidArgumentError("%s must be an integer, not %r" % (name, v))
    if v < lo or v > hi:
        raise errors.InvalidArgumentError("%s must be between %d and %d%s (got %d)" % (name, lo, hi, unit, v))
    return v


def env_list(env, what="env"):
    if env is None:
        return None
    items = env.items() if isinstance(env, dict) else None
    out = []
    if items is None:
        for e in env:
            if not isinstance(e, str) or "=" not in e or e.startswith("="):
                raise errors.InvalidArgumentError("%s entry %r is not 'KEY=VALUE'" % (what, e))
            out.append(e)
    else:
        for k, v in items:
            if not isinstance(k, str) or not k or "=" in k:
                raise errors.InvalidArgumentError("%s key %r is not a valid variable name" % (what, k))
            out.append("%s=%s" % (k, v))
    for e in out:
        if "\0" in e:
            raise errors.InvalidArgumentError("%s entry %r contains a NUL byte" % (what, e))
    return out


def user_opt(user):
    if user is None:
        return None
    if isinstance(user, bool):
        raise errors.InvalidArgumentError("user must be a name or uid, not %r" % (user,))
    if isinstance(user, int):
        if user < 0:
            raise errors.InvalidArgumentError("user id must not be negative (got %d)" % user)
        return str(user)
    if not isinstance(user, str) or not user or "\0" in user:
        raise errors.InvalidArgumentError("user must be a name or uid, not %r" % (user,))
    return user


def cwd_opt(cwd):
    if cwd is None:
        return None
    cwd = os.fspath(cwd)
    if not isinstance(cwd, str) or not cwd.startswith("/") or "\0" in cwd:
        raise errors.InvalidArgumentError("cwd must be an absolute path inside the box, not %r" % (cwd,))
    return cwd


def timeout_opt(name, t):
    if t is None:
        return None
    if isinstance(t, bool) or not isinstance(t, (int, float)) or math.isnan(t):
        raise errors.InvalidArgumentError("%s must be a number of seconds, not %r" % (name, t))
    if t <= 0:
        raise errors.InvalidArgumentError("%s must be positive (got %r)" % (name, t))
    return float(t)


def _strs(name, v):
    if v is None:
        return None
    if isinstance(v, (str, bytes)) or not all(isinstance(x, (str, int)) for x in v):
        raise errors.InvalidArgumentError("network %s must be a list of strings" % name)
    return [str(x) for x in v] or None


def network_opts(network):
    """network: None/False (no network device at all), True (a device that
    reaches nothing), or a dict: allow (list of "HOST[:PORT]",
    "A.B.C.D[/N][:PORT]", "host:PORT", "*"), deny (likewise), ports (list of
    "[ADDR:]HOST_PORT:GUEST_PORT[/tcp|/udp]" or guest port numbers, each
    served on a free 127.0.0.1 port; see port()), max_conns, rate_kib."""
    if network is None or network is False:
        return {}
    if network is True:
        return {"network": True}
    if not isinstance(network, dict):
        raise errors.InvalidArgumentError("network must be True, False, None or a dict, not %r" % (network,))
    bad = set(network) - {"allow", "deny", "ports", "max_conns", "rate_kib"}
    if bad:
        raise errors.InvalidArgumentError("unknown network keys: %s" % ", ".join(sorted(bad)))
    return {
        "network": True,
        "net_allow": _strs("allow", network.get("allow")),
        "net_deny": _strs("deny", network.get("deny")),
        "net_publish": _strs("ports", network.get("ports")),
        "net_max_conns": _int_opt("max_conns", network.get("max_conns"), 1, 65536),
        "net_rate_kib": _int_opt("rate_kib", network.get("rate_kib"), 1, 10 << 20),
    }


def _argv(argv):
    if len(argv) == 1 and isinstance(argv[0], (list, tuple)):
        argv = tuple(argv[0])
    if not argv:
        raise errors.InvalidArgumentError("exec needs a command")
    out = []
    for a in argv:
        if isinstance(a, os.PathLike):
            a = os.fspath(a)
        if not isinstance(a, str):
            raise errors.InvalidArgumentError("exec arguments must be strings, not %r" % (a,))
        if "\0" in a:
            raise errors.InvalidArgumentError("exec argument %r contains a NUL byte" % (a,))
        out.append(a)
    if not out[0]:
        raise errors.InvalidArgumentError("exec needs a command")
    return out


def _start_failure(msg, cmd):
    """Like the CLI: a StartProcess that failed because the command is missing
    or not executable gives 127/126 and a shell-like message, else None."""
    why = None
    for q in ('exec "%s": ' % cmd[:200], "exec %s: " % cmd[:200]):
        i = msg.rfind(q)
        if i >= 0:
            why = msg[i + len(q):]
            break
    if why is None:
        return None
    why = "".join(c if " " <= c < "\x7f" else "?" for c in why[:128])
    if why in ("executable file not found", "No such file or directory") or why.startswith(
            ("executable file not found", "No such file or directory")):
        return 127, "%s: %s" % (cmd, "no such file or directory" if "/" in cmd else "command not found")
    if why[:1].isupper() and not why[1:2].isupper():
        why = why[0].lower() + why[1:]
    return 126, "%s: %s" % (cmd, why)


_live = weakref.WeakSet()


def _finalize(sb, name):
    if not sb.closed:
        warnings.warn("boxlite: %s %s was never closed; destroying it" % (name, sb.id or "(starting)"),
                      ResourceWarning, stacklevel=2)
        # Never block the thread the garbage collector runs in (maybe the
        # event loop's); a non-daemon thread so exit waits for it.
        threading.Thread(target=sb.close, name="boxlite-finalize").start()


class SimpleBox:
    """A sandbox: one QEMU micro-VM with the image's root filesystem (read
    only) under a private writable layer. Use as `async with SimpleBox() as
    box:` (or await start() / close()).

    Options: image (a store name such as "python:slim", "busybox" or
    "default"; a rootfs directory; an OCI layout or archive), memory_mb (or
    memory_mib; default 512), cpus (1), timeout_seconds (the box's whole
    life: at the deadline the VM is destroyed and calls raise TimeoutError),
    env (dict or "K=V" list), cwd, user ("uid[:gid]" or a name), disk_mb (the
    writable layer, a guest tmpfs; default 256), pids_max (512), name (the
    sandbox id), state_dir (where the library keeps its state).
    """

    _kind = "SimpleBox"

    def __init__(self, image=None, *, memory_mb=None, memory_mib=None, cpus=None, timeout_seconds=None,
                 env=None, cwd=None, user=None, disk_mb=None, disk_mib=None, pids_max=None, name=None,
                 rootfs=None, hostname=None, state_dir=None, image_store=None, accel=None, kernel=None,
                 initrd=None, max_output_bytes=DEFAULT_MAX_OUTPUT, network=None):
        if memory_mb is not None and memory_mib is not None and memory_mb != memory_mib:
            raise errors.InvalidArgumentError("give memory_mb or memory_mib, not both")
        mem = memory_mb if memory_mb is not None else memory_mib
        if disk_mb is not None and disk_mib is not None and disk_mb != disk_mib:
            raise errors.InvalidArgumentError("give disk_mb or disk_mib, not both")
        disk = disk_mb if disk_mb is not None else disk_mib
        if image is not None and (not isinstance(image, (str, os.PathLike)) or not os.fspath(image)):
            raise errors.InvalidArgumentError("image must be a non-empty name or path, not %r" % (image,))
        if image is not None and rootfs is not None:
            raise errors.InvalidArgumentError("give an image or a rootfs directory, not both")
        tmo = timeout_opt("timeout_seconds", timeout_seconds)
        if name is not None and (not isinstance(name, str) or not name or len(name) > 32 or
                                 any(not (c.isascii() and (c.isalnum() or c in "_.-")) for c in name)):
            raise errors.InvalidArgumentError("name must be 1-32 of [A-Za-z0-9_.-], not %r" % (name,))
        if not isinstance(max_output_bytes, int) or max_output_bytes < 0:
            raise errors.InvalidArgumentError("max_output_bytes must be a non-negative integer")
        self._opts = {
            "image": os.fspath(image) if image is not None else None,
            "rootfs": os.fspath(rootfs) if rootfs is not None else None,
            "image_store": image_store,
            "memory_mib": _int_opt("memory_mb", mem, 64, 65536, " MiB"),
            "vcpus": _int_opt("cpus", cpus, 1, 64),
            "disk_mib": _int_opt("disk_mb", disk, 1, 1 << 20, " MiB"),
            "pids_max": _int_opt("pids_max", pids_max, 1, 1 << 22),
            "timeout_sec": int(math.ceil(tmo)) if tmo else None,
            "env": env_list(env),
            "cwd": cwd_opt(cwd),
            "user": user_opt(user),
            "hostname": hostname,
            "state_dir": os.fspath(state_dir) if state_dir is not None else None,
            "id": name,
            "accel": accel,
        }
        self._opts.update(network_opts(network))
        self._timeout = tmo
        self._max_output = max_output_bytes
        self._kernel, self._initrd = kernel, initrd
        self._sb = None
        self._started = False
        self._start_lock = None
        self._finalizer = None

    # ---------------------------------------------------------------- lifecycle

    @property
    def id(self):
        """The sandbox id (known once started)."""
        return self._sb.id if self._sb else None

    @property
    def state_dir(self):
        """The sandbox's state directory on the host (console.log, ...)."""
        return self._sb.dir if self._sb else None

    @property
    def closed(self):
        return self._sb is not None and self._sb.closed

    def _require(self):
        if self._sb is None or not self._started:
            raise errors.StateError("the box is not started (use `async with` or await box.start())")
        if self._sb.closed:
            raise errors.StateError("the box is closed")
        return self._sb

    async def start(self):
        if self._started:
            return self
        if self._sb is not None:
            raise errors.StateError("the box is already starting or closed")
        sb = _core.Sandbox()
        o = dict(self._opts)
        o["kernel"] = self._kernel or sb.lib.kernel
        o["initrd"] = self._initrd or sb.lib.initrd
        self._sb = sb
        self._finalizer = weakref.finalize(self, _finalize, sb, self._kind)
        fut = in_thread(sb.create, o)
        try:
            await asyncio.shield(fut)
        except asyncio.CancelledError:
            # Cancelled while booting: kill the VM and wait for the create
            # to come back, so nothing is left behind.
            await _close_quietly(sb)
            raise
        except BaseException:
            await _close_quietly(sb)
            raise
        self._started = True
        _live.add(self)
        await self._after_start()
        return self

    async def _after_start(self):
        pass

    async def close(self):
        """Destroys the box and everything it made (idempotent)."""
        sb = self._sb
        if sb is None:
            return
        await self._before_close()
        await _close_quietly(sb)
        if self._finalizer:
            self._finalizer.detach()

    async def _before_close(self):
        pass

    async def __aenter__(self):
        return await self.start()

    async def __aexit__(self, et, ev, tb):
        await self.close()
        return False

    def kill(self):
        """Kills the VM at once (thread-safe, non-blocking for the caller's
        purposes); calls in flight fail. close() still releases the rest."""
        if self._sb is not None:
            self._sb.cancel()

    # ---------------------------------------------------------------- exec

    async def exec(self, *argv, env=None, cwd=None, user=None, timeout=None, stdin=None,
                   on_stdout=None, on_stderr=None, max_output_bytes=None):
        """Runs a command in the box; returns ExecResult (stdout, stderr,
        exit_code). timeout: seconds for this call (the process is killed and
        TimeoutError raised). stdin: bytes or str fed to the process.
        on_stdout/on_stderr: called with each decoded text chunk as it
        arrives (a coroutine function is awaited). Several execs may run at
        once on one box."""
        args = _argv(argv)
        envl = env_list(env)
        cwd = cwd_opt(cwd)
        user = user_opt(user)
        tmo = timeout_opt("timeout", timeout)
        if stdin is not None and not isinstance(stdin, (bytes, bytearray, memoryview, str)):
            raise errors.InvalidArgumentError("stdin must be bytes or str")
        if isinstance(stdin, str):
            stdin = stdin.encode()
        limit = self._max_output if max_output_bytes is None else max_output_bytes
        sb = self._require()
        return await _run_process(sb, args, envl, cwd, user, tmo, stdin, on_stdout, on_stderr, limit)

    def stream(self, *argv, **kw):
        """`async for chunk in box.stream("cmd", ...)`: OutputChunk objects as
        output arrives; afterwards `.result` holds the ExecResult."""
        return ExecStream(self.exec, argv, kw)

    # ---------------------------------------------------------------- files

    def port(self, guest_port, proto="tcp"):
        """(host, port) where a published guest port is served on the host."""
        return self._require().port(_int_opt("guest_port", guest_port, 1, 65535), proto)

    def network_refused(self):
        """Connections the network policy refused so far: a list of
        (destination, packets), destination "ADDR:PORT/PROTO" (or
        "over-limit" for connections cut by the connection limit)."""
        out = []
        for line in self._require().net_refused().splitlines():
            dest, _, n = line.rpartition(" ")
            if dest:
                out.append((dest, int(n)))
        return out

    async def write_file(self, path, data, mode=0o644):
        """Writes bytes or str to a file in the box (small files)."""
        from . import _files
        return await _files.write_file(self, path, data, mode)

    async def read_file(self, path, max_bytes=64 << 20):
        """Reads a file of the box (bytes)."""
        from . import _files
        return await _files.read_file(self, path, max_bytes)

    async def copy_in(self, host_path, box_path):
        """Copies a host file or directory to box_path (its new name)."""
        from . import _files
        return await _files.copy_in(self, host_path, box_path)

    async def copy_out(self, box_path, host_path, max_bytes=256 << 20):
        """Copies a file or directory of the box to host_path (its new name)."""
        from . import _files
        return await _files.copy_out(self, box_path, host_path, max_bytes)


async def _close_quietly(sb):
    fut = in_thread(sb.close)
    try:
        await asyncio.shield(fut)
    except asyncio.CancelledError:
        # Cancelled again while closing: the thread finishes the job.
        raise


class ExecStream:
    def __init__(self, exec_fn, argv, kw):
        self._exec, self._argv, self._kw = exec_fn, argv, kw
        self._q = None
        self._task = None
        self.result = None

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self._task is None:
            self._q = asyncio.Queue()
            q = self._q

            def out(stream):
                def cb(chunk):
                    q.put_nowait(chunk)
                return cb

            kw = dict(self._kw)
            for k in ("on_stdout", "on_stderr"):
                if kw.get(k):
                    raise errors.InvalidArgumentError("stream() takes no %s callback" % k)
            kw["_chunks"] = out
            self._task = asyncio.ensure_future(_exec_chunks(self._exec, self._argv, kw, q))
        item = await self._q.get()
        if item is None:
            self.result = await self._task
            raise StopAsyncIteration
        return item

    async def aclose(self):
        if self._task and not self._task.done():
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass


async def _exec_chunks(exec_fn, argv, kw, q):
    kw.pop("_chunks")
    try:
        return await exec_fn(*argv, on_stdout=_Tag(q, "stdout"), on_stderr=_Tag(q, "stderr"), **kw)
    finally:
        q.put_nowait(None)


class _Tag:
    """A callback that queues OutputChunks (for ExecStream)."""
    wants_chunk = True

    def __init__(self, q, stream):
        self.q, self.stream = q, stream

    def __call__(self, chunk):
        self.q.put_nowait(chunk)


class _Output:
    """Accumulates one stream (bounded) and feeds its callback."""

    def __init__(self, name, cb, limit):
        self.name = name
        self.cb = cb
        self.limit = limit
        self.buf = bytearray()
        self.truncated = False
        self.dec = codecs.getincrementaldecoder("utf-8")("replace")

    async def feed(self, data):
        room = self.limit - len(self.buf)
        if room > 0:
            self.buf += data[:room]
        if len(data) > room:
            self.truncated = True
        if self.cb is not None:
            text = self.dec.decode(data)
            if getattr(self.cb, "wants_chunk", False):
                self.cb(OutputChunk(self.name, bytes(data), text))
            elif text:
                r = self.cb(text)
                if asyncio.iscoroutine(r) or isinstance(r, asyncio.Future):
                    await r

    async def finish(self):
        if self.cb is not None and not getattr(self.cb, "wants_chunk", False):
            text = self.dec.decode(b"", final=True)
            if text:
                r = self.cb(text)
                if asyncio.iscoroutine(r) or isinstance(r, asyncio.Future):
                    await r


def _pump(loop, q, proc, stream):
    """Thread: reads one stream of proc until its end, into the loop's queue."""
    try:
        while True:
            data = proc.read(stream)
            if not data:
                break
            loop.call_soon_threadsafe(q.put_nowait, (stream, data))
    except BaseException as e:
        try:
            loop.call_soon_threadsafe(q.put_nowait, (stream, e))
        except RuntimeError:
            return
    try:
        loop.call_soon_threadsafe(q.put_nowait, (stream, None))
    except RuntimeError:
        pass


def _feed_stdin(proc, data):
    try:
        if data:
            view = memoryview(data)
            for off in range(0, len(view), 1 << 20):
                proc.write(bytes(view[off:off + (1 << 20)]))
        proc.close_stdin()
    except errors.BoxliteError:
        pass  # the process closed its stdin or ended


def _kill_quietly(proc, sig=signal.SIGKILL):
    try:
        proc.signal(sig)
    except errors.BoxliteError:
        pass


async def _run_process(sb, args, env, cwd, user, timeout, stdin, on_stdout, on_stderr, limit,
                       on_started=None):
    """Starts args in the box, streams its output, waits; returns ExecResult.
    The building block of exec(), the file helpers and CodeBox."""
    t0 = time.monotonic()
    try:
        proc = await in_thread(sb.exec, args, env, cwd, user, stdin is not None)
    except (errors.NotFoundError, errors.BoxliteError) as e:
        failed = _start_failure(e.message, args[0]) if type(e) in (errors.NotFoundError, errors.BoxliteError,
                                                                    errors.HostError, errors.InvalidArgumentError) else None
        if failed is None:
            raise
        code, msg = failed
        return ExecResult(b"", ("boxlite: %s\n" % msg).encode(), exit_code=code, duration=time.monotonic() - t0)
    loop = asyncio.get_running_loop()
    q = asyncio.Queue()
    outs = {1: _Output("stdout", on_stdout, limit), 2: _Output("stderr", on_stderr, limit)}
    for s in (1, 2):
        threading.Thread(target=_pump, args=(loop, q, proc, s), daemon=True, name="boxlite-read").start()
    if stdin is not None:
        threading.Thread(target=_feed_stdin, args=(proc, bytes(stdin)), daemon=True,
                         name="boxlite-stdin").start()
    waiter = in_thread(proc.wait)
    read_error = []

    async def collect():
        open_streams = 2
        while open_streams:
            stream, item = await q.get()
            if item is None:
                open_streams -= 1
            elif isinstance(item, BaseException):
                read_error.append(item)
            else:
                await outs[stream].feed(item)
        for o in outs.values():
            await o.finish()

    collector = asyncio.ensure_future(collect())
    timed_out = False
    try:
        try:
            if timeout is None:
                status = await asyncio.shield(waiter)
            else:
                # The call's deadline counts from its start (process start-up included).
                left = max(timeout - (time.monotonic() - t0), 0)
                status = await asyncio.wait_for(asyncio.shield(waiter), left)
        except asyncio.TimeoutError as e:
            if isinstance(e, errors.BoxliteError):
                raise  # the box's deadline (boxlite.TimeoutError is a TimeoutError too)
            timed_out = True
            # Kill in the background and raise soon whatever the guest does:
            # the caller hears of the timeout within a fraction of a second.
            threading.Thread(target=_kill_quietly, args=(proc,), daemon=True).start()
            status = None
            try:
                status = await asyncio.wait_for(asyncio.shield(waiter), 0.3)
            except (asyncio.TimeoutError, errors.BoxliteError):
                pass
        # Output still in flight after the exit: collected in full, except
        # after a kill (children of the process may hold the pipes open).
        if timed_out:
            try:
                await asyncio.wait_for(asyncio.shield(collector), 0.2)
            except asyncio.TimeoutError:
                pass
        else:
            await asyncio.shield(collector)
    except asyncio.CancelledError:
        # The awaiting task was cancelled: the process goes too.
        threading.Thread(target=_kill_quietly, args=(proc,), daemon=True).start()
        collector.cancel()
        raise
    except BaseException:
        collector.cancel()
        raise
    finally:
        if waiter.done() and collector.done():
            proc.release()
    res = ExecResult(bytes(outs[1].buf), bytes(outs[2].buf), truncated=outs[1].truncated or outs[2].truncated,
                     duration=time.monotonic() - t0)
    if status is not None:
        res.exit_code, res.signal, res.oom_killed, oom_msg = status
    else:
        res.exit_code, res.signal = 128 + signal.SIGKILL, signal.SIGKILL
        oom_msg = None
    if timed_out:
        raise errors.TimeoutError("%s: timed out after %g s (killed)" % (args[0], timeout), scope="call",
                                  result=res)
    if oom_msg is not None:
        raise errors.OutOfMemoryError("%s: %s" % (args[0], oom_msg), result=res)
    if read_error and not isinstance(read_error[0], errors.StateError):
        raise read_error[0]
    return res
