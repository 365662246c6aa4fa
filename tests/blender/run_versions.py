#!/usr/bin/env python3
"""Run the headless Blender suite (tests/blender) on every supported Blender, each in its own venv with the
``bpy`` wheel of that version:

    python tests/blender/run_versions.py [VERSION ...] [--venvs DIR] [--core-python PY] [-- PYTEST ARGS]

- bpy 4.2–5.0 wheels are built for Python 3.11, bpy 5.1+ for Python 3.13 (Blender's bundled Pythons); the
  interpreter for each version is found on PATH (``python3.11`` / ``python3.13``, or ``$PYTHON311`` /
  ``$PYTHON313``).
- The venvs live outside the repository (``--venvs``, default ``$FLAMECAP_BPY_VENVS`` or
  ``~/.cache/flamecap/bpy-venvs``) and are reused; each holds only bpy, pytest and scipy (the test process
  builds reference data with the core's numpy/scipy code from ``core/`` on ``PYTHONPATH``).
- The add-on runs the core as a subprocess with a configured Python; the suite points it at ``--core-python``
  (default ``$FLAMECAP_TEST_CORE_PYTHON``, else this Python), which must have the core's dependencies.

Prints one line per version (``bpy X: N passed, M failed, K skipped in S s``) and exits non-zero when any
version fails.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# every supported Blender line, newest patch release on the index; the manifest's range is the first..last
VERSIONS = ("4.2.23", "4.5.15", "5.0.1", "5.2.3", "5.3.0")
TEST_DEPS = ("pytest", "scipy", "trimesh")
# wheels whose bpy was built against numpy 1.x but do not pin it (numpy 2 fails at `import bpy`)
EXTRA_PINS = {"4.3": ("numpy<2",)}


def _runs(exe: str | None) -> bool:
    return bool(exe) and subprocess.run([exe, "-c", "pass"], capture_output=True).returncode == 0


def python_for(version: str) -> str:
    """The interpreter bpy ``version`` is built for (3.11 up to 5.0, 3.13 from 5.1): ``$PYTHON311`` /
    ``$PYTHON313``, ``python3.X`` on PATH, or a pyenv install of it."""
    major, minor = (int(x) for x in version.split(".")[:2])
    want = "3.13" if (major, minor) >= (5, 1) else "3.11"
    env_name = "PYTHON" + want.replace(".", "")
    pyenv = sorted(Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")).glob(f"versions/{want}*/bin/python{want}"))
    for exe in (os.environ.get(env_name), shutil.which(f"python{want}"), *map(str, pyenv[::-1])):
        if _runs(exe):
            return exe
    raise SystemExit(f"error: bpy {version} needs Python {want}; install python{want} or set ${env_name}")


def ensure_venv(version: str, root: Path) -> Path:
    """``root/<version>`` with bpy==version, pytest and scipy; created on first use. Returns its python."""
    venv = root / version
    py = venv / "bin" / "python"
    stamp = venv / ".flamecap-bpy"
    if stamp.is_file() and stamp.read_text().strip() == version and py.exists():
        return py
    t0 = time.monotonic()
    if not py.exists():
        subprocess.run([python_for(version), "-m", "venv", str(venv)], check=True)
    pins = EXTRA_PINS.get(".".join(version.split(".")[:2]), ())
    subprocess.run([str(py), "-m", "pip", "install", "-q", f"bpy=={version}", *TEST_DEPS, *pins], check=True)
    proc = subprocess.run([str(py), "-c", "import bpy; print('BPY', bpy.app.version_string)"], capture_output=True,
                          text=True)
    got = next((ln.split()[1] for ln in proc.stdout.splitlines() if ln.startswith("BPY ")),
               (proc.stderr.strip().splitlines() or ["no output"])[-1])
    if got != version:
        raise SystemExit(f"error: bpy {version} in {venv} gives {got!r} on import; delete the folder and run again")
    stamp.write_text(version)
    print(f"bpy {version}: venv {venv} built in {time.monotonic() - t0:.0f} s", flush=True)
    return py


def run_suite(py: Path, core_python: str, pytest_args: list[str]) -> tuple[int, str, float]:
    env = dict(os.environ, FLAMECAP_TEST_CORE_PYTHON=core_python)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "core"), str(REPO)] +
                                        ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    cmd = [str(py), "-m", "pytest", "-q", "-p", "no:cacheprovider", str(REPO / "tests" / "blender"), *pytest_args]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=str(REPO), env=env, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    return proc.returncode, out, time.monotonic() - t0


def summary(out: str) -> str:
    counts = dict.fromkeys(("passed", "failed", "error", "skipped"), 0)
    for n, what in re.findall(r"(\d+) (passed|failed|errors?|skipped)", out.splitlines()[-1] if out else ""):
        counts[what.rstrip("s") if what.startswith("error") else what] += int(n)
    return ", ".join(f"{v} {k}" for k, v in counts.items())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    ap.add_argument("versions", nargs="*", default=list(VERSIONS), help=f"bpy versions (default {' '.join(VERSIONS)})")
    ap.add_argument("--venvs", type=Path, default=Path(os.environ.get(
        "FLAMECAP_BPY_VENVS", Path.home() / ".cache" / "flamecap" / "bpy-venvs")))
    ap.add_argument("--core-python", default=os.environ.get("FLAMECAP_TEST_CORE_PYTHON", sys.executable),
                    help="Python with the core's dependencies, run by the add-on as its core")
    args = ap.parse_args(argv)
    failed = []
    for v in args.versions:
        py = ensure_venv(v, args.venvs)
        rc, out, secs = run_suite(py, args.core_python, extra)
        print(f"bpy {v}: {summary(out)} in {secs:.0f} s  ({py} -m pytest -q tests/blender {' '.join(extra)})",
              flush=True)
        if rc != 0:
            failed.append(v)
            print("\n".join(out.splitlines()[-60:]), flush=True)
    if failed:
        print(f"error: the Blender suite failed on bpy {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
