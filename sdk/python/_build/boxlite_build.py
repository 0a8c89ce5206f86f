"""A dependency-free PEP 517 / PEP 660 build backend for the boxlite SDK.

`pip install ./sdk/python` needs no network and no setuptools: pip's
isolated build environment has nothing to install (requires = []), and this
backend writes the pure-Python wheel itself. It also records where the
checkout's build directory is (boxlite/_install.py), so the installed package
finds build/libboxlite.so and the guest kernel without any variable set.
"""

import base64
import hashlib
import io
import os
import tarfile
import time
import zipfile

NAME = "boxlite"
VERSION = "0.1.0"
HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # sdk/python
PKG = os.path.join(HERE, NAME)
REPO_BUILD = os.path.normpath(os.path.join(HERE, "..", "..", "build"))
DIST_INFO = "%s-%s.dist-info" % (NAME, VERSION)
TAG = "py3-none-any"


def _metadata():
    readme = ""
    p = os.path.join(HERE, "README.md")
    if os.path.exists(p):
        with open(p, encoding="utf-8") as f:
            readme = f.read()
    return ("Metadata-Version: 2.1\nName: %s\nVersion: %s\n"
            "Summary: Run untrusted (AI-written) code in micro-VMs: CodeBox and SimpleBox over libboxlite\n"
            "License: Apache-2.0\nRequires-Python: >=3.9\n"
            "Description-Content-Type: text/markdown\n\n%s" % (NAME, VERSION, readme))


def _wheel_file():
    return "Wheel-Version: 1.0\nGenerator: boxlite_build %s\nRoot-Is-Purelib: true\nTag: %s\n" % (VERSION, TAG)


def _install_py():
    dirs = [REPO_BUILD] if os.path.isdir(os.path.dirname(REPO_BUILD)) else []
    return ("# Written at install time by sdk/python/_build/boxlite_build.py.\n"
            "BUILD_DIRS = %r\n" % (dirs,))


def _package_files():
    out = []
    for name in sorted(os.listdir(PKG)):
        if name.endswith(".py") and name != "_install.py":
            out.append(("%s/%s" % (NAME, name), os.path.join(PKG, name)))
    return out


class _Wheel:
    def __init__(self, path):
        self.zf = zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED)
        self.records = []

    def add(self, arcname, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        zi = zipfile.ZipInfo(arcname, date_time=(2020, 1, 1, 0, 0, 0))
        zi.external_attr = 0o644 << 16
        zi.compress_type = zipfile.ZIP_DEFLATED
        self.zf.writestr(zi, data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        self.records.append("%s,sha256=%s,%d" % (arcname, digest, len(data)))

    def close(self):
        self.records.append("%s/RECORD,," % DIST_INFO)
        zi = zipfile.ZipInfo("%s/RECORD" % DIST_INFO, date_time=(2020, 1, 1, 0, 0, 0))
        zi.external_attr = 0o644 << 16
        self.zf.writestr(zi, "\n".join(self.records) + "\n")
        self.zf.close()


def _dist_info(w):
    w.add("%s/METADATA" % DIST_INFO, _metadata())
    w.add("%s/WHEEL" % DIST_INFO, _wheel_file())
    w.add("%s/top_level.txt" % DIST_INFO, NAME + "\n")


def get_requires_for_build_wheel(config_settings=None):
    return []


def get_requires_for_build_sdist(config_settings=None):
    return []


def get_requires_for_build_editable(config_settings=None):
    return []


def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    d = os.path.join(metadata_directory, DIST_INFO)
    os.makedirs(d, exist_ok=True)
    for name, text in (("METADATA", _metadata()), ("WHEEL", _wheel_file()), ("top_level.txt", NAME + "\n")):
        with open(os.path.join(d, name), "w", encoding="utf-8") as f:
            f.write(text)
    return DIST_INFO


prepare_metadata_for_build_editable = prepare_metadata_for_build_wheel


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    name = "%s-%s-%s.whl" % (NAME, VERSION, TAG)
    w = _Wheel(os.path.join(wheel_directory, name))
    for arc, path in _package_files():
        with open(path, "rb") as f:
            w.add(arc, f.read())
    w.add("%s/_install.py" % NAME, _install_py())
    _dist_info(w)
    w.close()
    return name


def build_editable(wheel_directory, config_settings=None, metadata_directory=None):
    """PEP 660: a .pth file that puts sdk/python on sys.path."""
    name = "%s-%s-%s.whl" % (NAME, VERSION, TAG)
    w = _Wheel(os.path.join(wheel_directory, name))
    w.add("__editable__.%s.pth" % NAME, HERE + "\n")
    _dist_info(w)
    w.close()
    return name


def build_sdist(sdist_directory, config_settings=None):
    base = "%s-%s" % (NAME, VERSION)
    name = base + ".tar.gz"
    with tarfile.open(os.path.join(sdist_directory, name), "w:gz", format=tarfile.PAX_FORMAT) as tf:
        def add(rel):
            path = os.path.join(HERE, rel)
            ti = tf.gettarinfo(path, "%s/%s" % (base, rel))
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = ""
            ti.mtime = 1577836800
            with open(path, "rb") as f:
                tf.addfile(ti, f)
        for rel in ("pyproject.toml", "README.md", "_build/boxlite_build.py"):
            if os.path.exists(os.path.join(HERE, rel)):
                add(rel)
        for arc, _ in _package_files():
            add(arc)
        meta = ("Metadata-Version: 2.1\nName: %s\nVersion: %s\n" % (NAME, VERSION)).encode()
        ti = tarfile.TarInfo("%s/PKG-INFO" % base)
        ti.size, ti.mtime = len(meta), 1577836800
        tf.addfile(ti, io.BytesIO(meta))
    return name
