"""copy_in / copy_out / read_file / write_file, and a hostile guest tar."""

import os
import stat

import pytest

import boxlite
from conftest import run

FAKE_TAR = r'''#!/usr/bin/python3
# A hostile `tar -c`: whatever the host asked for, an archive trying to escape.
import io, sys, tarfile
out = io.BytesIO()
with tarfile.open(fileobj=out, mode="w") as tf:
    def add(name, data=b"x", **kw):
        ti = tarfile.TarInfo(name)
        for k, v in kw.items():
            setattr(ti, k, v)
        ti.size = len(data) if ti.type == tarfile.REGTYPE else 0
        tf.addfile(ti, io.BytesIO(data) if ti.type == tarfile.REGTYPE else None)
    mode = open("/tmp/mode").read().strip()
    add("dir", type=tarfile.DIRTYPE, mode=0o755)
    if mode == "dotdot":
        add("dir/../../escaped")
    elif mode == "absolute":
        add("/tmp/escaped-abs")
    elif mode == "symlink":
        add("dir/link", type=tarfile.SYMTYPE, linkname="/")
        add("dir/link/escaped")
    elif mode == "other-root":
        add("elsewhere/escaped")
    elif mode == "huge":
        add("dir/big", b"y" * 4096)
sys.stdout.buffer.write(out.getvalue())
'''


def test_files_round_trip(opts, tmp_path):
    async def main():
        async with boxlite.SimpleBox(image="python:slim", **opts) as box:
            await box.write_file("/tmp/hello.txt", "hello\n")
            assert await box.read_file("/tmp/hello.txt") == b"hello\n"
            await box.write_file("/tmp/bin.dat", bytes(range(256)) * 10, mode=0o600)
            assert await box.read_file("/tmp/bin.dat") == bytes(range(256)) * 10
            with pytest.raises(boxlite.BoxFileError) as ei:
                await box.read_file("/no/such/file")
            assert ei.value.errno == 2
            with pytest.raises(boxlite.InvalidArgumentError):
                await box.read_file("relative/path")

            src = tmp_path / "src"
            (src / "sub").mkdir(parents=True)
            (src / "a.txt").write_text("A")
            (src / "sub" / "b.bin").write_bytes(b"\0B")
            os.chmod(src / "a.txt", 0o755)
            await box.copy_in(src, "/home/sandbox/project")
            r = await box.exec("sh", "-c", "cd /home/sandbox/project && find . -type f | sort && cat a.txt")
            assert r.stdout == "./a.txt\n./sub/b.bin\nA"
            await box.copy_in(src / "a.txt", "/tmp/single.txt")
            assert await box.read_file("/tmp/single.txt") == b"A"

            await box.exec("sh", "-c", "mkdir -p /tmp/out/d && echo X > /tmp/out/d/x && ln -s /etc /tmp/out/l")
            await box.copy_out("/tmp/out", tmp_path / "back")
            assert (tmp_path / "back" / "d" / "x").read_text() == "X\n"
            assert not os.path.lexists(tmp_path / "back" / "l")  # links are not copied out
            await box.copy_out("/tmp/hello.txt", tmp_path / "hello.txt")
            assert (tmp_path / "hello.txt").read_text() == "hello\n"
            with pytest.raises(boxlite.BoxFileError):
                await box.copy_out("/no/such", tmp_path / "none")
            assert sorted(os.listdir(tmp_path)) == ["back", "hello.txt", "src"]
    run(main())


def test_hostile_tar_from_guest(opts, tmp_path):
    async def main():
        async with boxlite.SimpleBox(image="python:slim", user="0", **opts) as box:
            await box.write_file("/usr/local/bin/tar", FAKE_TAR, mode=0o755)
            for mode in ("dotdot", "absolute", "symlink", "other-root"):
                await box.write_file("/tmp/mode", mode)
                dest = tmp_path / ("dest-" + mode)
                with pytest.raises(boxlite.ProtocolError, match="refused entry"):
                    await box.copy_out("/tmp/dir", dest)
                    print("accepted:", mode)
                assert not os.path.lexists(dest)
            await box.write_file("/tmp/mode", "huge")
            with pytest.raises(boxlite.BoxFileError):
                await box.copy_out("/tmp/dir", tmp_path / "dest-huge", max_bytes=1000)
            # Nothing escaped, no staging directory left.
            assert sorted(os.listdir(tmp_path)) == []
            assert not os.path.exists("/tmp/escaped-abs")
            # The legitimate symlink-free case still works through the fake tar.
            await box.write_file("/tmp/mode", "plain")
            await box.copy_out("/tmp/dir", tmp_path / "ok")
            assert stat.S_ISDIR(os.lstat(tmp_path / "ok").st_mode)
    run(main())
