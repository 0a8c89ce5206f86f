"""The thread side of the SDK: one _Sandbox per box owns the bl_sandbox
pointer and makes sure it is freed exactly once, after every call using it
has returned (the library frees the memory in bl_sandbox_destroy).

All functions here block; the async classes run them in threads.
"""

import ctypes
import os
import threading

from . import _ffi
from . import errors

READ_CHUNK = 64 << 10


class Sandbox:
    """A bl_sandbox and the calls in flight on it."""

    def __init__(self):
        self.lib = _ffi.library()
        self._cond = threading.Condition()
        self._ptr = None  # bl_sandbox * once created
        self._pending = None  # the handle during bl_sandbox_create (on_handle)
        self._creating = False
        self._active = 0  # C calls in flight on _ptr
        self._closed = False
        self._destroyed = False
        self._procs = set()
        self.id = None
        self.dir = None
        self._on_handle = None

    # ---------------------------------------------------------------- create

    def create(self, o):
        """o: dict of bl_sandbox_options fields (str/int/bool/list)."""
        opts = _ffi.SandboxOptions()
        keep = []
        for k, v in o.items():
            if v is None:
                continue
            if k in ("args", "env", "net_allow", "net_deny", "net_publish"):
                arr = _ffi.strv(v)
                keep.append(arr)
                setattr(opts, k, arr)
            elif isinstance(v, str):
                b = v.encode()
                keep.append(b)
                setattr(opts, k, b)
            else:
                setattr(opts, k, v)
        opts.owner = b"python"

        def on_handle(sb, user):
            with self._cond:
                self._pending = sb
                if sb and self._closed:
                    self.lib.lib.bl_sandbox_cancel(sb)

        cb = _ffi.ON_HANDLE(on_handle)
        opts.on_handle = cb
        self._on_handle = cb  # alive as long as the library may call it
        ret = ctypes.c_void_p()
        err = _ffi.BlError()
        with self._cond:
            if self._closed:
                raise errors.CancelledError("box closed before it started")
            self._creating = True
        r = -1
        try:
            r = self.lib.lib.bl_sandbox_create(ctypes.byref(opts), ctypes.byref(ret), ctypes.byref(err))
        finally:
            with self._cond:
                self._creating = False
                self._pending = None
                if r == 0:
                    self._ptr = ret.value
                    self.id = self.lib.lib.bl_sandbox_id(self._ptr).decode()
                    self.dir = self.lib.lib.bl_sandbox_dir(self._ptr).decode()
                closed = self._closed
                self._cond.notify_all()
        if r < 0:
            cls = None
            msg = err.msg.decode("utf-8", "replace")
            if err.code == errors.BL_ENOTFOUND and msg.startswith("image"):
                cls = errors.ImageNotFoundError
            if closed and err.code == errors.BL_ECANCELED:
                cls = errors.CancelledError
            _ffi.raise_for(err, "create box", cls)
        if closed:
            raise errors.CancelledError("box closed while it started")
        # The container's init: the library's pause process (no args given),
        # so that execs have a running container.
        ptr = self._enter()
        init = ctypes.c_void_p()
        try:
            r = self.lib.lib.bl_sandbox_start(ptr, ctypes.byref(init), ctypes.byref(err))
        finally:
            self._leave()
        if r < 0:
            raise_call(err, self, "start box")
        p = Process(self, init.value)
        with self._cond:
            self._procs.add(p)

    # ---------------------------------------------------------------- calls

    def _enter(self):
        with self._cond:
            if self._closed or self._ptr is None:
                raise errors.StateError("the box is closed" if self._closed else "the box is not started")
            self._active += 1
            return self._ptr

    def _leave(self):
        with self._cond:
            self._active -= 1
            if self._active == 0:
                self._cond.notify_all()

    @property
    def closed(self):
        return self._closed

    def qemu_pid(self):
        ptr = self._enter()
        try:
            return self.lib.lib.bl_sandbox_qemu_pid(ptr)
        finally:
            self._leave()

    def port(self, guest_port, proto="tcp"):
        ptr = self._enter()
        try:
            addr = ctypes.create_string_buffer(64)
            hp = ctypes.c_uint()
            err = _ffi.BlError()
            r = self.lib.lib.bl_sandbox_port(ptr, guest_port, proto.encode(), addr, 64, ctypes.byref(hp),
                                             ctypes.byref(err))
        finally:
            self._leave()
        if r < 0:
            _ffi.raise_for(err, "port %s/%s" % (guest_port, proto))
        return addr.value.decode(), hp.value

    def net_refused(self):
        ptr = self._enter()
        try:
            out = ctypes.c_void_p()
            err = _ffi.BlError()
            r = self.lib.lib.bl_sandbox_net_refused(ptr, ctypes.byref(out), ctypes.byref(err))
        finally:
            self._leave()
        if r < 0:
            _ffi.raise_for(err, "refused connections")
        try:
            return ctypes.string_at(out.value).decode("utf-8", "replace")
        finally:
            _ffi.libc_free(out.value)

    def exec(self, argv, env=None, cwd=None, user=None, stdin_open=False):
        po = _ffi.ProcessOptions()
        a = _ffi.strv(argv)
        e = _ffi.strv(env) if env is not None else None
        po.args = a
        if e is not None:
            po.env = e
        po.cwd = _ffi.cstr(cwd)
        po.user = _ffi.cstr(user)
        po.stdin_open = bool(stdin_open)
        ret = ctypes.c_void_p()
        err = _ffi.BlError()
        ptr = self._enter()
        try:
            r = self.lib.lib.bl_sandbox_exec(ptr, ctypes.byref(po), ctypes.byref(ret), ctypes.byref(err))
        finally:
            self._leave()
        if r < 0:
            raise_call(err, self, "exec %s" % argv[0])
        p = Process(self, ret.value)
        with self._cond:
            self._procs.add(p)
        return p

    def copy_in_as(self, host_path, guest_path):
        """host_path (not followed if a symlink) becomes guest_path."""
        err = _ffi.BlError()
        ptr = self._enter()
        try:
            r = self.lib.lib.bl_sandbox_copy_in_as(ptr, os.fsencode(host_path), guest_path.encode(),
                                                  ctypes.byref(err))
        finally:
            self._leave()
        if r < 0:
            raise_call(err, self, "copy in")

    def copy_out(self, guest_path, host_dir, max_bytes=0):
        """guest_path becomes host_dir/BASENAME (max_bytes: 0 the default)."""
        err = _ffi.BlError()
        ptr = self._enter()
        try:
            r = self.lib.lib.bl_sandbox_copy_out_limit(ptr, guest_path.encode(), os.fsencode(host_dir),
                                                      int(max_bytes), ctypes.byref(err))
        finally:
            self._leave()
        if r < 0:
            raise_call(err, self, "copy out")

    # ---------------------------------------------------------------- close

    def cancel(self):
        """Kills the VM now; pending and later calls fail (thread-safe)."""
        with self._cond:
            p = self._ptr or self._pending
            if p and not self._destroyed:
                self.lib.lib.bl_sandbox_cancel(p)

    def close(self):
        """Destroys the box: cancels calls in flight, waits for them to
        return, then releases everything (VM, QEMU, virtiofsd, mount, state
        directory). Idempotent, thread-safe."""
        with self._cond:
            if self._destroyed:
                return
            self._closed = True
            p = self._ptr or self._pending
            if p and (self._active or self._creating):
                self.lib.lib.bl_sandbox_cancel(p)
            while self._active or self._creating:
                self._cond.wait(0.5)
            if self._destroyed:
                return
            self._destroyed = True
            ptr, self._ptr = self._ptr, None
            procs, self._procs = self._procs, set()
        for pr in procs:
            pr._free()
        if ptr:
            self.lib.lib.bl_sandbox_destroy(ptr)


