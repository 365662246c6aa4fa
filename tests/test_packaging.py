"""Packaging decisions that code and pyproject.toml both carry: the optional extras table, the requirements."""
from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]


def _names(reqs: list[str]) -> set[str]:
    import re
    return {re.split(r"[ ;<>=!~\[]", r, maxsplit=1)[0].lower() for r in reqs}


def test_optional_table_matches_the_extras():
    """flamecap.optional's hints name the extra that really carries each package, and none is a base one."""
    from flamecap.optional import EXTRAS
    proj = _project()
    extras = proj["optional-dependencies"]
    base = _names(proj["dependencies"])
    for module, (dist, extra, _) in EXTRAS.items():
        assert extra in extras, (module, extra)
        assert dist in _names(extras[extra]), (module, dist, extra)
        assert dist not in base, dist


def test_base_requirements_allow_numpy_2_and_one_opencv():
    proj = _project()
    assert proj["requires-python"] == ">=3.11,<3.14"
    deps = proj["dependencies"]
    numpy = [r for r in deps if r.startswith("numpy")]
    assert numpy and "<2" not in numpy[0]
    assert not any(r.startswith("mediapipe") for r in deps)      # the legacy package is the 'legacy' extra
    assert [r for r in _names(deps) if r.startswith("opencv")] == ["opencv-python-headless"]
    dev = " ".join(proj["optional-dependencies"]["dev"])
    for extra in ("legacy", "dense", "plots", "blender"):           # the suite runs all of them
        assert extra in dev


def test_missing_optional_package_is_one_actionable_line(monkeypatch):
    import sys

    import pytest

    from flamecap.errors import InputError
    from flamecap.optional import require
    for module, extra in (("matplotlib", "plots"), ("safetensors.torch", "dense")):
        monkeypatch.setitem(sys.modules, module.split(".")[0], None)     # as if not installed
        monkeypatch.delitem(sys.modules, module, raising=False) if "." in module else None
        with pytest.raises(InputError, match=rf"pip install 'flamecap\[{extra}\]'") as ei:
            require(module, "this command")
        assert "\n" not in str(ei.value) and "this command" in str(ei.value)
