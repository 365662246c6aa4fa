"""Importing a result into headless Blender: objects, shape keys, bones, keyed frames, camera, and a
vertex-exact match with FLAME's skinning (numpy reference)."""
from __future__ import annotations

import numpy as np
import pytest

import fixtures
from conftest import run_scenario

pytestmark = pytest.mark.blender

F2B = [[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]]


def _check_scene(out: dict, res, n_expr: int) -> None:
    assert out["keys"][0] == "Basis"
    assert [k for k in out["keys"] if k.startswith("exp")] == [f"exp{i:03d}" for i in range(n_expr)]
    assert [k for k in out["keys"] if k.startswith("pose")] == [f"pose{i:03d}" for i in range(36)]
    assert out["bones"] == ["root", "neck", "jaw", "eye_l", "eye_r"]
    assert out["bone_parents"] == {"root": None, "neck": "root", "jaw": "neck", "eye_l": "neck", "eye_r": "neck"}
    for rot in out["bone_rest_rot"]:  # every bone's rest frame is the FLAME frame
        np.testing.assert_allclose(rot, F2B, atol=1e-6)
    assert out["vertex_groups"] == out["bones"] and out["modifiers"] == ["ARMATURE"]
    T = res.n_frames
    first, last = int(res["frame_index"][0]) + 1, int(res["frame_index"][-1]) + 1
    assert out["key_counts"] == [T]                     # every channel keyed on every frame
    assert out["key_frame_range"] == [first, last]
    assert out["n_rig_fcurves"] == 5 * 4 + 3 + 1        # 5 quaternions + root location + fit error
    assert out["n_key_fcurves"] == n_expr              # pose correctives are driven by the bones instead
    assert out["pose_drivers"] == 36                    # valid simple expressions (no Python auto-run needed)
    assert out["scene_range"] == [first, last]
    assert abs(out["fps"] - res.fps) < 1e-6
    assert out["resolution"] == list(res.image_size)
    for t, err in out["vertex_err_m"].items():
        assert err < 1e-5, (t, err)                     # Blender playback == FLAME skinning
    cam = out["camera"]
    assert cam["is_scene_camera"]
    assert cam["projection_err_px"] < 0.05              # head projects where the tracker saw it


def test_install_zip_and_import_result(tmp_path, addon_zip):
    res = fixtures.make_result(tmp_path / "take.npz", n_frames=10)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip at all")
    out = run_scenario("install_import", {"zip": str(addon_zip), "result": str(tmp_path / "take.npz"),
                                          "bad_result": str(bad), "check_frames": [0, 3, 9]}, tmp_path)
    _check_scene(out, res, n_expr=6)
    if out["slotted"]:                                  # 4.4+: one slotted action per take
        assert out["rig_action"] == out["key_action"] == "take_take"
    else:                                               # 4.2: an object action and a shape-key action
        assert (out["rig_action"], out["key_action"]) == ("take_take", "take_take_shapes")
    assert set(out["after"]["objects"]) - set(out["before"]["objects"]) == {"take_head", "take_rig", "take_camera"}
    assert "bad.npz" in out["bad_import"] and out["unchanged_after_bad"]


def test_repo_import_interpolates_invalid_frames_and_bakes(tmp_path):
    fixtures.make_result(tmp_path / "gaps.npz", n_frames=9, invalid=(4,), frame_offset=20)
    out = run_scenario("repo_import", {"result": str(tmp_path / "gaps.npz"), "check_frames": [0, 3, 8],
                                       "reapply": 0.5}, tmp_path)
    assert out["key_frame_range"] == [21, 29] and out["scene_range"] == [21, 29]
    assert out["invalid_frame_jaw_err"] < 1e-6
    assert out["reapply0_err"] < 1e-5 and out["reapply0_same_actions"]   # the take is rebuilt in place
    if out["reapply"] != "no smoothing module":
        assert out["reapply"]["strength"] == dict.fromkeys(("head", "jaw", "expression", "eyes"), 0.5)
        assert out["reapply"]["max_change"] > 0
    for err in out["vertex_err_m"].values():
        assert err < 1e-5


def test_per_frame_baked_keys_match_flame(tmp_path):
    fixtures.make_result(tmp_path / "bake.npz", n_frames=5)
    out = run_scenario("repo_import", {"result": str(tmp_path / "bake.npz"), "bake": True,
                                       "check_frames": [0, 2, 4]}, tmp_path)
    assert [k for k in out["keys"] if k.startswith("frame_")] == [f"frame_{i:05d}" for i in range(1, 6)]
    assert out["pose_drivers"] == 0                     # baked keys carry the correctives
    for err in out["vertex_err_m"].values():
        assert err < 1e-5


def test_grid_clip_as_camera_background(tmp_path, grid_dir, addon_zip):
    clip = sorted(grid_dir.glob("*.mpg"))[0]
    res = fixtures.make_result(tmp_path / "grid.npz", n_frames=75, source_path=str(clip), image_size=(360, 288))
    bad = tmp_path / "missing.npz"
    out = run_scenario("install_import", {"zip": str(addon_zip), "result": str(tmp_path / "grid.npz"),
                                          "bad_result": str(bad), "check_frames": [0, 74]}, tmp_path)
    _check_scene(out, res, n_expr=6)
    assert out["camera"]["backgrounds"] == [["MOVIE_CLIP", str(clip)]]
    assert out["unchanged_after_bad"]
