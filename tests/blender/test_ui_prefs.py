"""Panels draw with existing properties in every run state; preferences Check and Set up runtime."""
from __future__ import annotations

import os
import sys

import pytest

from conftest import CORE_PYTHON, run_scenario

pytestmark = pytest.mark.blender


def test_panels_prefs_and_runtime_buttons(tmp_path, addon_zip):
    out = run_scenario("ui_and_prefs", {"zip": str(addon_zip), "python": CORE_PYTHON}, tmp_path)
    idle_ops = [x[1] for x in out["idle"] if x[0] == "operator"]
    assert "flamecap.track_footage" in idle_ops and "flamecap.import_result" in idle_ops
    running = out["running"]
    assert ("progress", 0.4, "fit 40% 3 s left") in [tuple(x) for x in running]
    assert ["operator", "flamecap.cancel_track"] in running and ["operator", "flamecap.track_footage"] not in running
    assert ["label", "cannot read footage x"] in out["failed"]
    assert ["operator", "flamecap.check_runtime"] in out["prefs_draw"]
    assert "online access is off" in out["setup_runtime"]       # bpy's online access is off here
    assert out["check_ok"] and out["check_report"].startswith("flamecap ")
    assert not out["check_ok_bad"] and "was not found" in out["check_report_bad"]
    assert out["menu"] and out["unregistered"]
    # first-run checklist: each missing item with its exact fix, wrapped for the sidebar; Try the demo offered
    labels = [x[1] for x in out["idle"] if x[0] == "label"]
    text = " ".join(labels)
    assert "Before you track" in labels
    assert "Press Check to test the Core Python." in text          # a Core Python is set but not checked
    assert "No FLAME head model: Add FLAME File (flame2023_Open.pkl, free at flame.is.tue.mpg.de)" in text
    assert "Choose a video file or image folder below" in text
    assert max(len(t) for t in labels) <= 40
    assert ["operator", "flamecap.try_demo"] in out["idle"] and ["operator", "flamecap.add_flame_file"] in out["idle"]
    assert ["operator", "flamecap.download_flame"] in out["idle"] and ["operator", "flamecap.setup_runtime"] in out["idle"]


def test_add_flame_file_registers_it_and_ticks_the_checklist(tmp_path, addon_zip):
    import fixtures
    model = fixtures.make_model(tmp_path / "my_flame.npz")
    out = run_scenario("add_model", {"zip": str(addon_zip), "python": CORE_PYTHON, "model": str(model)}, tmp_path)
    assert out["op"] == ["FINISHED"], out
    assert out["check_ok"] and out["n_models"] == 1
    before, after = ({name: done for name, done, _ in items} for items in (out["before"], out["after"]))
    assert before["Head model"] is False and after["Head model"] is True and after["Runtime"] is True
    bad = run_scenario("add_model", {"zip": str(addon_zip), "python": CORE_PYTHON, "model": str(tmp_path / "x.pkl")},
                       tmp_path)
    assert bad["op"] == ["RAISED"] and "not a file" in bad["error"] and bad["n_models"] == 0


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("FLAMECAP_TEST_SETUP_RUNTIME") != "1",
                    reason="downloads the core's dependencies (~1 GB installed); set FLAMECAP_TEST_SETUP_RUNTIME=1")
def test_set_up_runtime_from_a_clean_user_folder(tmp_path, addon_zip):
    """Set Up Runtime end to end against the package index: a private venv from a Python the core supports
    (found on PATH when this Blender's Python is not one), the bundled core wheel, CPU-only torch without an
    NVIDIA GPU, then a passing Check."""
    env = {}
    if os.environ.get("FLAMECAP_TEST_TORCH_CONSTRAINT"):   # this machine: the local CPU wheel, no PyTorch index
        (tmp_path / "c.txt").write_text(os.environ["FLAMECAP_TEST_TORCH_CONSTRAINT"] + "\n")
        env = {"FLAMECAP_TORCH_INDEX": "", "PIP_CONSTRAINT": str(tmp_path / "c.txt")}
    out = run_scenario("setup_runtime", {"zip": str(addon_zip)}, tmp_path, env=env, timeout=3600)
    print("Set Up Runtime:", out)
    assert out["op"] == ["FINISHED"], out
    assert out["python_path"].startswith(out["runtime"]) and out["check_ok"], out
    # Blender's own Python when the core supports it (3.11 up to Blender 5.0, 3.13 from 5.1)
    want = f"flamecap 0.1.0 · Python {sys.version_info.major}.{sys.version_info.minor}"
    assert out["check_report"].startswith(want), out
    # no NVIDIA GPU: the CPU-only build (where the index in use has one: PyTorch's, or a local +cpu wheel)
    if "+cpu" in os.environ.get("FLAMECAP_TEST_TORCH_CONSTRAINT", "+cpu"):
        assert "+cpu" in out["check_report"], out
