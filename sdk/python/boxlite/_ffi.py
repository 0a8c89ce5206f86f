"""ctypes bindings to libboxlite.so (the public C API of runtime/boxlite.h).

Nothing here blocks the event loop by itself: callers run the blocking
functions in threads (see _box.py). The structures mirror boxlite.h field for
field; tests/python/test_abi.py checks them against the header with a C
compiler.
"""

import ctypes
import ctypes.util
import os
import sys
import threading

from . import errors

BL_ERROR_MSG_MAX = 1024


class BlError(ctypes.Structure):
    _fields_ = [
        ("code", ctypes.c_int),
        ("sys_errno", ctypes.c_int),
        ("msg", ctypes.c_char * BL_ERROR_MSG_MAX),
    ]


ON_HANDLE = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p)
_strv = ctypes.POINTER(ctypes.c_char_p)


class SandboxOptions(ctypes.Structure):
    _fields_ = [
        ("image", ctypes.c_char_p),
        ("rootfs", ctypes.c_char_p),
        ("image_store", ctypes.c_char_p),
        ("memory_mib", ctypes.c_uint),
        ("vcpus", ctypes.c_uint),
        ("disk_mib", ctypes.c_uint),
        ("pids_max", ctypes.c_uint),
        ("timeout_sec", ctypes.c_uint),
        ("args", _strv),
        ("env", _strv),
        ("cwd", ctypes.c_char_p),
        ("user", ctypes.c_char_p),
        ("hostname", ctypes.c_char_p),
        ("tty", ctypes.c_bool),
        ("stdin_open", ctypes.c_bool),
        ("network", ctypes.c_bool),
        ("uri", ctypes.c_char_p),
        ("accel", ctypes.c_char_p),
        ("state_dir", ctypes.c_char_p),
        ("id", ctypes.c_char_p),
        ("kernel", ctypes.c_char_p),
        ("initrd", ctypes.c_char_p),
        ("owner", ctypes.c_char_p),
        ("on_handle", ON_HANDLE),
        ("on_handle_user", ctypes.c_void_p),
        ("bare", ctypes.c_bool),
        ("net_allow", _strv),
        ("net_deny", _strv),
        ("net_publish", _strv),
        ("net_max_conns", ctypes.c_uint),
        ("net_rate_kib", ctypes.c_uint),
    ]


class ProcessOptions(ctypes.Structure):
    _fields_ = [
        ("args", _strv),
        ("env", _strv),
        ("cwd", ctypes.c_char_p),
        ("user", ctypes.c_char_p),
        ("tty", ctypes.c_bool),
        ("stdin_open", ctypes.c_bool),
    ]


class Exit(ctypes.Structure):
    _fields_ = [
        ("status", ctypes.c_int),
        ("signal", ctypes.c_int),
        ("oom_killed", ctypes.c_bool),
    ]


def strv(items):
    """A NULL-terminated char** (the caller keeps the returned array alive)."""
    if items is None:
        return None
    arr = (ctypes.c_char_p * (len(items) + 1))()
    for i, s in enumerate(items):
        arr[i] = s.encode() if isinstance(s, str) else s
    arr[len(items)] = None
    return ctypes.cast(arr, _strv)


def cstr(s):
    if s is None:
        return None
    return s.encode() if isinstance(s, str) else s


# ------------------------------------------------------------ finding the library

_here = os.path.dirname(os.path.abspath(__file__))


def _candidates():
    env = os.environ.get("BOXLITE_LIBRARY")
    if env:
        yield env
        return
    yield os.path.join(_here, "libboxlite.so")
    build = os.environ.get("BOXLITE_BUILD")
    if build:
        yield os.path.join(build, "libboxlite.so")
    try:
        from . import _install  # written by the build backend: the checkout's build dir
        for d in getattr(_install, "BUILD_DIRS", ()):
            yield os.path.join(d, "libboxlite.so")
    except ImportError:
        pass
    # Running from the source tree (sdk/python/boxlite -> ../../../build).
    yield os.path.normpath(os.path.join(_here, "..", "..", "..", "build", "libboxlite.so"))
    for d in ("/usr/local/lib", "/usr/lib", "/usr/lib/x86_64-linux-gnu"):
        yield os.path.join(d, "libboxlite.so.0")
        yield os.path.join(d, "libboxlite.so")
    yield "libboxlite.so.0"  # the dynamic loader's own search (ld.so.cache)
    found = ctypes.util.find_library("boxlite")
    if found:
        yield found


