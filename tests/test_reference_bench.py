"""The independent-reference benches: metric functions on synthetic arrays with known answers (NME, amplitude
ratio, blink recall, lag), the dlib set-up check, bad inputs, and one real GRID clip when dlib and its model
file are installed (skipped with the set-up command otherwise)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from flamecap.cli import main
from flamecap.reference import metrics68 as M


def _face(T: int = 20, iod: float = 100.0, seed: int = 0) -> np.ndarray:
    """(T, 68, 2) random points with the outer eye corners exactly ``iod`` apart."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0, 200, (T, 68, 2))
    p[:, 36] = (50.0, 80.0)
    p[:, 45] = (50.0 + iod, 80.0)
    return p


def test_nme_known_values():
    ref = _face()
    valid = np.ones(len(ref), bool)
    shifted = ref + np.array([3.0, 4.0])                        # every point 5 px = 5 % of the IOD away
    r = M.region_nme(shifted, ref, valid)
    for k, v in r.items():
        assert v == pytest.approx(5.0), k
    assert M.offset_removed_nme(shifted, ref, valid) == pytest.approx(0.0, abs=1e-9)
    brows = ref.copy()
    brows[:, 17:27] += np.array([0.0, 10.0])                    # only the brows 10 % off
    r = M.region_nme(brows, ref, valid)
    assert r["brows"] == pytest.approx(10.0) and r["eyes"] == 0 and r["jaw_line"] == 0
    assert r["inner51"] == pytest.approx(10.0 * 10 / 51)
    # invalid frames do not count, NaN frames neither
    bad = shifted.copy()
    bad[:5] += 1000.0
    bad[5] = np.nan
    v = valid.copy()
    v[:5] = False
    assert M.nme(bad, ref, v) == pytest.approx(5.0)


def test_openings_amplitude_correlation_and_lag():
    T = 60
    ref = _face(T)
    t = np.arange(T)
    gap = 10 + 8 * np.sin(t / 4.0)                              # px
    for a, b in M.MOUTH_GAPS:
        ref[:, b] = ref[:, a] + np.stack([np.zeros(T), gap], 1)
    norm = M.iod(ref)
    mo = M.mouth_opening(ref, norm)
    np.testing.assert_allclose(mo, gap / 100.0)
    half = 0.5 * mo + 0.3
    assert M.amplitude_ratio(half, mo) == pytest.approx(0.5)
    assert M.correlation(half, mo) == pytest.approx(1.0)
    assert M.mean_ratio(mo * 1.5, mo) == pytest.approx(1.5)
    late = np.r_[np.full(2, mo[0]), mo[:-2]]                    # the same signal two frames later
    assert M.signal_lag(mo, late) == 2
    assert M.signal_lag(mo, mo) == 0
    eo = M.eye_opening(ref, norm)
    assert set(eo) == {"right", "left", "mean"} and eo["mean"].shape == (T,)


def test_blink_events_and_recall():
    T = 80
    ref = np.ones(T)
    for c in (10, 30, 55):                                      # three blinks, 3 frames each
        ref[c - 1:c + 2] = (0.5, 0.2, 0.5)
    ev = M.blink_events(ref)
    assert list(ev) == [10, 30, 55]
    cand = np.ones(T) + 0.01 * np.sin(np.arange(T))             # catches two of them, a frame late
    cand[11] = cand[56] = 0.3
    got = M.blink_events(cand)
    assert M.blink_recall(ev, got) == (2, 3)
    flat = 1 + 0.02 * np.random.default_rng(0).standard_normal(T)
    assert M.blink_recall(ev, M.blink_events(flat)) == (0, 3)
    far = np.ones(T)
    far[14] = 0.2                                               # 4 frames off: outside the tolerance
    assert M.blink_recall(M.blink_events(ref), M.blink_events(far)) == (0, 3)
    assert M.blink_events(np.full(T, np.nan)).size == 0


