"""FLAME fitter: bound-point model vs the reference layer, analytic Jacobians, synthetic recovery, invalid
frames, single frame, all-NaN input, config validation. CPU, small synthetic heads."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from flamecap.contract.conventions import axis_angle_to_matrix
from flamecap.errors import FitError, InputError
from flamecap.fit import FitConfig, build_result, fit_track
from flamecap.fit.model import BoundModel
from flamecap.fit.synthetic import make_clip, sample_binding
from flamecap.flame.synthetic import make_synthetic_model


@pytest.fixture(scope="module")
def small_model():
    return make_synthetic_model(n_shape=20, n_expr=12, subdivisions=3)


def _rand_params(rng, T, S, E, scale=0.2):
    t = lambda a: torch.as_tensor(a)  # noqa: E731
    return (t(rng.normal(size=S)), t(rng.normal(size=(T, E))), t(rng.normal(size=(T, 15)) * scale),
            t(rng.normal(size=(T, 3)) * 0.05), t(rng.uniform(0, 1, size=(T, 2))))


def test_bound_model_matches_flame_layer(small_model):
    from flamecap.flame.layer import FlameLayer, FlameParams, barycentric_points
    b = sample_binding(small_model, 120, seed=3)
    bm = BoundModel(small_model, b.face_idx, b.bary, 20, 12, dtype=torch.float64)
    shape, expr, rot, tr, lids = _rand_params(np.random.default_rng(0), 3, 20, 12, scale=0.15)
    L = FlameLayer(small_model, dtype=torch.float64)
    out = L(FlameParams(shape=shape, expr=expr, global_rot=rot[:, :3], neck_pose=rot[:, 3:6], jaw_pose=rot[:, 6:9],
                        eye_pose=rot[:, 9:], transl=tr, eyelids=lids))
    ref = barycentric_points(out.vertices, L.faces, torch.as_tensor(b.face_idx), torch.as_tensor(b.bary))
    got = bm.points(shape, expr, rot, tr, lids)
    # blended skinning weights are the one approximation (sub-mm even on this coarse mesh at ~9° per joint)
    assert (got - ref).norm(dim=-1).max() < 1e-3
    # where a triangle's corners share weights the bound point is exact
    W = small_model["weights"][small_model.faces[b.face_idx]]
    same = np.abs(W - W[:, :1]).max((1, 2)) < 1e-9
    assert same.sum() > 10
    assert (got - ref)[:, torch.as_tensor(same)].abs().max() < 1e-9


def test_analytic_jacobians_match_autodiff(small_model):
    from torch.autograd.functional import jacobian
    b = sample_binding(small_model, 40, seed=4)
    bm = BoundModel(small_model, b.face_idx, b.bary, 20, 12, dtype=torch.float64)
    shape, expr, rot, tr, lids = _rand_params(np.random.default_rng(1), 2, 20, 12, scale=0.3)
    dirs = torch.eye(15)[[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 13]]
    J = bm.jacobians(shape, expr, rot, tr, lids, dirs, want_shape=True)
    jr = jacobian(lambda r: bm.points(shape, expr, r, tr, lids), rot)
    jr = torch.stack([jr[t, :, :, t] for t in range(2)])[..., [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 13]]
    assert torch.allclose(J["d_rot"], jr, atol=1e-8)
    js = jacobian(lambda s: bm.points(s, expr, rot, tr, lids), shape)
    assert torch.allclose(J["d_shape"], js, atol=1e-10)
    je = jacobian(lambda e: bm.points(shape, e, rot, tr, lids), expr)
    assert torch.allclose(J["d_expr"], torch.stack([je[t, :, :, t] for t in range(2)]), atol=1e-10)


def test_fused_projected_jacobians_match(small_model):
    """The fitter's fused path (linearize_projected, subset models) equals projection ∘ reference Jacobians."""
    from flamecap.fit.model import project
    b = sample_binding(small_model, 40, seed=4)
    bm = BoundModel(small_model, b.face_idx, b.bary, 20, 12, dtype=torch.float64)
    shape, expr, rot, tr, lids = _rand_params(np.random.default_rng(1), 3, 20, 12, scale=0.3)
    tr[:, 2] -= 0.6
    cols = [(0, 0), (0, 1), (0, 2), (2, 0), (2, 1), (2, 2), (1, 0), (1, 1), (1, 2), (3, 0), (3, 1), (4, 0), (4, 1)]
    dirs = torch.zeros(len(cols), 15)
    for n, (i, k) in enumerate(cols):
        dirs[n, 3 * i + k] = 1.0
    f = torch.tensor(500.0, dtype=torch.float64)
    d = bm.jacobians(shape, expr, rot, tr, lids, dirs, want_shape=True)
    uv, P = project(d["points"], f, 320.0, 240.0)
    ref = torch.cat([P @ d["d_rot"][..., :3], P, P @ d["d_rot"][..., 3:], P @ d["d_expr"][..., :10],
                     P @ d["d_eyelids"], P @ d["d_shape"]], -1)
    scale = torch.rand(3, b.face_idx.size, dtype=torch.float64) + 0.5
    pj = bm.linearize_projected(shape, expr, rot, tr, lids, f, 320.0, 240.0, cols, 10, True, want_shape=True,
                                log_focal=True, rows=lambda u: (scale, u - 1.0))
    assert torch.allclose(pj.uv, uv, atol=1e-12)
    assert torch.allclose(pj.J[..., : ref.shape[-1]], ref * scale[..., None, None], atol=1e-9)
    assert torch.allclose(pj.J[..., -2], (uv - torch.tensor([320.0, 240.0], dtype=torch.float64)) * scale[..., None])
    assert torch.allclose(pj.J[..., -1], uv - 1.0)
    sub = bm.subset(np.array([3, 7, 11]))
    assert torch.allclose(sub.points(shape, expr, rot, tr, lids), d["points"][:, [3, 7, 11]], atol=1e-12)


