"""Panels draw with existing properties in every run state; preferences Check and Set up runtime."""
from __future__ import annotations

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
