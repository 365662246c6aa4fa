"""Files the core reads besides its own modules, found the same way from a wheel and from a checkout.

- ``_data/weights_manifest.toml`` (the weights manifest) lives inside the package: read with
  :mod:`importlib.resources`, whatever the install.
- The Blender add-on's sources (``blender_addon/``, run by the headless jobs: FBX export, the demo scene, the
  reference bench's ground-truth renders) and the bench's baseline script (``benchmarks/baseline_adam.py``)
  have their home outside the package. Building a wheel copies them into the package as ``_bundled/``
  (``setup.py``; the add-on with ``flamecap.contract`` vendored, as in the add-on zip); an editable install or
  a plain checkout reads them where they are.
"""
from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

BUNDLED = "_bundled"                           # the wheel's copy of files from outside the package
ADDON = "blender_addon"
BASELINE = "baseline_adam.py"


def package_file(*parts: str) -> Traversable:
    """A data file inside the installed ``flamecap`` package (e.g. ``"_data", "weights_manifest.toml"``)."""
    return resources.files("flamecap").joinpath(*parts)


def _checkout() -> Path | None:
    """The source checkout this package runs from (editable install / tests), or None in an installed wheel."""
    root = Path(__file__).resolve().parents[2]
    return root if (root / "pyproject.toml").is_file() and (root / "core" / "flamecap").is_dir() else None


def _bundled_dir() -> Path | None:
    d = package_file(BUNDLED)
    # a wheel installs as plain files, so the Traversable is a real folder; the headless jobs need a path
    # they can put on another Python's sys.path
    return Path(str(d)) if d.is_dir() else None


def addon_parent() -> Path | None:
    """The folder that holds ``blender_addon/`` (headless jobs): the wheel's copy, else the checkout's."""
    b = _bundled_dir()
    if b is not None and (b / ADDON / "headless.py").is_file():
        return b
    c = _checkout()
    return c if c is not None and (c / ADDON / "headless.py").is_file() else None


def bench_baseline() -> Path | None:
    """``baseline_adam.py`` for ``flamecap bench``: the wheel's copy, else the checkout's ``benchmarks/``."""
    b = _bundled_dir()
    if b is not None and (b / BASELINE).is_file():
        return b / BASELINE
    c = _checkout()
    return c / "benchmarks" / BASELINE if c is not None and (c / "benchmarks" / BASELINE).is_file() else None
