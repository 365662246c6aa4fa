"""Build step only (the metadata is in pyproject.toml): a wheel carries, as ``flamecap/_bundled/``, the files the
core reads from outside its package in a checkout, so an installed core needs no checkout
(:mod:`flamecap.resources` finds them):

- ``blender_addon/`` with ``flamecap.contract`` vendored — the same file list as the add-on zip
  (``build_addon.collect_files``) — for the headless Blender jobs (``flamecap demo``, ``export --fbx``, the
  reference bench's ground-truth renders);
- ``benchmarks/baseline_adam.py``, the baseline ``flamecap bench`` loads by path.

Editable installs skip the copy (they read the checkout)."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildWithBundled(build_py):
    def run(self):
        super().run()
        if self.editable_mode:
            return
        sys.path.insert(0, str(ROOT))
        try:
            import build_addon
        finally:
            sys.path.remove(str(ROOT))
        out = Path(self.build_lib) / "flamecap" / "_bundled"
        shutil.rmtree(out, ignore_errors=True)
        for name, src in build_addon.collect_files():
            dst = out / "blender_addon" / name
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
        shutil.copyfile(ROOT / "benchmarks" / "baseline_adam.py", out / "baseline_adam.py")


setup(cmdclass={"build_py": BuildWithBundled})
