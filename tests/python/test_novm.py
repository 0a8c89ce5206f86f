"""Checks that need no VM: the ctypes structures against runtime/boxlite.h,
the strict unpacking of guest archives, the offline build backend."""

import ctypes
import os
import subprocess
import sys
import tempfile

import pytest

import boxlite
from boxlite import _ffi
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
