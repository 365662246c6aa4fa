"""Track footage end to end through the blocking path of the operator (the same runner the modal UI uses),
with the core as a subprocess: success imports; cancel and failing cores leave the scene unchanged."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import CORE_PYTHON, REPO, run_scenario

pytestmark = pytest.mark.blender

REAL_TRACK = (REPO / "core" / "flamecap" / "commands" / "track.py").is_file()


def _footage(tmp_path) -> Path:
    f = tmp_path / "clip.mp4"
    f.write_bytes(b"\0" * 4096)  # the fake core only checks that it exists and is not tiny
    return f


def test_fake_core_success_imports(tmp_path, addon_zip, fake_python):
    out = run_scenario("track", {"zip": str(addon_zip), "python": str(fake_python),
                                 "footage": str(_footage(tmp_path)), "output": str(tmp_path / "o.npz"),
                                 "range": [5, 12]}, tmp_path)
    assert out["op"] == ["FINISHED"], out
    assert out["status"] == "done" and out["progress"] == 1.0 and out["stage"] == "write"
    assert out["output_exists"] and out["last_result"] == str(tmp_path / "o.npz")
    imp = out["import"]
    assert imp["key_frame_range"] == [5, 12]      # --start 4 --end 12 → source frames 4..11 → Blender 5..12
    assert imp["bones"] == ["root", "neck", "jaw", "eye_l", "eye_r"]
    assert max(imp["vertex_err_m"].values()) < 1e-5
    view = out["view"]   # the factory startup file: the tracking camera looks out of the default Cube
    assert view["scene_camera"] == view["rig_camera"] == "o_camera"
    assert view["cube"] == {"hidden": True, "hide_render": True} and view["view_warning"] == ""
    assert view["collection"] == ["FlameCap o"]
    assert view["fit_error_keys"] == 8 and len(view["worst_frames"]) == 5


def test_other_objects_in_the_camera_view_are_named_not_hidden(tmp_path, addon_zip, fake_python):
    out = run_scenario("track", {"zip": str(addon_zip), "python": str(fake_python), "blocker": True,
                                 "footage": str(_footage(tmp_path)), "output": str(tmp_path / "o.npz")}, tmp_path)
    assert out["op"] == ["FINISHED"], out
    view = out["view"]
    assert view["cube"]["hidden"]                                  # the default Cube: hidden
    assert view["view_warning"].startswith("Character is in the tracking camera's view")   # the artist's: named
    assert "Character" in out["after"]["objects"]


def test_known_lens_in_mm_reaches_the_core_in_pixels(tmp_path, addon_zip, fake_python, grid_dir):
    """Lens: Known, 35 mm on a 36 mm sensor → --focal 35/36 × 360 px (the GRID clip's width); the fake core
    writes that focal into the result, so the imported camera has a 35 mm lens on its 36 mm sensor."""
    clip = sorted(grid_dir.glob("*.mpg"))[0]
    out = run_scenario("track", {"zip": str(addon_zip), "python": str(fake_python), "footage": str(clip),
                                 "output": str(tmp_path / "lens.npz"), "lens": [35.0, 36.0]}, tmp_path)
    assert out["op"] == ["FINISHED"], out
    from flamecap.contract import load_result
    assert abs(float(load_result(tmp_path / "lens.npz")["K"][0, 0]) - 35.0 / 36.0 * 360) < 1e-2
    cam = out["import"]["camera"]
    assert abs(cam["lens"] / cam["sensor_width"] * 36.0 - 35.0) < 1e-3


def test_try_the_demo_shows_head_over_footage(tmp_path, addon_zip):
    """Try the demo in a default new file (the core's 'flamecap demo': synthetic head, no FLAME, no network):
    the head plays over its footage through the scene camera — a Cycles render through that camera is covered
    only where the head is (elsewhere the footage shows), which the default Cube would hide entirely."""
    out = run_scenario("demo", {"zip": str(addon_zip), "python": CORE_PYTHON, "frames": 12, "out": str(tmp_path)},
                       tmp_path, timeout=900)
    assert out["op"] == ["FINISHED"] and out["status"] == "done", out
    view = out["view"]
    assert view["scene_camera"] == view["rig_camera"] == "demo_camera"
    assert view["cube"]["hidden"] and view["cube"]["hide_render"]
    assert out["show_background"] and out["backgrounds"][0][0] == "MOVIE_CLIP"
    assert out["backgrounds"][0][1].endswith("clip.mp4")
    assert view["fit_error_keys"] == 12 and view["worst_frames"]
    r = out["render"]
    print("demo render:", r)
    assert 0.02 < r["coverage"] < 0.6             # the head, and the footage around it
    assert r["coverage_with_cube"] > 0.99         # what a new file showed before: a grey box
    hb, rb = r["head_uv_bbox"], r["bbox"]
    assert max(abs(x - y) for x, y in zip(hb, rb)) < 0.1   # the covered pixels are the head's
    assert out["overlay_on"] == ["WIRE", True] and out["overlay_off"] == ["TEXTURED", False]
    panel = [tuple(x) for x in out["panel"]]   # the Tracked Head panel after the demo
    assert ("operator", "flamecap.overlay") in panel and ("operator", "flamecap.apply_smoothing") in panel
    assert [x[1] for x in panel if x[0] == "prop"][-4:] == [f"smoothing_{c}" for c in ("head", "jaw", "expression", "eyes")]
    assert panel.count(("operator", "flamecap.jump_to_frame")) == len(view["worst_frames"]) == 5


@pytest.mark.parametrize("case", ["cancel", "bad_footage", "missing_model", "unknown_model", "no_python"])
def test_cancel_and_failures_leave_scene_unchanged(tmp_path, addon_zip, fake_python, case):
    args = {"zip": str(addon_zip), "python": str(fake_python), "footage": str(_footage(tmp_path)),
            "output": str(tmp_path / "o.npz")}
    env = {}
    if case == "cancel":
        env["FAKE_CORE_STEP_S"] = "0.2"   # 8 s run, cancelled after 1.5 s
        args["timeout"] = 1.5
    elif case == "bad_footage":
        bad = tmp_path / "bad.mp4"
        bad.write_bytes(b"x")
        args["footage"] = str(bad)
    elif case == "missing_model":
        args["model"] = str(tmp_path / "nope.npz")
    elif case == "unknown_model":
        args["model"] = "no_such_registered_model"   # a name: passed to the core, which fails
    elif case == "no_python":
        args["python"] = str(tmp_path / "no_such_python")
    out = run_scenario("track", args, tmp_path, env=env)
    assert out["after"] == out["before"], out
    assert not out["output_exists"] and "import" not in out
    assert out["status"] in ("cancelled", "failed") and out["error"] and "\n" not in out["error"]
    if case == "cancel":
        assert out["status"] == "cancelled" and 0 < out["progress"] < 1
    elif case == "bad_footage":
        assert out["error"].startswith("cannot read footage")
    elif case == "missing_model":
        assert "head model not found" in out["error"]   # caught before the core starts
    elif case == "unknown_model":
        assert out["error"].startswith("model not found: no_such_registered_model")
    else:
        assert "cannot start the FlameCap core" in out["error"]


@pytest.mark.skipif(not REAL_TRACK, reason="core/flamecap/commands/track.py is not written yet")
@pytest.mark.slow
def test_real_core_tracks_grid_clip(tmp_path, addon_zip, grid_dir):
    synthetic = pytest.importorskip("flamecap.flame.synthetic")
    from flamecap.contract import save_model_npz
    model = tmp_path / "synthetic_model.npz"
    save_model_npz(model, synthetic.make_synthetic_model())
    clip = sorted(grid_dir.glob("*.mpg"))[0]
    out = run_scenario("track", {"zip": str(addon_zip), "python": CORE_PYTHON, "footage": str(clip),
                                 "model": str(model), "output": str(tmp_path / "grid.npz"), "range": [1, 10]},
                       tmp_path, timeout=600)
    assert out["op"] == ["FINISHED"], out
    assert out["output_exists"] and out["import"]["key_frame_range"][0] == 1


def test_real_core_failures_leave_scene_unchanged(tmp_path, addon_zip):
    """The installed core as the subprocess, on footage that is not a video (before ``flamecap track`` exists
    this fails on the unknown command — the add-on must handle that the same way)."""
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video" * 100)
    out = run_scenario("track", {"zip": str(addon_zip), "python": CORE_PYTHON, "footage": str(bad),
                                 "output": str(tmp_path / "o.npz")}, tmp_path, timeout=600)
    assert out["status"] == "failed" and out["error"] and "\n" not in out["error"]
    assert out["after"] == out["before"] and not out["output_exists"]
    if REAL_TRACK:
        assert "bad.mp4" in out["error"] or "footage" in out["error"].lower()