def _guest_files(libpath):
    """Kernel and initramfs beside the library: build/ holds vmlinux and
    initramfs.cpio next to libboxlite.so; PREFIX/lib/libboxlite.so has them in
    PREFIX/lib/boxlite/. None: the library's own defaults ($BOXLITE_KERNEL,
    $BOXLITE_BUILD, /usr/local/lib/boxlite, /usr/lib/boxlite)."""
    d = os.path.dirname(os.path.realpath(libpath)) if os.path.sep in libpath else None
    kernel = os.environ.get("BOXLITE_KERNEL")
    initrd = os.environ.get("BOXLITE_INITRD")
    if d:
        for sub in (d, os.path.join(d, "boxlite")):
            if not kernel and os.access(os.path.join(sub, "vmlinux"), os.R_OK):
                kernel = os.path.join(sub, "vmlinux")
            if not initrd and os.access(os.path.join(sub, "initramfs.cpio"), os.R_OK):
                initrd = os.path.join(sub, "initramfs.cpio")
    return kernel, initrd


class Library:
    def __init__(self, path):
        self.path = path
        lib = ctypes.CDLL(path)
        self.lib = lib
        P = ctypes.c_void_p
        E = ctypes.POINTER(BlError)
        sig = {
            "bl_sandbox_create": (ctypes.c_int, [ctypes.POINTER(SandboxOptions), ctypes.POINTER(P), E]),
            "bl_sandbox_id": (ctypes.c_char_p, [P]),
            "bl_sandbox_dir": (ctypes.c_char_p, [P]),
            "bl_sandbox_qemu_pid": (ctypes.c_int, [P]),
            "bl_sandbox_port": (ctypes.c_int, [P, ctypes.c_uint, ctypes.c_char_p, ctypes.c_char_p,
                                               ctypes.c_size_t, ctypes.POINTER(ctypes.c_uint), E]),
            "bl_sandbox_net_refused": (ctypes.c_int, [P, ctypes.POINTER(ctypes.c_void_p), E]),
            "bl_sandbox_start": (ctypes.c_int, [P, ctypes.POINTER(P), E]),
            "bl_sandbox_exec": (ctypes.c_int, [P, ctypes.POINTER(ProcessOptions), ctypes.POINTER(P), E]),
            "bl_process_write": (ctypes.c_int, [P, ctypes.c_void_p, ctypes.c_size_t, E]),
            "bl_process_close_stdin": (ctypes.c_int, [P, E]),
            "bl_process_read": (ctypes.c_ssize_t, [P, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, E]),
            "bl_process_signal": (ctypes.c_int, [P, ctypes.c_int, E]),
            "bl_process_pid": (ctypes.c_uint32, [P]),
            "bl_process_wait": (ctypes.c_int, [P, ctypes.POINTER(Exit), E]),
            "bl_process_free": (None, [P]),
            "bl_sandbox_stop": (ctypes.c_int, [P, E]),
            "bl_sandbox_copy_in_as": (ctypes.c_int, [P, ctypes.c_char_p, ctypes.c_char_p, E]),
            "bl_sandbox_copy_out_limit": (ctypes.c_int, [P, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_uint64, E]),
            "bl_sandbox_cancel": (None, [P]),
            "bl_sandbox_destroy": (None, [P]),
            "bl_host_prepare": (ctypes.c_int, []),
            "bl_code_name": (ctypes.c_char_p, [ctypes.c_int]),
        }
        for name, (res, args) in sig.items():
            fn = getattr(lib, name)
            fn.restype = res
            fn.argtypes = args
        self.kernel, self.initrd = _guest_files(path)


_lib = None
_lib_lock = threading.Lock()
_libc = ctypes.CDLL(None)
_libc.free.argtypes = [ctypes.c_void_p]
_libc.free.restype = None


def libc_free(p):
    """Frees memory the library malloc'd for the caller."""
    _libc.free(p)


def library():
    """Loads libboxlite.so once (see _candidates for the search order)."""
    global _lib
    with _lib_lock:
        if _lib is not None:
            return _lib
        tried = []
        for c in _candidates():
            if os.path.sep in c and not os.path.exists(c):
                tried.append(c)
                continue
            try:
                lib = Library(c)
            except OSError as e:
                tried.append("%s (%s)" % (c, e))
                continue
            # QEMU and virtiofsd are daemonized by libvirt: as a child
            # subreaper this process reaps them (see bl_host_prepare).
            if os.environ.get("BOXLITE_NO_SUBREAPER") != "1":
                lib.lib.bl_host_prepare()
            _lib = lib
            return lib
        raise errors.BoxliteError(
            "libboxlite.so not found (set BOXLITE_LIBRARY, or run `make` / `make install`); tried: "
            + ", ".join(tried)
        )


def raise_for(err, what=None, cls=None):
    """Raises the boxlite exception for a filled bl_error_t."""
    msg = err.msg.decode("utf-8", "replace")
    if what:
        msg = "%s: %s" % (what, msg) if msg else what
    raise errors.from_code(err.code, msg, err.sys_errno, cls)
