"""Pipelined `flamecap track`: read-ahead decoding (video.prefetch), block-wise MediaPipe σ/visibility and the
sparse normal sums give exactly the sequential results; the CLI's --no-pipeline path matches on a GRID clip."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from flamecap.video import prefetch


def _frames(n, fail_at=None, log=None):
    try:
        for i in range(n):
            if i == fail_at:
                raise ValueError(f"bad frame {i}")
            yield i, i / 25.0, np.full((2, 2, 3), i, np.uint8)
    finally:
        if log is not None:
            log.append("closed")


def test_prefetch_keeps_order_and_items():
    got = list(prefetch(_frames(50), depth=3))
    assert [g[0] for g in got] == list(range(50))
    assert all(int(g[2][0, 0, 0]) == g[0] for g in got)
    assert list(prefetch(_frames(7), depth=0))[-1][0] == 6


def test_prefetch_reraises_source_error_in_consumer():
    it = prefetch(_frames(20, fail_at=5), depth=2)
    seen = []
    with pytest.raises(ValueError, match="bad frame 5"):
        for item in it:
            seen.append(item[0])
    assert seen == [0, 1, 2, 3, 4]


def test_prefetch_early_close_stops_thread_and_closes_source():
    log: list = []
    before = threading.active_count()
    it = prefetch(_frames(10_000, log=log), depth=2)
    assert next(it)[0] == 0
    it.close()
    assert log == ["closed"]
    assert threading.active_count() == before


def _random_faces(n, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(478, 3)) * np.array([60.0, 70.0, 30.0]) + np.array([180.0, 140.0, 0.0])
    return base[None] + rng.normal(scale=2.0, size=(n, 478, 3))


def test_sparse_normals_match_add_at_reference():
    from flamecap.landmarks.mediapipe_aligner import N_POINTS, _tables, point_normals_cos
    p = _random_faces(5)
    e = _tables()["edges"]
    d = p[:, e[:, 1]] - p[:, e[:, 0]]
    outer = d[..., :, None] * d[..., None, :]
    cov = np.zeros((5, N_POINTS, 3, 3))
    np.add.at(cov, (slice(None), e[:, 0]), outer)
    np.add.at(cov, (slice(None), e[:, 1]), outer)
    _, vecs = np.linalg.eigh(cov[:, :468] + 1e-9 * np.eye(3))
    n = vecs[..., 0]
    g = np.cross(p[:, 263] - p[:, 33], p[:, 10] - p[:, 152])
    g /= np.linalg.norm(g, axis=-1, keepdims=True)
    g = np.where(g[:, 2:3] > 0, -g, g)
    n = np.where((np.sum(n * g[:, None], -1) < 0)[..., None], -n, n)
    cos = point_normals_cos(p)
    assert np.array_equal(cos[:, :468], -n[..., 2])                  # bit-identical, not just close
    near = np.argmin(np.linalg.norm(p[:, 468:, None, :2] - p[:, None, :468, :2], axis=-1), axis=-1)
    assert np.array_equal(cos[:, 468:], np.take_along_axis(cos[:, :468], near, axis=1))


@pytest.mark.parametrize("post_in_thread", [False, True])
def test_blockwise_track_equals_whole_clip(monkeypatch, post_in_thread):
    """The MediaPipe backends' track post-processes σ/visibility per block of frames (in a worker thread or
    not); same arrays as one call."""
    from flamecap.landmarks import litert_aligner as la
    from flamecap.landmarks import mediapipe_aligner as ma
    T = 2 * ma.POST_BLOCK + 5
    p3 = _random_faces(T, seed=1)
    face = np.ones(T, bool)
    face[[0, 3, ma.POST_BLOCK, T - 1]] = False
    rows = [(i, i / 25.0, p3[i] if face[i] else None, 1 if face[i] else 0) for i in range(T)]
    monkeypatch.setattr(la.LiteRTAligner, "iter_detect", lambda self, *a, **k: iter(rows))
    monkeypatch.setattr(la.LiteRTAligner, "post_in_thread", post_in_thread)
    tr = la.LiteRTAligner().track(iter(()), (360, 288), 25.0)
    sig, vis = ma.sigma_and_visibility(p3[face])
    assert np.array_equal(tr.valid, face) and np.array_equal(tr.frame_index, np.arange(T))
    assert np.array_equal(tr.sigma[face], sig.astype(np.float16)) and np.isnan(tr.sigma[~face]).all()
    assert np.array_equal(tr.visible[face], vis) and not tr.visible[~face].any()
    assert np.array_equal(tr.points[face], p3[face, :, :2].astype(np.float32)) and np.isnan(tr.points[~face]).all()


@pytest.mark.slow
def test_track_cli_pipelined_equals_sequential(grid_dir, tmp_path):
    from flamecap.cli import main
    from flamecap.contract.model_format import save_model_npz
    from flamecap.contract.result import load_result
    from flamecap.flame.synthetic import make_synthetic_model
    clip = sorted(grid_dir.glob("*.mpg"))[0]
    mpath = save_model_npz(tmp_path / "head.npz", make_synthetic_model(n_shape=10, n_expr=8, subdivisions=3))
    outs = {}
    for name, extra in (("pipe", []), ("seq", ["--no-pipeline"])):
        out = tmp_path / f"{name}.npz"
        assert main(["track", str(clip), "--end", "40", "-o", str(out), "--model", str(mpath),
                     "--progress", "none", *extra]) == 0
        outs[name] = load_result(out)
    a, b = outs["pipe"], outs["seq"]
    assert a.n_frames == b.n_frames == 40
    for key in ("global_rot", "transl", "jaw_pose", "expr", "shape", "K", "valid", "landmark_residual_px"):
        np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-9, equal_nan=True, err_msg=key)