def test_clip_metrics_ratio_and_differences():
    from flamecap.reference.grid import clip_metrics
    ref = _face(30)
    mp = ref + np.array([2.0, 0.0])
    fit = ref + np.array([0.0, 3.0])
    m = clip_metrics(ref, np.ones(30, bool), mp, np.ones(30, bool), {"fast": fit})
    s = m["sources"]
    assert s["mediapipe"]["nme"]["inner51"] == pytest.approx(2.0)
    assert s["fast"]["nme_ratio_vs_mediapipe"] == pytest.approx(1.5)
    assert s["fast"]["nme_minus_mediapipe"]["brows"] == pytest.approx(1.0)
    assert m["frames_used"] == 30


def test_dlib_setup_check_and_bad_inputs(tmp_path, capsys):
    from flamecap.reference.dlib68 import MODEL_FILE, ReferenceUnavailable, find_model
    with pytest.raises(ReferenceUnavailable, match="libdlib-data"):
        find_model(tmp_path)
    (tmp_path / MODEL_FILE).write_bytes(b"not the model")
    with pytest.raises(Exception, match="sha256"):
        find_model(tmp_path)
    out = tmp_path / "rep"
    assert main(["bench", "-o", str(out), "--references", "nope"]) == 2
    assert "--references" in capsys.readouterr().err
    assert main(["bench", "-o", str(out), "--references", "grid", "--qualities", "best"]) == 2
    assert not out.exists()


def _dlib_ready():
    from flamecap.reference.dlib68 import ReferenceUnavailable, find_model, require_dlib
    from flamecap.reference.paths import default_refdata
    try:
        require_dlib()
        find_model(default_refdata())
    except ReferenceUnavailable as exc:
        pytest.skip(f"independent reference not installed: {exc}")


@pytest.mark.slow
def test_grid_reference_one_clip(tmp_path, grid_dir, flame_reference_dir, capsys):
    _dlib_ready()
    out = tmp_path / "ref"
    assert main(["bench", "-o", str(out), "--references", "grid", "--clips", "bbaf2n", "--grid", str(grid_dir),
                 "--reference", str(flame_reference_dir), "--progress", "none"]) == 0
    rep = json.loads((out / "reference_grid.json").read_text())
    c = rep["clips"][0]
    assert c["reference_found"] >= 70 and c["frames_used"] >= 70
    for src in ("mediapipe", "fast"):
        s = c["sources"][src]
        assert 0.5 < s["nme"]["inner51"] < 15, s["nme"]      # a face, not noise
        assert math.isfinite(s["mouth"]["corr_ref"])
    # reusing the results folder skips tracking and gives the same figures
    again = tmp_path / "again"
    assert main(["bench", "-o", str(again), "--references", "grid", "--clips", "bbaf2n", "--grid", str(grid_dir),
                 "--reference", str(flame_reference_dir), "--results", str(out / "results"),
                 "--progress", "none"]) == 0
    rep2 = json.loads((again / "reference_grid.json").read_text())
    assert rep2["clips"][0]["sources"]["fast"]["nme"] == c["sources"]["fast"]["nme"]
    assert rep2["track_wall_s"] == {}


# ------------------------------------------------------------------------------------------ rendered ground truth
def test_similarity_align_and_ratios():
    from flamecap.contract.conventions import axis_angle_to_matrix
    from flamecap.reference.renders import jaw_opening_ratio, procrustes_error_mm, similarity_align
    rng = np.random.default_rng(0)
    gt = rng.normal(0, 0.05, (2, 200, 3))
    R = axis_angle_to_matrix(np.array([0.3, -0.5, 0.2]))
    moved = 1.7 * gt @ R.T + np.array([0.1, -0.2, 0.5])
    np.testing.assert_allclose(similarity_align(moved[0], gt[0]), gt[0], atol=1e-12)
    np.testing.assert_allclose(procrustes_error_mm(moved, gt), 0.0, atol=1e-9)
    bumped = gt.copy()
    bumped[:, :, 2] += np.where(np.arange(200) % 2, 1e-3, -1e-3)     # ±1 mm that no similarity removes
    assert procrustes_error_mm(bumped, gt) == pytest.approx([1.0, 1.0], abs=0.05)
    true = np.linspace(0, 20, 30)
    assert jaw_opening_ratio(0.65 * true, true) == pytest.approx(0.65)


