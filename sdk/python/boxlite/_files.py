"""File transfer between the host and a box, over exec + stdin/stdout.

Everything file-related lives in this one module so it can switch to the
agent's file-copy RPC when there is one. Until then:

- write_file / read_file: `cat` in the box, data through the process's
  stdin / stdout (bounded);
- copy_in: a tar made here (from host files) unpacked by `tar -x` in the box;
- copy_out: `tar -c` in the box, read back bounded, and unpacked here by our
  own strict reader, never by tarfile.extract: the archive comes from the
  guest and is hostile. Only regular files and directories, names under the
  destination only (no absolute paths, no "..", no links), permission bits
  masked, size and entry limits; it is unpacked into a fresh staging
  directory beside the destination and renamed into place.
"""

import io
import os
import posixpath
import shutil
import stat
import tarfile
import tempfile

from . import errors

MAX_FILE = 64 << 20
MAX_COPY_OUT = 256 << 20
MAX_ENTRIES = 100000
MAX_DEPTH = 64


def _box_path(p):
    p = os.fspath(p)
    if not isinstance(p, str) or not p.startswith("/") or "\0" in p:
        raise errors.InvalidArgumentError("box path must be absolute, not %r" % (p,))
    norm = posixpath.normpath(p)
    if norm == "/":
        raise errors.InvalidArgumentError("box path must name a file or directory, not /")
    return norm


async def _sh(box, script, *args, stdin=None, limit=MAX_FILE):
    from ._box import _run_process
    sb = box._require()
    return await _run_process(sb, ["/bin/sh", "-c", script, "sh"] + list(args), None, None, None, None,
                              stdin, None, None, limit)


def _fail(what, path, res):
    msg = res.stderr.strip()[-500:] or "exit status %d" % res.exit_code
    e = errors.BoxFileError("%s %s: %s" % (what, path, msg), result=res)
    low = msg.lower()
    if "no such file" in low:
        e.errno = 2
    elif "permission denied" in low:
        e.errno = 13
    elif "no space" in low:
        e.errno = 28
    raise e


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
    res = await _sh(box, 'cat > "$1" && chmod "$2" "$1"', path, "%o" % mode, stdin=bytes(data))
    if res.exit_code != 0:
        _fail("write_file", path, res)


async def read_file(box, path, max_bytes=MAX_FILE):
    path = _box_path(path)
    res = await _sh(box, 'test -f "$1" || { echo "$1: No such file or not a regular file" >&2; exit 2; }; '
                         'exec cat -- "$1"', path, limit=max_bytes + 1)
    if res.exit_code != 0:
        _fail("read_file", path, res)
    if len(res.stdout_bytes) > max_bytes or res.truncated:
        raise errors.BoxFileError("read_file %s: larger than %d bytes" % (path, max_bytes))
    return res.stdout_bytes


def _host_tar(host_path, arcname):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        def strip(ti):
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = ""
            if not (ti.isfile() or ti.isdir() or ti.issym()):
                return None
            ti.mode &= 0o777
            return ti
        tf.add(host_path, arcname=arcname, recursive=True, filter=strip)
    return buf.getvalue()


async def copy_in(box, host_path, box_path):
    import asyncio
    host_path = os.fspath(host_path)
    if not os.path.lexists(host_path):
        raise FileNotFoundError(2, "No such file or directory", host_path)
    dest = _box_path(box_path)
    parent, name = posixpath.split(dest)
    data = await asyncio.get_running_loop().run_in_executor(None, _host_tar, host_path, name)
    if len(data) > 1 << 30:
        raise errors.InvalidArgumentError("copy_in: over 1 GiB")
    res = await _sh(box, 'mkdir -p -- "$1" && tar -x -f - -C "$1" -o -m', parent or "/",
                    stdin=data, limit=1 << 16)
    if res.exit_code != 0:
        _fail("copy_in", dest, res)


class _Limits:
    def __init__(self, max_bytes):
        self.max_bytes = max_bytes
        self.total = 0
        self.entries = 0


def _safe_parts(name, root):
    """The path components of a guest tar entry, which must lie under root."""
    if "\0" in name or name.startswith("/") or "\\" in name:
        raise errors.ProtocolError("copy_out: refused entry %r (absolute or odd name)" % name)
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or parts[0] != root:
        raise errors.ProtocolError("copy_out: refused entry %r (outside %s)" % (name, root))
    for p in parts:
        if p == ".." or len(p) > 255:
            raise errors.ProtocolError("copy_out: refused entry %r" % name)
    if len(parts) > MAX_DEPTH:
        raise errors.ProtocolError("copy_out: entry %r is too deep" % name)
    return parts