def _angle_deg(a, b):
    Ra, Rb = axis_angle_to_matrix(a), axis_angle_to_matrix(b)
    c = (np.trace(Ra @ np.swapaxes(Rb, -1, -2), axis1=-2, axis2=-1) - 1) / 2
    return np.degrees(np.arccos(np.clip(c, -1, 1)))


def _vertices(model, out, n_shape):
    from flamecap.flame.layer import FlameLayer, FlameParams
    L = FlameLayer(model, dtype=torch.float64)
    P = {k: torch.as_tensor(v) for k, v in out.params.items()}
    sh = np.zeros(model.n_shape)
    sh[: out.shape.size] = out.shape
    fp = FlameParams(shape=torch.as_tensor(sh), expr=torch.nn.functional.pad(P["expr"], (0, model.n_expr - P["expr"].shape[1])),
                     global_rot=P["global_rot"], neck_pose=P["neck_pose"], jaw_pose=P["jaw_pose"],
                     eye_pose=P["eye_pose"], transl=P["transl"], eyelids=P.get("eyelids"))
    with torch.no_grad():
        return L(fp).vertices.numpy()


def _recovery(model, n_frames=24, **cfg_kw):
    b = sample_binding(model, 300, seed=0)
    clip = make_clip(model, b, n_frames=n_frames, n_shape=min(20, model.n_shape), n_expr=min(10, model.n_expr),
                     noise_px=0.5, outlier_frac=0.05, seed=2)
    cfg = FitConfig.preset("fast", n_shape=model.n_shape, n_expr=model.n_expr, focal_px=clip.focal, **cfg_kw)
    out = fit_track(clip.track, b, model, cfg)
    gt = clip.params
    jaw = np.degrees(np.abs(out.params["jaw_pose"][:, 0] - gt["jaw_pose"][:, 0]))
    rot = _angle_deg(out.params["global_rot"], gt["global_rot"])
    fm = np.asarray(model["face_mask"], bool)
    v = _vertices(model, out, model.n_shape)[:, fm]
    g = clip.vertices[:, fm]
    raw = np.linalg.norm(v - g, axis=-1)
    s = float((v * g).sum() / (v * v).sum())  # depth/size ambiguity: one scale about the camera per clip
    aligned = np.linalg.norm(s * v - g, axis=-1)
    return clip, out, jaw, rot, raw, aligned, s