def test_render_metrics_of_the_truth_itself():
    """Scoring a 'result' that is the ground truth: every error 0, ratios 1, the neutral template's error > 0."""
    from flamecap.flame.synthetic import make_synthetic_model
    from flamecap.reference.renders import RenderClip, RenderSettings, clip_metrics, ground_truth
    rig = make_synthetic_model(n_shape=20, n_expr=10, subdivisions=3)
    s = RenderSettings(width=320, height=180)
    gt = ground_truth(rig, RenderClip("t", "synthetic", 300.0, n_frames=8, seed=3), s)
    result = {k: gt[k] for k in ("expr", "jaw_pose", "neck_pose", "eye_pose", "global_rot", "transl", "eyelids",
                                 "shape", "K", "cam_R", "cam_t")}
    result.update(valid=np.ones(8, bool), landmark_residual_px=np.full(8, 0.5), head_vertices=np.asarray(rig["v_template"]))
    m = clip_metrics(gt, rig, result)
    assert m["jaw_opening_ratio"] == pytest.approx(1.0)
    for k in ("jaw_error_deg", "head_rot_error_deg", "gaze_error_deg", "eye_rot_error_deg", "focal_error_pct",
              "ssme_mean_px", "true_reprojection_px"):
        assert m[k] == pytest.approx(0.0, abs=1e-2), k
    assert m["procrustes_face_mm"] == pytest.approx(0.0, abs=1e-3)
    assert m["neutral_template_procrustes_mm"] > 0.5 and m["procrustes_ratio_vs_neutral"] < 1e-3
    assert m["stored_residual_px"] == pytest.approx(0.5)


def test_alt_rig_differs_in_expression_basis_and_jaw_skinning(flame_reference_dir):
    from flamecap.reference.renders import JAW, make_rig
    test, alt = make_rig("test", flame_reference_dir), make_rig("alt", flame_reference_dir)
    np.testing.assert_array_equal(test["v_template"], alt["v_template"])
    assert not np.allclose(test["exprdirs"], alt["exprdirs"], atol=1e-4)
    wt, wa = test["weights"][:, JAW], alt["weights"][:, JAW]
    lower = (wt > 0.05) & (wt < 0.95)
    assert np.all(wa[lower] > wt[lower]) and np.allclose(alt["weights"].sum(1), 1.0, atol=1e-5)
    with pytest.raises(Exception, match="unknown rig"):
        make_rig("nope", flame_reference_dir)


@pytest.mark.slow
@pytest.mark.blender
def test_cycles_render_one_small_frame(tmp_path):
    pytest.importorskip("bpy", reason="bpy (headless Blender) is not installed in this Python")
    from flamecap.reference.renders import RenderClip, RenderSettings, render_clip
    clip = RenderClip("tiny", "synthetic", 260.0, n_frames=1, seed=1)
    d = render_clip(clip, RenderSettings(width=192, height=108, samples=1), tmp_path, tmp_path / "cache")
    import cv2
    im = cv2.imread(str(d / "frames" / "0000.jpg"))
    assert im.shape == (108, 192, 3)
    from flamecap.synth import _background
    bg = _background(np.random.default_rng(clip.seed + 1000), 192, 108)[..., ::-1].astype(int)   # BGR
    with np.load(d / "gt.npz") as z:
        c = np.round(z["points_2d"][0][z["visible"][0] & z["face_mask"]].mean(0)).astype(int)
    assert np.abs(im[c[1], c[0]].astype(int) - bg[c[1], c[0]]).sum() > 30     # the face is drawn there
    assert np.abs(im[2, 2].astype(int) - bg[2, 2]).sum() < 15                  # the backdrop elsewhere
    assert render_clip(clip, RenderSettings(width=192, height=108, samples=1), tmp_path, tmp_path / "cache") == d
