"""Fixtures for the add-on tests: every Blender scenario runs in a clean subprocess of this Python (which has
``bpy``; tests/blender/run_versions.py runs the suite once per Blender version) with a throwaway Blender user
folder."""
from __future__ import annotations

import importlib.util
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

HAVE_BPY = importlib.util.find_spec("bpy") is not None
# The Python the add-on runs as its core (``--core-python`` of run_versions.py): it needs the core's
# dependencies (torch, MediaPipe, ...), which the per-version bpy venvs do not have.
CORE_PYTHON = os.environ.get("FLAMECAP_TEST_CORE_PYTHON") or sys.executable


def pytest_collection_modifyitems(config, items):
    for item in items:
        if Path(str(item.fspath)).parent == HERE:
            item.add_marker(pytest.mark.blender)
            if not HAVE_BPY:
                item.add_marker(pytest.mark.skip(reason="bpy (headless Blender) is not installed"))


# Runs a scenario script as __main__, then leaves without the interpreter's teardown: bpy 4.2 segfaults in
# its exit handlers after some operators (exit -11 after a complete RESULT line); what a scenario checks is
# all in that line.
_BOOT = ("import os, runpy, sys; script = sys.argv[1]; sys.argv = sys.argv[1:]; "
         "sys.path.insert(0, os.path.dirname(os.path.abspath(script))); "
         "runpy.run_path(script, run_name='__main__'); sys.stdout.flush(); sys.stderr.flush(); os._exit(0)")


def run_scenario(name: str, args: dict, tmp_path: Path, env: dict | None = None, timeout: float = 300,
                 script: Path | None = None) -> dict:
    """Run scenario ``name`` of ``script`` (default scenarios.py) in a clean Python with bpy; its RESULT line."""
    home = tmp_path / "blender_user"
    home.mkdir(exist_ok=True)
    full_env = dict(os.environ, BLENDER_USER_RESOURCES=str(home), **(env or {}))
    proc = subprocess.run([sys.executable, "-c", _BOOT, str(script or HERE / "scenarios.py"), name, json.dumps(args)],
                          capture_output=True, text=True, env=full_env, timeout=timeout, cwd=str(tmp_path))
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise AssertionError(f"scenario {name} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-6000:]}")
    return json.loads(line[len("RESULT "):])


@pytest.fixture(scope="session")
def addon_zip(tmp_path_factory) -> Path:
    import build_addon
    out = tmp_path_factory.mktemp("addon") / "flamecap.zip"
    path, report = build_addon.build(out, validate=True)
    return path


@pytest.fixture()
def fake_python(tmp_path) -> Path:
    """An executable 'python' that runs tests/blender/fake_core.py for ``-m flamecap ...``."""
    stub = tmp_path / "fake_python"
    stub.write_text(f"#!/bin/sh\nexec {sys.executable} {HERE / 'fake_core.py'} \"$@\"\n")
    stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    return stub
