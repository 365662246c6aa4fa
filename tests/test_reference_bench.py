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