def test_synthetic_recovery(small_model):
    clip, out, jaw, rot, raw, aligned, s = _recovery(small_model)
    print(f"jaw max {jaw.max():.2f}° rot max {rot.max():.2f}° mean {rot.mean():.2f}°; face vertices raw mean "
          f"{raw.mean()*1e3:.2f} mm, scale-aligned mean {aligned.mean()*1e3:.2f} max {aligned.max()*1e3:.2f} mm, "
          f"scale {s:.4f}; error {np.nanmean(out.landmark_residual_px):.2f} px")
    assert out.valid.all()
    assert jaw.max() < 2.0
    assert rot.max() < 1.0
    assert aligned.mean() < 2e-3
    assert abs(s - 1) < 0.05
    res = build_result(out, clip.track, small_model)
    assert res["expr"].shape == (clip.track.n_frames, small_model.n_expr)


def test_synthetic_recovery_flame_topology(flame_reference_dir):
    from flamecap.flame.synthetic import flame_reference_head
    model = flame_reference_head(flame_reference_dir, n_expr=20)
    clip, out, jaw, rot, raw, aligned, s = _recovery(model, n_frames=16)
    print(f"FLAME topology: jaw max {jaw.max():.2f}° rot max {rot.max():.2f}°; face vertices scale-aligned mean "
          f"{aligned.mean()*1e3:.2f} mm, raw {raw.mean()*1e3:.2f} mm")
    assert jaw.max() < 2.0 and rot.max() < 1.0 and aligned.mean() < 2e-3


@pytest.mark.parametrize("fov_deg", [22.0, 60.0])
def test_focal_is_found_far_from_its_start_and_said_observable_when_it_is(small_model, fov_deg):
    # the fitter starts at a 40° field of view; a 22° and a 60° lens are 50 % shorter / 60 % longer focals
    b = sample_binding(small_model, 200, seed=0)
    clip = make_clip(small_model, b, n_frames=40, n_shape=20, n_expr=10, fov_deg=fov_deg, noise_px=0.5,
                     outlier_frac=0.0, yaw_deg=35.0, seed=4)
    out = fit_track(clip.track, b, small_model, FitConfig.preset("fast", n_shape=20, n_expr=10))
    err = abs(out.focal / clip.focal - 1.0)
    print(f"fov {fov_deg}: focal {out.focal:.0f} px (true {clip.focal:.0f}, {100 * err:.1f} %), "
          f"{out.info['focal_profile']}")
    assert err < 0.10
    assert out.info["focal_observable"] is True
    res = build_result(out, clip.track, small_model)
    assert res.meta["fit"]["focal_observable"] is True


def test_focal_of_a_head_that_never_turns_is_said_unobservable(small_model):
    # frontal, still, noisy: depth and face size trade off against the focal
    b = sample_binding(small_model, 200, seed=0)
    clip = make_clip(small_model, b, n_frames=30, n_shape=20, n_expr=10, fov_deg=20.0, noise_px=2.0,
                     outlier_frac=0.0, yaw_deg=2.0, seed=5)
    out = fit_track(clip.track, b, small_model, FitConfig.preset("fast", n_shape=20, n_expr=10))
    assert out.info["focal_observable"] is False
    given = fit_track(clip.track, b, small_model, FitConfig.preset("fast", n_shape=20, n_expr=10,
                                                                   focal_px=clip.focal))
    assert given.info["focal_observable"] is None and given.focal == pytest.approx(clip.focal)


def test_invalid_frames_interpolated_single_frame_and_all_nan(small_model):
    b = sample_binding(small_model, 80, seed=1)
    clip = make_clip(small_model, b, n_frames=10, n_shape=10, n_expr=6, outlier_frac=0.0, seed=5)
    tr = clip.track
    tr.points[4:6] = np.nan
    tr.valid[4:6] = False
    tr.points[8, :] = np.nan          # NaN points but flagged valid: must be caught
    cfg = FitConfig.preset("fast", n_shape=10, n_expr=6, focal_px=clip.focal)
    out = fit_track(tr, b, small_model, cfg)
    assert out.valid.tolist() == [True] * 4 + [False, False] + [True, True, False, True]
    assert np.isnan(out.landmark_residual_px[~out.valid]).all()
    for k, v in out.params.items():
        assert np.isfinite(v).all(), k
    # interpolated rows lie between their neighbours (no pops)
    z = out.params["transl"][:, 2]
    assert min(z[3], z[6]) - 1e-9 <= z[4] <= max(z[3], z[6]) + 1e-9
    build_result(out, tr, small_model)
    # a single frame
    one = make_clip(small_model, b, n_frames=1, n_shape=10, n_expr=6, outlier_frac=0.0, seed=6)
    o1 = fit_track(one.track, b, small_model, cfg)
    assert o1.valid.tolist() == [True] and o1.landmark_residual_px[0] < 3.0
    # all NaN → one-line FitError
    tr.points[:] = np.nan
    with pytest.raises(FitError) as e:
        fit_track(tr, b, small_model, cfg)
    assert "\n" not in str(e.value)


