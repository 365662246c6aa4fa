"""Run an add-on job (``blender_addon/headless.py``) in a Python that has ``bpy``, as a subprocess: the core never
imports bpy. Used by ``flamecap export --fbx`` and ``flamecap demo``."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .errors import FlameCapError, InputError

NO_BPY_EXIT = 17
# The child checks for bpy first (a clear exit code instead of a traceback), then runs the add-on's job.
_BOOTSTRAP = """import importlib, sys
try:
    importlib.import_module("bpy")
except ImportError as exc:
    print(f"error: no bpy in this Python ({exc})", file=sys.stderr)
    sys.exit(%d)
sys.path.insert(0, sys.argv[1])
from blender_addon.headless import main
sys.exit(main(sys.argv[2:]))
""" % NO_BPY_EXIT


class NoBpyError(InputError):
    """The chosen Python has no bpy (headless Blender)."""


def addon_parent(arg: str = "") -> Path:
    """The folder that holds ``blender_addon/``: ``arg`` (that folder or ``blender_addon`` itself), else the
    add-on sources the installed core carries (:func:`flamecap.resources.addon_parent`: the wheel's copy or
    the checkout's)."""
    from .resources import addon_parent as installed
    if arg:
        d = Path(arg)
        d = d.parent if d.name == "blender_addon" else d
    else:
        found = installed()
        if found is None:
            raise InputError("this FlameCap install carries no Blender add-on sources; reinstall it from a wheel "
                             "or checkout, or pass --addon-dir (the folder that holds blender_addon/)")
        d = found
    if not (d / "blender_addon" / "headless.py").is_file():
        raise InputError(f"the Blender add-on sources are not in {d}; pass --addon-dir (the folder that holds "
                         f"blender_addon/) or set FLAMECAP_ADDON_DIR")
    return d


def run_job(job: list[str], python: str = "", addon_dir: str = "", timeout_s: float = 900,
            what: str = "Blender job") -> str:
    """Run ``blender_addon.headless`` with ``job`` arguments; returns its summary line (the stdout line starting
    with the job name in capitals, e.g. ``FBX ...``) without that first word.
    Raises :class:`NoBpyError` when ``python`` has no bpy, :class:`FlameCapError` (one line) on failure."""
    exe = python or sys.executable
    argv = [exe, "-c", _BOOTSTRAP, str(addon_parent(addon_dir)), *job]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    except FileNotFoundError:
        raise InputError(f"Python not found: {exe}; pass --blender-python PATH (a Python with bpy)") from None
    except subprocess.TimeoutExpired:
        raise FlameCapError(f"the {what} did not finish within {timeout_s:.0f} s") from None
    if proc.returncode == NO_BPY_EXIT:
        raise NoBpyError(f"no bpy (headless Blender) in {exe}; 'pip install bpy==5.0.1' there, or pass "
                         f"--blender-python / set FLAMECAP_BPY_PYTHON to a Python that has it")
    tag = job[0].upper() + " "
    out = [ln for ln in proc.stdout.splitlines() if ln.startswith(tag)]
    if proc.returncode != 0 or not out:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        err = next((ln for ln in reversed(lines) if ln.startswith("error: ")), lines[-1] if lines else "no output")
        raise FlameCapError(f"the {what} failed: {err.removeprefix('error: ')}")
    return out[-1][len(tag):]
