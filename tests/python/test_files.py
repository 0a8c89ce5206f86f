"""copy_in / copy_out / read_file / write_file, and a hostile guest tar."""

import os
import stat

import pytest

import boxlite
from conftest import run

# A hostile `tar` the box puts first on PATH: the old copy path ran the
# image's tar; the agent's own archiver must never run it.
FAKE_TAR = r'''#!/bin/sh
echo "the image's tar ran" > /tmp/tar-ran
printf 'garbage, not an archive'
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


def test_copy_needs_no_tar_and_tree_is_tamed(opts, tmp_path):
    """Attack: box root replaces tar and removes the real one, and builds a
    tree with a symlink to /, a setuid file and a FIFO. Must hold: copies in
    and out work without any tar, the image's tar never runs, the symlink
    and FIFO are left out, the setuid bit is dropped, a byte limit is a
    BoxFileError with nothing left on the host."""
    async def main():
        async with boxlite.SimpleBox(image="python:slim", user="0", **opts) as box:
            r = await box.exec("sh", "-c", "rm -f /bin/tar /usr/bin/tar; command -v tar || echo none")
            assert r.stdout.strip() == "none"
            await box.write_file("/usr/local/bin/tar", FAKE_TAR, mode=0o755)
            src = tmp_path / "src"
            src.mkdir()
            (src / "f.txt").write_text("in\n")
            await box.copy_in(src, "/tmp/dir")
            r = await box.exec("sh", "-c", "cat /tmp/dir/f.txt && ln -s / /tmp/dir/link && "
                                            "echo s > /tmp/dir/su && chmod 4755 /tmp/dir/su && "
                                            "mkfifo /tmp/dir/fifo && head -c 4096 /dev/zero > /tmp/dir/big")
            assert r.exit_code == 0 and r.stdout == "in\n"
            out = tmp_path / "out"
            await box.copy_out("/tmp/dir", out)
            assert sorted(os.listdir(out)) == ["big", "f.txt", "su"]
            assert (out / "f.txt").read_text() == "in\n"
            assert not os.lstat(out / "su").st_mode & (stat.S_ISUID | stat.S_ISGID)
            with pytest.raises(boxlite.BoxFileError):
                await box.copy_out("/tmp/dir", tmp_path / "dest-huge", max_bytes=1000)
            assert sorted(os.listdir(tmp_path)) == ["out", "src"]
            r = await box.exec("sh", "-c", "test -e /tmp/tar-ran && echo ran || echo never")
            assert r.stdout.strip() == "never"
    run(main())