def _unpack(data, root, stage, lim):
    """Unpacks the guest's tar (bytes) into stage; only root's tree."""
    made_dirs = {()}
    not_dirs = set()  # entries that were links, devices, files: never parents
    top_kind = None
    try:
        tf = tarfile.open(fileobj=io.BytesIO(data), mode="r:")
    except tarfile.TarError as e:
        raise errors.ProtocolError("copy_out: not a tar archive (%s)" % e)
    with tf:
        while True:
            try:
                m = tf.next()
            except tarfile.TarError as e:
                raise errors.ProtocolError("copy_out: bad archive (%s)" % e)
            if m is None:
                break
            lim.entries += 1
            if lim.entries > MAX_ENTRIES:
                raise errors.ProtocolError("copy_out: more than %d entries" % MAX_ENTRIES)
            parts = _safe_parts(m.name, root)
            if len(parts) == 1:
                top_kind = "dir" if m.isdir() else "file" if m.isreg() else "other"
            for i in range(1, len(parts)):
                if tuple(parts[:i]) in not_dirs:
                    raise errors.ProtocolError("copy_out: refused entry %r (below a non-directory)" % m.name)
            if not m.isdir():
                not_dirs.add(tuple(parts))
            if not (m.isreg() or m.isdir()):
                # Links, devices, fifos: not copied (a link could point anywhere).
                continue
            # Every parent must be a directory this unpack made itself.
            for i in range(1, len(parts)):
                if tuple(parts[:i]) not in made_dirs:
                    d = os.path.join(stage, *parts[:i])
                    try:
                        os.mkdir(d, 0o700)
                    except FileExistsError:
                        raise errors.ProtocolError("copy_out: entry %r below a non-directory" % m.name)
                    made_dirs.add(tuple(parts[:i]))
            target = os.path.join(stage, *parts)
            mode = m.mode & 0o777
            if m.isdir():
                if tuple(parts) not in made_dirs:
                    try:
                        os.mkdir(target, 0o700)
                    except FileExistsError:
                        raise errors.ProtocolError("copy_out: duplicate entry %r" % m.name)
                    made_dirs.add(tuple(parts))
                os.chmod(target, (mode | 0o700) & 0o755)
                continue
            lim.total += m.size
            if m.size < 0 or lim.total > lim.max_bytes:
                raise errors.BoxFileError("copy_out: more than %d bytes" % lim.max_bytes)
            src = tf.extractfile(m)
            # O_EXCL|O_NOFOLLOW: never through something already there.
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as out:
                left = m.size
                while left > 0:
                    chunk = src.read(min(left, 1 << 20))
                    if not chunk:
                        raise errors.ProtocolError("copy_out: truncated entry %r" % m.name)
                    out.write(chunk)
                    left -= len(chunk)
                os.fchmod(out.fileno(), mode & 0o755)
    if top_kind is None or top_kind == "other":
        raise errors.BoxFileError("copy_out: %s is not a regular file or directory" % root)
    return top_kind


async def copy_out(box, box_path, host_path, max_bytes=MAX_COPY_OUT):
    import asyncio
    src = _box_path(box_path)
    parent, name = posixpath.split(src)
    host_path = os.path.abspath(os.fspath(host_path))
    if os.path.isdir(host_path) and not os.path.islink(host_path):
        raise FileExistsError(17, "destination is a directory (give the new name)", host_path)
    res = await _sh(box, 'cd -- "$1" && exec tar -c -f - -- "$2"', parent or "/", name, limit=max_bytes + (1 << 20))
    if res.exit_code != 0:
        _fail("copy_out", src, res)
    if res.truncated:
        raise errors.BoxFileError("copy_out %s: more than %d bytes" % (src, max_bytes))
    host_parent = os.path.dirname(host_path)
    stage = tempfile.mkdtemp(prefix=".boxlite-copy-", dir=host_parent)
    try:
        def work():
            kind = _unpack(res.stdout_bytes, name, stage, _Limits(max_bytes))
            os.replace(os.path.join(stage, name), host_path)
            return kind
        await asyncio.get_running_loop().run_in_executor(None, work)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
