"""File transfer between the host and a box, through libboxlite.

copy_in / copy_out call bl_sandbox_copy_in_as / bl_sandbox_copy_out_limit:
the agent's own archiver runs inside the box (no tar needed in the image,
and a tar the box replaced is never used), and the host side packs or
unpacks in-process with libarchive under the image-layer rules of
runtime/copy.c (entries only under the named path, no devices, FIFOs,
setuid bits or hard links, symlinks leaving the copy left out, byte and
entry limits, a fresh staging directory renamed into place). read_file and
write_file are copies through a private temporary directory.
"""

import os
import posixpath
import shutil
import stat
import tempfile

from . import errors

MAX_FILE = 64 << 20
MAX_COPY_OUT = 256 << 20


def _box_path(p):
    p = os.fspath(p)
    if not isinstance(p, str) or not p.startswith("/") or "\0" in p:
        raise errors.InvalidArgumentError("box path must be absolute, not %r" % (p,))
    norm = posixpath.normpath(p)
    if norm == "/":
        raise errors.InvalidArgumentError("box path must name a file or directory, not /")
    return norm


def _fail(what, path, e):
    """A library error as the SDK's: BoxFileError (with errno) for what the
    box's side refused (missing file, no permission, no space) or a limit;
    a hostile archive stays a ProtocolError."""
    msg = e.message
    low = msg.lower()
    if isinstance(e, errors.ProtocolError) and "archiver failed" not in low and "cut off" not in low:
        raise e
    f = errors.BoxFileError("%s %s: %s" % (what, path, msg), code=e.code, sys_errno=e.sys_errno)
    if "no such file" in low:
        f.errno = 2
    elif "permission denied" in low:
        f.errno = 13
    elif "no space" in low:
        f.errno = 28
    elif "not a regular file" in low:
        f.errno = 21
    raise f from None


async def _call(fn, *args):
    import asyncio
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


async def write_file(box, path, data, mode=0o644):
    path = _box_path(path)
    if isinstance(data, str):
        data = data.encode()
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise errors.InvalidArgumentError("data must be bytes or str")
    if len(data) > MAX_FILE:
        raise errors.InvalidArgumentError("write_file is for files up to %d MiB (use copy_in)" % (MAX_FILE >> 20))
    if not isinstance(mode, int) or not 0 <= mode <= 0o777:
        raise errors.InvalidArgumentError("mode must be permission bits (0-0o777)")
    sb = box._require()
    with tempfile.TemporaryDirectory(prefix="boxlite-write-") as tmp:
        src = os.path.join(tmp, "f")
        fd = os.open(src, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(src, mode)
        try:
            await _call(sb.copy_in_as, src, path)
        except errors.BoxliteError as e:
            _fail("write_file", path, e)


async def read_file(box, path, max_bytes=MAX_FILE):
    path = _box_path(path)
    sb = box._require()
    with tempfile.TemporaryDirectory(prefix="boxlite-read-") as tmp:
        try:
            await _call(sb.copy_out, path, tmp, max_bytes)
        except errors.BoxliteError as e:
            _fail("read_file", path, e)
        got = os.path.join(tmp, posixpath.basename(path))
        st = os.lstat(got)
        if not stat.S_ISREG(st.st_mode):
            e = errors.BoxFileError("read_file %s: not a regular file" % path)
            e.errno = 21
            raise e
        if st.st_size > max_bytes:
            raise errors.BoxFileError("read_file %s: larger than %d bytes" % (path, max_bytes))
        with open(got, "rb") as f:
            return f.read(max_bytes + 1)


async def copy_in(box, host_path, box_path):
    host_path = os.fspath(host_path)
    if not os.path.lexists(host_path):
        raise FileNotFoundError(2, "No such file or directory", host_path)
    dest = _box_path(box_path)
    sb = box._require()
    try:
        await _call(sb.copy_in_as, os.path.abspath(host_path), dest)
    except errors.BoxliteError as e:
        _fail("copy_in", dest, e)


async def copy_out(box, box_path, host_path, max_bytes=MAX_COPY_OUT):
    src = _box_path(box_path)
    name = posixpath.basename(src)
    host_path = os.path.abspath(os.fspath(host_path))
    if os.path.isdir(host_path) and not os.path.islink(host_path):
        raise FileExistsError(17, "destination is a directory (give the new name)", host_path)
    sb = box._require()
    stage = tempfile.mkdtemp(prefix=".boxlite-copy-", dir=os.path.dirname(host_path))
    try:
        try:
            await _call(sb.copy_out, src, stage, max_bytes)
        except errors.BoxliteError as e:
            _fail("copy_out", src, e)
        os.replace(os.path.join(stage, name), host_path)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
