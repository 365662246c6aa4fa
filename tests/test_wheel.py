"""The built wheel works without the checkout: the weights manifest, the Blender add-on sources the headless
jobs run and the bench baseline come from inside the package (``flamecap.resources``), not from paths into the
source tree. The wheel is built once (``build_addon.build_core_wheel``, as the add-on zip bundles it), unpacked
away from the repository and imported from there, run from another folder."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def unpacked_wheel(tmp_path_factory) -> Path:
    sys.path.insert(0, str(REPO))
    try:
        import build_addon
    finally:
        sys.path.remove(str(REPO))
    wheel = build_addon.build_core_wheel()
    d = tmp_path_factory.mktemp("wheel")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        zf.extractall(d)
    for must in ("flamecap/_data/weights_manifest.toml", "flamecap/_bundled/baseline_adam.py",
                 "flamecap/_bundled/blender_addon/headless.py", "flamecap/_bundled/blender_addon/gt_render.py",
                 "flamecap/_bundled/blender_addon/_vendor/flamecap_contract/result.py"):
        assert must in names, must
    assert not any("__pycache__" in n for n in names)
    return d


_PROBE = """
import json, flamecap, flamecap.resources as R, flamecap.weights as W, flamecap.bench as B
from flamecap.headless_blender import addon_parent
print(json.dumps({"pkg": flamecap.__file__, "checkout": str(R._checkout()), "addon": str(addon_parent()),
                  "baseline": str(B.DEFAULT_BASELINE), "manifest": str(W.manifest_path()),
                  "entries": sorted(W.load_manifest())}))
"""


def test_installed_wheel_reads_its_data_from_the_package(unpacked_wheel, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "FLAMECAP_WEIGHTS_MANIFEST"}
    env["PYTHONPATH"] = str(unpacked_wheel)
    out = subprocess.run([sys.executable, "-c", _PROBE], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout.strip().splitlines()[-1])
    pkg = str(unpacked_wheel / "flamecap")
    assert r["pkg"].startswith(pkg) and r["checkout"] == "None"
    assert r["addon"] == str(unpacked_wheel / "flamecap" / "_bundled")
    assert r["baseline"].startswith(pkg) and r["manifest"].startswith(pkg)
    assert "mediapipe-face" in r["entries"] and "flame2023-open" in r["entries"]
    # the bundled add-on imports its vendored contract with no checkout around it; the add-on package itself
    # imports bpy (it is a Blender extension), so this half needs a Python with bpy
    if importlib.util.find_spec("bpy") is None:
        return
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); from blender_addon._vendor import load_contract; "
             "c = load_contract(); print(c.__file__)")
    out = subprocess.run([sys.executable, "-c", probe, r["addon"]], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith(str(unpacked_wheel / "flamecap" / "_bundled" / "blender_addon" / "_vendor"))


def test_checkout_still_finds_its_sources():
    from flamecap import resources
    if resources._checkout() is None:
        pytest.skip("flamecap is installed from a wheel in this Python (the other test covers that)")
    assert resources._checkout() == REPO
    assert resources.addon_parent() == REPO and resources.bench_baseline() == REPO / "benchmarks" / "baseline_adam.py"
