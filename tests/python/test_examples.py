"""Every script in examples/ runs and succeeds."""

import glob
import os
import subprocess
import sys

import pytest

from conftest import REPO, assert_clean

EXAMPLES = sorted(glob.glob(os.path.join(REPO, "examples", "*.py")))
EXPECT = {
    "ai_agent.py": ["45\n", '{"ok": true}\n', "Code failed: Traceback", "NameError"],
    "notebook.py": ["area: 12.566", "streamed: tick 2", "timed out; state kept: 2", "after restart: False"],
    "sync_files.py": ["hello from Linux in box boxlite", "total: 10", "copied out: 10"],
}


@pytest.mark.parametrize("path", EXAMPLES, ids=[os.path.basename(p) for p in EXAMPLES])
def test_example_script(path, state_dir):
    env = dict(os.environ, BOXLITE_STATE_DIR=state_dir,
               PYTHONPATH=os.path.join(REPO, "sdk", "python") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, path], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr
    for want in EXPECT.get(os.path.basename(path), []):
        assert want in r.stdout, (want, r.stdout)
    assert_clean(state_dir)