def test_config_validation():
    with pytest.raises(InputError):
        FitConfig.preset("ultra")
    with pytest.raises(InputError):
        FitConfig.preset("fast", robust="cauchy")
    with pytest.raises(InputError):
        FitConfig.preset("fast", focal_px=-3.0)
    with pytest.raises(InputError):
        FitConfig.preset("fast", no_such_setting=1)
    assert FitConfig.preset("production").n_shape > FitConfig.preset("fast").n_shape


def test_vertex_offsets_recover_a_bump(small_model):
    """A smooth 4 mm bump outside the shape basis: the offsets (Laplacian-regularised, small) find it, and
    the result carries them in vertex_offsets and head_vertices."""
    from flamecap.contract.model_format import FlameModelData
    m = small_model
    V = m["v_template"]
    fm = np.asarray(m["face_mask"], bool)
    centre = V[fm][np.argmax(V[fm][:, 2])]
    d = np.linalg.norm(V - centre, axis=1)
    bump = np.zeros_like(V)
    bump[:, 2] = 0.004 * np.exp(-(d / 0.02) ** 2) * fm
    gt = FlameModelData(arrays={**m.arrays, "v_template": V + bump}, meta=m.meta)
    b = sample_binding(m, 300, seed=0)
    clip = make_clip(gt, b, n_frames=16, n_shape=20, n_expr=10, noise_px=0.5, outlier_frac=0.05, seed=2)
    base = dict(n_shape=20, n_expr=12, focal_px=clip.focal)
    plain = fit_track(clip.track, b, m, FitConfig.preset("fast", **base))
    out = fit_track(clip.track, b, m, FitConfig.preset("fast", vertex_offsets=True, **base))
    assert plain.offsets is None and out.offsets.shape == (m.n_vertices, 3)
    o = out.offsets
    assert np.isfinite(o).all() and np.linalg.norm(o, axis=1).max() <= 5e-3 + 1e-9
    assert o[np.argmin(d), 2] > 0.5e-3                                  # the bump's peak is found ...
    assert np.corrcoef(o[fm, 2], bump[fm, 2])[0, 1] > 0.5               # ... with its shape
    eyes = np.asarray(m["weights"])[:, 3:].sum(1) >= 0.5
    assert np.abs(o[eyes]).max() == 0.0
    assert np.nanmedian(out.landmark_residual_px) <= np.nanmedian(plain.landmark_residual_px) + 1e-3
    res = build_result(out, clip.track, m)
    np.testing.assert_allclose(res["vertex_offsets"], o, atol=1e-7)
    neutral = V + np.einsum("vck,k->vc", m["shapedirs"][:, :, :20], out.shape) + o
    np.testing.assert_allclose(res["head_vertices"], neutral, atol=1e-6)
    assert FitConfig.preset("production").vertex_offsets and not FitConfig.preset("fast").vertex_offsets


def test_problem_gathers_observations_from_the_track_without_copies(small_model):
    """The fitter's observations are index views of the track: what a frame block gathers equals direct
    indexing (unknown σ replaced, masked where invisible, non-finite or on a faceless frame)."""
    from flamecap.fit.tracker import gather_observations
    b = sample_binding(small_model, 40)
    tr = make_clip(small_model, b, n_frames=12, n_shape=4, n_expr=4).track
    tr.sigma[2, 5] = np.nan
    tr.points[3, 7] = np.nan
    tr.visible[4, 9] = False
    tr.valid[6] = False
    frames, cols = np.array([2, 3, 4, 6, 8]), np.array([5, 7, 9, 11])
    obs, sig, mask = gather_observations(tr, frames, cols, default_sigma=3.0)
    np.testing.assert_array_equal(obs, tr.points[frames][:, cols])
    assert sig[0, 0] == 3.0 and np.array_equal(sig[1:], tr.sigma[frames[1:]][:, cols])
    want = np.ones((5, 4), bool)
    want[1, 1] = want[2, 2] = False
    want[3] = False
    np.testing.assert_array_equal(mask, want)


