"""The playground page of `boxlite serve` in a real browser: Debian's
chromium, headless, driven by playwright-core (from the npm registry,
installed under BUILD/npm by this test) runs print(6*7) through the page and
sees 42. The screenshot is saved as BUILD/playground.png."""

import os
import shutil
import subprocess
import tempfile

import pytest

from conftest import BUILD, assert_clean
from test_serve import TOKEN_A, Server

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "serve", "playground.js")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def _playwright():
    """NODE_PATH holding playwright-core, installed on first use; or a skip reason."""
    if not shutil.which("node") or not shutil.which("npm"):
        return None, "node/npm not installed"
    if not os.access(CHROMIUM, os.X_OK):
        return None, "%s not installed (Debian: chromium)" % CHROMIUM
    prefix = os.path.join(BUILD, "npm")
    mods = os.path.join(prefix, "node_modules")
    if not os.path.isdir(os.path.join(mods, "playwright-core")):
        os.makedirs(prefix, exist_ok=True)
        try:
            r = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", prefix, "playwright-core@1"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
        except subprocess.TimeoutExpired:
            return None, "npm install playwright-core timed out"
        if r.returncode != 0:
            return None, "npm install playwright-core failed: %s" % r.stdout.decode()[-300:]
    return mods, None


def test_playground_runs_code_in_chromium():
    mods, why = _playwright()
    if why:
        print("SKIP: " + why)
        pytest.skip(why)
    root = tempfile.mkdtemp(prefix="boxlite-playground-")
    srv = Server(root)
    try:
        srv.start()
        shot = os.path.join(BUILD, "playground.png")
        env = dict(os.environ, NODE_PATH=mods, CHROMIUM=CHROMIUM)
        r = subprocess.run(["node", SCRIPT, srv.url + "/", TOKEN_A, shot], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, env=env, timeout=400)
        out = r.stdout.decode("utf-8", "replace")
        print(out)
        assert r.returncode == 0, out
        assert 'output: "42' in out
        assert os.path.getsize(shot) > 1000
        print("playground screenshot: %s" % shot)
        assert srv.json("GET", "/v1/sandboxes")["sandboxes"] == []
        assert srv.stop() == 0
        assert_clean(srv.state)
    finally:
        srv.stop()
        shutil.rmtree(root, ignore_errors=True)
