"""The example of issue 8, verbatim, run against real boxes."""

from conftest import run

# ---- verbatim from the issue (and the README) ----
import asyncio
import boxlite

async def run_ai_code(code: str) -> str:
    async with boxlite.CodeBox() as box:
        result = await box.run(code)
        return result.stdout

async def limited(code: str):
    async with boxlite.SimpleBox(image="python:slim", memory_mb=512, cpus=1, timeout_seconds=30) as box:
        return await box.exec("python", "-c", code)

async def guarded(untrusted_code: str) -> str:
    try:
        async with boxlite.CodeBox() as box:
            result = await box.run(untrusted_code)
            if result.exit_code != 0:
                return "Code failed: " + result.stderr
            return result.stdout
    except boxlite.TimeoutError:
        return "Execution timed out"
    except boxlite.ResourceError:
        return "Resource limit exceeded"
# ---- end of the example ----


def test_run_ai_code(state_dir, monkeypatch):
    monkeypatch.setenv("BOXLITE_STATE_DIR", state_dir)
    assert run(run_ai_code("import sys\nprint(6 * 7, sys.version_info[0])")) == "42 3\n"


def test_limited(state_dir, monkeypatch):
    monkeypatch.setenv("BOXLITE_STATE_DIR", state_dir)
    r = run(limited("import os; print('hi from', os.getuid())"))
    assert r.exit_code == 0
    assert r.stdout == "hi from 1000\n"
    assert r.stderr == ""


def test_guarded(state_dir, monkeypatch):
    monkeypatch.setenv("BOXLITE_STATE_DIR", state_dir)
    assert run(guarded("print('fine')")) == "fine\n"
    failed = run(guarded("1 / 0"))
    assert failed.startswith("Code failed: Traceback")
    assert "ZeroDivisionError: division by zero" in failed
    # A memory hog: the interpreter is OOM-killed inside the box.
    hog = "chunks = []\nwhile True:\n    chunks.append(bytearray(32 << 20))"
    assert run(guarded(hog)) == "Resource limit exceeded"