def raise_call(err, sb, what):
    msg = err.msg.decode("utf-8", "replace")
    cls = None
    if err.code == errors.BL_ECANCELED and sb.closed:
        cls = errors.CancelledError
    if err.code == errors.BL_ETIMEOUT:
        e = errors.TimeoutError("%s: %s" % (what, msg), code="BL_ETIMEOUT", scope="box")
        raise e
    _ffi.raise_for(err, what, cls)


class Process:
    """A bl_process; freed when its box closes or when release() is called
    after every thread using it has returned."""

    def __init__(self, sb, ptr):
        self.sb = sb
        self._ptr = ptr
        self._active = 0
        self._released = False
        self._freed = False
        self.pid = sb.lib.lib.bl_process_pid(ptr)

    def _enter(self):
        self.sb._enter()
        with self.sb._cond:
            if self._freed or self._released:
                self.sb._active -= 1
                self.sb._cond.notify_all()
                raise errors.StateError("the process is released")
            self._active += 1
            return self._ptr

    def _leave(self):
        with self.sb._cond:
            self._active -= 1
            done = self._released and self._active == 0
        self.sb._leave()
        if done:
            self._free()

    def _free(self):
        with self.sb._cond:
            if self._freed or self._active:
                return
            self._freed = True
            self.sb._procs.discard(self)
            ptr, self._ptr = self._ptr, None
        if ptr:
            self.sb.lib.lib.bl_process_free(ptr)

    def release(self):
        with self.sb._cond:
            self._released = True
            idle = self._active == 0
        if idle:
            self._free()

    def read(self, stream, n=READ_CHUNK):
        """Blocks for output of stream 1 or 2; b"" at end of stream."""
        buf = ctypes.create_string_buffer(n)
        err = _ffi.BlError()
        ptr = self._enter()
        try:
            r = self.sb.lib.lib.bl_process_read(ptr, stream, buf, n, ctypes.byref(err))
        finally:
            self._leave()
        if r < 0:
            raise_call(err, self.sb, "read")
        return buf.raw[:r]

    def write(self, data):
        err = _ffi.BlError()
        ptr = self._enter()
        try:
            r = self.sb.lib.lib.bl_process_write(ptr, data, len(data), ctypes.byref(err))
        finally:
            self._leave()
        if r < 0:
            raise_call(err, self.sb, "write stdin")

    def close_stdin(self):
        err = _ffi.BlError()
        ptr = self._enter()
        try:
            r = self.sb.lib.lib.bl_process_close_stdin(ptr, ctypes.byref(err))
        finally:
            self._leave()
        if r < 0:
            raise_call(err, self.sb, "close stdin")

    def signal(self, sig):
        err = _ffi.BlError()
        ptr = self._enter()
        try:
            r = self.sb.lib.lib.bl_process_signal(ptr, sig, ctypes.byref(err))
        finally:
            self._leave()
        if r < 0:
            raise_call(err, self.sb, "signal")

    def wait(self):
        """(status, signal, oom_killed, error or None)."""
        ex = _ffi.Exit()
        err = _ffi.BlError()
        ptr = self._enter()
        try:
            r = self.sb.lib.lib.bl_process_wait(ptr, ctypes.byref(ex), ctypes.byref(err))
        finally:
            self._leave()
        if r < 0 and err.code != errors.BL_EOOM:
            raise_call(err, self.sb, "wait")
        return ex.status, ex.signal, bool(ex.oom_killed), (err.msg.decode("utf-8", "replace") if r < 0 else None)
