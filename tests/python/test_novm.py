"""Checks that need no VM: the ctypes structures against runtime/boxlite.h,
the strict unpacking of guest archives, the offline build backend."""

import ctypes
import io
import os
import subprocess
import sys
import tarfile
import tempfile

import pytest

import boxlite
from boxlite import _ffi, _files
from conftest import BUILD, REPO

pytestmark = pytest.mark.novm


def _c_layout(struct, fields):
    src = "#include <stddef.h>\n#include <stdio.h>\n#include \"boxlite.h\"\nint main(void) {\n"
    src += '\tprintf("%%zu\\n", sizeof(%s));\n' % struct
    for f in fields:
        src += '\tprintf("%%zu\\n", offsetof(%s, %s));\n' % (struct, f)
    src += "\treturn 0;\n}\n"
    with tempfile.TemporaryDirectory() as d:
        c, exe = os.path.join(d, "t.c"), os.path.join(d, "t")
        with open(c, "w") as f:
            f.write(src)
        subprocess.run(["cc", "-I", os.path.join(REPO, "runtime"), "-I", os.path.join(REPO, "common"), c,
                        "-o", exe], check=True)
        return [int(x) for x in subprocess.run([exe], check=True, capture_output=True).stdout.split()]


@pytest.mark.parametrize("cls,name", [(_ffi.SandboxOptions, "bl_sandbox_options"),
                                      (_ffi.ProcessOptions, "bl_process_options"),
                                      (_ffi.Exit, "bl_exit"), (_ffi.BlError, "bl_error_t")])
def test_abi_matches_header(cls, name):
    fields = [f[0] for f in cls._fields_]
    got = [ctypes.sizeof(cls)] + [getattr(cls, f).offset for f in fields]
    assert got == _c_layout(name, fields), "ctypes %s differs from boxlite.h" % name


def _tar(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, kind, data in entries:
            ti = tarfile.TarInfo(name)
            ti.type = kind
            if kind == tarfile.SYMTYPE or kind == tarfile.LNKTYPE:
                ti.linkname = data
                tf.addfile(ti)
            elif kind == tarfile.REGTYPE:
                ti.size = len(data)
                ti.mode = 0o4777
                tf.addfile(ti, io.BytesIO(data))
            else:
                tf.addfile(ti)
    return buf.getvalue()


D, F, L, H, C = tarfile.DIRTYPE, tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE


@pytest.mark.parametrize("entries", [
    [("top", D, None), ("top/../x", F, b"x")],
    [("/etc/x", F, b"x")],
    [("other/x", F, b"x")],
    [("top", D, None), ("top/l", L, "/"), ("top/l/x", F, b"x")],
    [("top", D, None), ("top/h", H, "/etc/passwd"), ("top/h/x", F, b"x")],
    [("top", D, None), ("top/f", F, b"x"), ("top/f/x", F, b"x")],
    [("top", D, None), ("top/a\\b", F, b"x")],
    [("top", D, None), ("top/" + "/".join(["d"] * 80) + "/x", F, b"x")],
])
def test_unpack_refuses_escapes(entries, tmp_path):
    with pytest.raises(boxlite.ProtocolError):
        _files._unpack(_tar(entries), "top", str(tmp_path), _files._Limits(1 << 20))
    for dirpath, dirs, files in os.walk(tmp_path):
        for n in dirs + files:
            p = os.path.join(dirpath, n)
            assert not os.path.islink(p)
            assert os.path.realpath(p).startswith(str(tmp_path))


def test_unpack_limits_and_modes(tmp_path):
    os.mkdir(tmp_path / "a")
    with pytest.raises(boxlite.BoxFileError):
        _files._unpack(_tar([("top", D, None), ("top/big", F, b"y" * 5000)]), "top", str(tmp_path / "a"),
                       _files._Limits(4096))
    os.mkdir(tmp_path / "b")
    kind = _files._unpack(_tar([("top", D, None), ("top/s", F, b"data"), ("top/dev", C, None),
                                ("top/l", L, "/etc")]), "top", str(tmp_path / "b"), _files._Limits(1 << 20))
    assert kind == "dir"
    top = tmp_path / "b" / "top"
    assert sorted(os.listdir(top)) == ["s"]  # no device, no link
    assert (top / "s").read_bytes() == b"data"
    assert os.stat(top / "s").st_mode & 0o7777 == 0o755  # setuid and group/other write dropped
    with pytest.raises(boxlite.ProtocolError):
        _files._unpack(b"not a tar archive at all" * 40, "top", str(tmp_path), _files._Limits(1 << 20))


def test_offline_pip_install(tmp_path):
    """`pip install ./sdk/python` into a fresh venv with no index reachable."""
    venv = tmp_path / "venv"
    r = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True)
    if r.returncode != 0:
        print("SKIP: no venv/ensurepip for %s: %s" % (sys.executable, r.stderr.strip()[-200:]))
        pytest.skip("venv unavailable")
    py = str(venv / "bin" / "python")
    r = subprocess.run([py, "-m", "pip", "install", "--no-index", "--disable-pip-version-check", "-q",
                        os.path.join(REPO, "sdk", "python")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([py, "-c", "import boxlite, boxlite.sync, boxlite._install as i; "
                        "print(boxlite.__version__, i.BUILD_DIRS)"], capture_output=True, text=True,
                       cwd=str(tmp_path), env={"PATH": os.environ["PATH"]})
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("0.1.0 [")


def test_library_found_and_errors_mapped():
    if not os.path.exists(os.path.join(BUILD, "libboxlite.so")):
        pytest.skip("no libboxlite.so")
    lib = _ffi.library()
    assert lib.lib.bl_code_name(2)  # the library answers
    e = boxlite.errors.from_code(boxlite.errors.BL_EOOM, "msg")
    assert isinstance(e, boxlite.ResourceError) and e.kind == "memory" and e.code == "BL_EOOM"
    assert issubclass(boxlite.TimeoutError, boxlite.BoxliteError) and issubclass(boxlite.TimeoutError, TimeoutError)
    for c in range(1, 15):
        assert isinstance(boxlite.errors.from_code(c, "m"), boxlite.BoxliteError)