def _moved_rows(model, binding, rows, dist_m):
    """``binding`` with ``rows`` moved to the sliding candidate (vertex or triangle centre) nearest ``dist_m``
    away from where they are bound."""
    from flamecap.binding.base import surface_points, with_sliding
    v, f = np.asarray(model["v_template"]), np.asarray(model["faces"])
    probe = with_sliding(binding, rows, v, f, 2 * dist_m)
    here = _rest(model, binding, rows)
    fi, bary = [], []
    for i, r in enumerate(rows):
        cand = np.flatnonzero(probe.slide_row == r)
        pos = surface_points(v, f, probe.slide_face_idx[cand], probe.slide_bary[cand])
        k = cand[np.argmin(np.abs(np.linalg.norm(pos - here[i], axis=1) - dist_m))]
        fi.append(probe.slide_face_idx[k])
        bary.append(probe.slide_bary[k])
    return binding.with_rows(rows, np.array(fi), np.array(bary))


def _rest(model, b, rows):
    from flamecap.binding.base import surface_points
    return surface_points(model["v_template"], model["faces"], b.face_idx[rows], b.bary[rows])


def test_sliding_rows_find_where_the_points_are_and_the_fit_follows(small_model):
    """Points bound 4 mm from where they really are (as a render-calibrated inner lip is on footage): with
    sliding candidates the fit moves them back, and fits the clip better than with them left where bound."""
    from flamecap.binding.base import with_sliding
    truth = sample_binding(small_model, 300, seed=0)
    clip = make_clip(small_model, truth, n_frames=24, n_shape=10, n_expr=8, noise_px=0.5, outlier_frac=0.0, seed=3)
    v = np.asarray(small_model["v_template"])
    dense = with_sliding(truth, np.arange(len(truth.face_idx)), v, small_model["faces"], 0.008)
    moved = np.argsort(-np.bincount(dense.slide_row))[:12]                 # 12 rows where the mesh is fine
    wrong = _moved_rows(small_model, truth, moved, 0.004)
    start = np.linalg.norm(_rest(small_model, wrong, moved) - _rest(small_model, truth, moved), axis=1)
    cfg = FitConfig.preset("fast", n_shape=small_model.n_shape, n_expr=small_model.n_expr, focal_px=clip.focal)
    fixed = fit_track(clip.track, wrong, small_model, cfg)
    slid = fit_track(clip.track, with_sliding(wrong, moved, v, small_model["faces"], 0.008), small_model, cfg)
    end = np.linalg.norm(_rest(small_model, slid.binding, moved) - _rest(small_model, truth, moved), axis=1)
    res_fixed, res_slid = np.nanmean(fixed.landmark_residual_px), np.nanmean(slid.landmark_residual_px)
    print(f"rows moved 4 mm off: start {start.mean() * 1e3:.2f} mm, after sliding {end.mean() * 1e3:.2f} mm "
          f"(max {end.max() * 1e3:.2f}); residual {res_fixed:.3f} -> {res_slid:.3f} px")
    assert start.min() > 0.002 and start.mean() > 0.0035
    assert np.median(end) < 0.4 * np.median(start)      # candidates are vertices and triangle centres only
    assert res_slid < res_fixed
    assert fixed.binding is wrong and fixed.info["slid_mm"] is None
    assert set(slid.info["slid_mm"]) == set(int(p) for p in wrong.point_index[moved])


def test_exact_points_keep_their_sliding_rows_in_place(small_model):
    """Rows bound where the points are stay there (the prior and the data agree)."""
    from flamecap.binding.base import with_sliding
    truth = sample_binding(small_model, 300, seed=0)
    clip = make_clip(small_model, truth, n_frames=16, n_shape=10, n_expr=8, noise_px=0.3, outlier_frac=0.0, seed=4)
    rows = np.arange(10)
    b = with_sliding(truth, rows, small_model["v_template"], small_model["faces"], 0.008)
    out = fit_track(clip.track, b, small_model, FitConfig.preset("fast", focal_px=clip.focal))
    assert max(out.info["slid_mm"].values()) < 1.0
