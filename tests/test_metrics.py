import numpy as np
import pytest

from flamecap import metrics


def _motion(T=40, V=30, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.uniform(0, 300, (1, V, 2))
    traj = np.cumsum(rng.normal(0, 2, (T, V, 2)), axis=0)
    return base + traj


def test_ssme_identical_motion_is_zero():
    gt = _motion()
    r = metrics.ssme(gt, gt.copy())
    assert r.mean == pytest.approx(0.0, abs=1e-12)
    assert set(r.per_gap) == {1, 2, 4, 8, 16, 32}


def test_ssme_constant_position_offset_is_zero_but_motion_offset_is_one():
    gt = _motion()
    # a constant offset of the positions does not change motion
    assert metrics.ssme(gt, gt + 5.0).mean == pytest.approx(0.0, abs=1e-9)
    # a constant 1 px offset in motion for every gap: pred[t+g]-pred[t] = gt motion + unit vector
    T = gt.shape[0]
    for g in (1, 4):
        pred = gt.copy()
        # construct pred per gap: motion differs by exactly 1 px along x
        pred_g = gt + np.arange(T)[:, None, None] / g * np.array([1.0, 0.0])
        r = metrics.ssme(gt, pred_g, gaps=(g,))
        assert r.per_gap[g] == pytest.approx(1.0, abs=1e-9)
        del pred


def test_ssme_respects_visibility_and_mask():
    gt = _motion()
    pred = gt.copy()
    pred[:, 0] += np.arange(gt.shape[0])[:, None] * 3.0  # vertex 0 drifts
    vis = np.ones(gt.shape[:2], bool)
    assert metrics.ssme(gt, pred, vis).mean > 0
    vis[:, 0] = False
    assert metrics.ssme(gt, pred, vis).mean == pytest.approx(0.0, abs=1e-9)
    mask = np.ones(gt.shape[1], bool)
    mask[0] = False
    assert metrics.ssme(gt, pred, vertex_mask=mask).mean == pytest.approx(0.0, abs=1e-9)


def test_jitter_and_lag():
    t = np.arange(50, dtype=float)
    line = np.stack([t, 2 * t], -1)[:, None, :]  # constant velocity → zero acceleration
    assert metrics.jitter(line) == pytest.approx(0.0, abs=1e-12)
    noisy = line + np.random.default_rng(0).normal(0, 1, line.shape)
    assert metrics.jitter(noisy) > 0.5
    sig = np.sin(t / 3.0)[:, None]
    delayed = np.concatenate([np.repeat(sig[:1], 2, axis=0), sig[:-2]])
    assert metrics.lag_frames(sig, delayed) == 2
    assert metrics.lag_frames(sig, sig) == 0


def test_nme_vertex_rotation_focal():
    obs = np.zeros((2, 3, 2))
    pred = obs + np.array([3.0, 4.0])
    assert metrics.reprojection_nme(pred, obs, np.array([100.0, 50.0])) == pytest.approx((0.05 + 0.1) / 2)
    a = np.zeros((1, 4, 3))
    assert metrics.vertex_error_mm(a + [0.001, 0, 0], a) == pytest.approx(1.0)
    assert metrics.rotation_error_deg(np.array([0, 0, np.radians(10)]), np.zeros(3)) == pytest.approx(10.0)
    assert metrics.focal_error_rel(110, 100) == pytest.approx(0.1)
