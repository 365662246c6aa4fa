"""The binding layer: one dispatch (scheme, model) → binding; the self-calibrated MediaPipe binding (geometry
helpers, calibration on the FLAME template against the official embedding, points kept on their part of the
head, caching, source selection, CLI); the official + calibrated combination."""
import numpy as np
import pytest

from flamecap.contract.model_format import FlameModelData
from flamecap.binding.mediapipe import (CalibrationConfig, _geometric_median, closest_surface_binding,
                                compare_bindings, mediapipe_binding, mediapipe_embedding_report, official_binding,
                                surface_points)
from flamecap.errors import ModelError
from flamecap.geometry import closest_barycentric

FAST = CalibrationConfig(yaws_deg=(-20.0, 0.0, 20.0), pitches_deg=(-8.0, 8.0), lights=((0.3, -0.4, -1.0),),
                         min_views=3)


def test_closest_point_on_triangle_matches_dense_sampling():
    rng = np.random.default_rng(0)
    for _ in range(20):
        tri = rng.normal(size=(3, 3))
        p = rng.normal(size=3) * 2
        bc = closest_barycentric(p[None], tri[0][None], tri[1][None], tri[2][None])[0]
        assert bc.min() >= -1e-9 and bc.sum() == pytest.approx(1.0)
        u, v = np.meshgrid(np.linspace(0, 1, 201), np.linspace(0, 1, 201))
        m = u + v <= 1
        pts = (1 - u[m] - v[m])[:, None] * tri[0] + u[m][:, None] * tri[1] + v[m][:, None] * tri[2]
        best = np.linalg.norm(pts - p, axis=1).min()
        assert np.linalg.norm(bc @ tri - p) <= best + 1e-9


def test_closest_surface_binding_recovers_surface_points():
    th, ph = np.meshgrid(np.linspace(0.1, np.pi - 0.1, 12), np.linspace(0, 2 * np.pi, 24, endpoint=False))
    v = np.stack([np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), np.cos(th)], -1).reshape(-1, 3)
    from scipy.spatial import ConvexHull
    f = ConvexHull(v).simplices
    rng = np.random.default_rng(1)
    fi = rng.integers(0, len(f), 30)
    b = rng.dirichlet(np.ones(3), 30)
    p = surface_points(v, f, fi, b)
    fi2, b2 = closest_surface_binding(p + 1e-4 * rng.normal(size=p.shape), v, f)
    np.testing.assert_allclose(surface_points(v, f, fi2, b2), p, atol=3e-4)


def test_geometric_median_ignores_outliers():
    x = np.r_[np.random.default_rng(0).normal(0, 0.001, (20, 3)), [[1.0, 1.0, 1.0]] * 6]
    assert np.linalg.norm(_geometric_median(x)) < 0.003


def test_official_only_when_asked():
    m = FlameModelData(arrays={"v_template": np.zeros((4, 3)), "faces": np.array([[0, 1, 2], [0, 2, 3]])})
    with pytest.raises(ModelError, match="no official MediaPipe embedding"):
        mediapipe_binding(m, source="official")
    with pytest.raises(ModelError, match="unknown embedding source"):
        mediapipe_binding(m, source="magic")


@pytest.fixture(scope="module")
def template_model(flame_reference_dir):
    z = np.load(flame_reference_dir / "flame2023open_partial_basis.npz")
    return FlameModelData(arrays={"v_template": z["v_template"], "faces": z["faces"].astype(np.int64),
                                  "mp_face_idx": z["lmk_face_idx"], "mp_bary": z["lmk_b_coords"],
                                  "mp_landmark_indices": z["landmark_indices"]})


def test_self_calibration_on_flame_template(template_model):
    """A 6-render calibration (the default uses 30) already lands near the official 105-point embedding."""
    rep = mediapipe_embedding_report(template_model, FAST)
    s = rep.summary()
    assert s["renders_with_face"] == 6 and not s["from_cache"]
    assert 250 <= rep.n_kept <= 478 and rep.n_kept + rep.n_dropped == 478
    assert np.isnan(rep.positions[~rep.kept]).all() and np.isfinite(rep.positions[rep.kept]).all()
    b = rep.binding
    assert b.source == "self-calibrated" and b.topology_hash == template_model.topology
    np.testing.assert_array_equal(b.point_index, np.nonzero(rep.kept)[0])
    # re-bound points sit on the surface, near the robust positions
    on_surf = surface_points(template_model["v_template"], template_model.faces, b.face_idx, b.bary)
    assert np.linalg.norm(on_surf - rep.positions[rep.kept], axis=1).max() < 0.004
    cmp = compare_bindings(template_model, b, official_binding(template_model))
    assert cmp["n_common"] >= 90 and cmp["mean_mm"] < 4.5 and cmp["median_mm"] < 4.0
    # cached: same binding without rendering; "auto" combines the model's official points with the rest
    rep2 = mediapipe_embedding_report(template_model, FAST)
    assert rep2.from_cache
    np.testing.assert_array_equal(rep2.binding.face_idx, b.face_idx)
    assert mediapipe_binding(template_model, config=FAST, source="self-calibrated").source == "self-calibrated"
    assert mediapipe_binding(template_model, config=FAST).source == "official+self-calibrated"
    assert mediapipe_binding(template_model, source="official").source == "official-embedding"
    # a different head (scaled) is a different cache entry
    scaled = FlameModelData(arrays={**template_model.arrays, "v_template": template_model["v_template"] * 1.01})
    assert not mediapipe_embedding_report(scaled, FAST, cache=False).from_cache


@pytest.mark.slow
def test_cli_embed_reference_head_meets_3mm(flame_reference_dir, tmp_path, capsys):
    """The done-when figure: default calibration on the FLAME-topology test head (albedo painted) vs the
    official 105-point embedding, mean ≤ 3 mm; the second run comes from the cache."""
    import json

    from flamecap.cli import main
    from flamecap.contract.model_format import save_model_npz
    from flamecap.flame.synthetic import flame_reference_head
    path = save_model_npz(tmp_path / "head.npz", flame_reference_head(flame_reference_dir, n_expr=10))
    assert main(["embed", "--model", str(path), "--json", "--progress", "none"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["kept"] >= 350 and stats["renders_with_face"] == stats["renders"]
    assert stats["official"]["n_common"] >= 100 and stats["official"]["mean_mm"] <= 3.0
    assert main(["embed", "--model", str(path), "--progress", "none"]) == 0
    out = capsys.readouterr().out
    assert "[cached]" in out and "vs official embedding" in out


def test_inner_lips_calibrated_with_the_mouth_open(flame_reference_dir):
    """On the closed neutral mouth MediaPipe's upper and lower inner lip points coincide; calibrated on
    open-jaw renders, the lower ones bind where the jaw moves the surface and the upper ones where it
    does not, so a fitted mouth can open them (on the closed mouth alone all of them land on the upper lip)."""
    from flamecap.binding.mediapipe import INNER_LIPS, open_jaw_vertices
    from flamecap.flame.synthetic import flame_reference_head
    m = flame_reference_head(flame_reference_dir, n_expr=10)
    rep = mediapipe_embedding_report(m, FAST, cache=False)
    W = np.asarray(m["weights"])[:, 2]                                   # jaw skinning weight
    F = np.asarray(m.faces)

    def jaw_weight(k):
        r = np.flatnonzero(rep.binding.point_index == k)[0]
        return float(rep.binding.bary[r] @ W[F[rep.binding.face_idx[r]]])

    lower, upper = (14, 87, 317), (13, 82, 312)
    assert all(rep.kept[k] for k in lower + upper)
    assert min(jaw_weight(k) for k in lower) > 0.6 and max(jaw_weight(k) for k in upper) < 0.3
    assert rep.n_renders == FAST.n_renders + FAST.n_open_renders
    # without the open-mouth renders (a bare template has no rig) the pairs collapse onto one lip
    closed = mediapipe_embedding_report(FlameModelData(arrays={k: m[k] for k in ("v_template", "faces",
                                                                                  "vertex_albedo")}),
                                        FAST, cache=False)
    pos = surface_points(m["v_template"], F, closed.binding.face_idx, closed.binding.bary)
    at = {k: pos[np.flatnonzero(closed.binding.point_index == k)[0]] for k in (13, 14) if closed.kept[k]}
    if len(at) == 2:
        assert np.linalg.norm(at[13] - at[14]) < 1e-3
    assert open_jaw_vertices(FlameModelData(arrays={"v_template": m["v_template"], "faces": F}), 12.0) is None
    assert set(INNER_LIPS) >= set(lower + upper)


def test_bind_dispatch(template_model):
    from flamecap.binding import bind
    from flamecap.errors import InputError
    m = template_model
    b = bind("vertices", m)
    assert b.source == "vertices" and len(b.point_index) == m.n_vertices
    assert bind("custom", m, n_points=m.n_vertices).source == "vertices"
    fb = bind("custom", m, surface_points=(np.array([0, 5]), np.array([[1.0, 0, 0], [0, 1.0, 0]])))
    assert fb.source == "file" and fb.point_index.tolist() == [0, 1]
    with pytest.raises(InputError, match="another head topology"):
        bind("custom", m, surface_points=(np.array([10 ** 7]), np.array([[1.0, 0, 0]])))
    with pytest.raises(InputError, match="no binding"):
        bind("custom", m, n_points=7)


@pytest.fixture(scope="module")
def rigged_report(flame_reference_dir):
    """The FLAME-topology test head without its own albedo (a user's FLAME download has none)."""
    from flamecap.flame.synthetic import flame_reference_head
    m = flame_reference_head(flame_reference_dir, n_expr=10)
    m = FlameModelData(arrays={k: v for k, v in m.arrays.items() if k != "vertex_albedo"}, meta=m.meta)
    return m, mediapipe_embedding_report(m, FAST, cache=False)


def test_points_bind_to_their_part_of_the_head(rigged_report):
    """Lid points on lid skin (a lid point on the eyeball cannot blink), irises on the eyeballs, lower inner
    lip on jaw-skinned skin, upper inner lip elsewhere (one lip alone never opens)."""
    from flamecap.binding.mediapipe import (EYEBALL, HEAD, IRISES, JAW_SKIN, LEFT_EYE, LOWER_INNER_LIP,
                                            RIGHT_EYE, UPPER_INNER_LIP, face_parts)
    m, rep = rigged_report
    parts = face_parts(m.faces, m["weights"])
    part_of = dict(zip(rep.binding.point_index.tolist(), parts[rep.binding.face_idx].tolist()))
    lids = [k for k in RIGHT_EYE + LEFT_EYE if k in part_of]
    assert len(lids) >= 24 and all(part_of[k] != EYEBALL for k in lids)
    assert [k for k in IRISES if k in part_of] and all(part_of[k] == EYEBALL for k in IRISES if k in part_of)
    assert all(part_of[k] == JAW_SKIN for k in LOWER_INNER_LIP if k in part_of)
    assert all(part_of[k] == HEAD for k in UPPER_INNER_LIP if k in part_of)
    assert sum(k in part_of for k in LOWER_INNER_LIP + UPPER_INNER_LIP) >= 14


def test_painted_albedo_marks_the_eyes_and_brows(rigged_report, flame_reference_dir, monkeypatch):
    from flamecap.binding.mediapipe import SKIN_RGB, painted_albedo
    m, _ = rigged_report
    v, w = np.asarray(m["v_template"]), np.asarray(m["weights"])
    joints = np.asarray(m["J_regressor"]) @ v
    col = painted_albedo(v, m.faces, w, joints)
    for j in (3, 4):
        ball = np.flatnonzero(w[:, j] > 0.5)
        front = ball[np.argmax(v[ball, 2])]
        assert col[front].max() < 0.1                                 # pupil straight ahead
        assert col[ball[np.argmin(v[ball, 2])]].min() > 0.8           # sclera behind
    skin = w[:, 3:].sum(1) < 0.5
    assert np.allclose(np.median(col[skin], 0), SKIN_RGB)
    # brows: dark skin just under FLAME's 68-point brow points (they trace the brows' upper edge), none below
    # the eyes
    from flamecap.flame.synthetic import load_static_embedding_68
    fi, b = load_static_embedding_68(flame_reference_dir / "flame_static_embedding_68.pkl")
    brow68 = np.einsum("kcd,kc->kd", v[np.asarray(m.faces)[fi[17:27]]], b[17:27])
    near = np.linalg.norm(v[:, None] - (brow68 - [0.0, 0.004, 0.0])[None], axis=-1).min(1) < 0.004
    dark = col.sum(1) < 0.5 * sum(SKIN_RGB)
    assert dark[near & skin].mean() > 0.5
    from flamecap.binding import mediapipe as mpb
    monkeypatch.setattr(mpb, "_paint_brows", lambda *a: None)
    brows = np.abs(col - painted_albedo(v, m.faces, w, joints)).sum(1) > 1e-9
    assert brows.sum() > 20 and (v[brows, 1] > joints[3:5, 1].min() + 0.005).all()
    assert (v[brows, 2] > joints[3:5, 2].min() - 0.01).all()


def test_combined_binding_keeps_official_points_and_moves_the_rest(template_model, rigged_report):
    """Official rows verbatim; calibrated points near official ones are moved toward where the official
    embedding says their neighbours are, so on the official points themselves the offset vanishes."""
    from flamecap.binding.mediapipe import combined_binding
    m, rep = rigged_report
    m = FlameModelData(arrays={**m.arrays, **{k: template_model[k] for k in ("mp_face_idx", "mp_bary",
                                                                              "mp_landmark_indices")}})
    from flamecap.binding.mediapipe import INNER_LIPS, LOWER_INNER_LIP, UPPER_INNER_LIP, face_parts
    off = official_binding(m)
    comb = combined_binding(m, rep.binding, off)
    kept = ~np.isin(off.point_index, INNER_LIPS)              # official inner lips sit on the closed lip line
    n_off = int(kept.sum())
    np.testing.assert_array_equal(comb.point_index[:n_off], off.point_index[kept])
    np.testing.assert_array_equal(comb.face_idx[:n_off], off.face_idx[kept])
    parts = dict(zip(comb.point_index.tolist(), face_parts(m.faces, m["weights"])[comb.face_idx].tolist()))
    assert {parts[k] for k in LOWER_INNER_LIP if k in parts} == {1} and {parts[k] for k in UPPER_INNER_LIP if k in parts} == {0}
    assert set(comb.point_index.tolist()) == set(rep.binding.point_index.tolist()) | set(off.point_index.tolist())
    # a calibrated point's moved position is closer to the official positions' frame than before: the
    # mean offset to the official embedding of the leave-one-out neighbours shrinks
    before = compare_bindings(m, rep.binding, off)["mean_mm"]
    v, f = m["v_template"], m.faces
    moved = dict(zip(comb.point_index.tolist(), surface_points(v, f, comb.face_idx, comb.bary)))
    cal = dict(zip(rep.binding.point_index.tolist(), surface_points(v, f, rep.binding.face_idx, rep.binding.bary)))
    rest = [k for k in cal if k not in set(off.point_index.tolist())]
    shift = np.array([np.linalg.norm(moved[k] - cal[k]) for k in rest]) * 1000
    assert before > 0.5 and np.median(shift) > 0.2 and shift.max() < 15.0


def test_inner_lips_slide_on_their_own_part_only(rigged_report):
    """Only the inner-lip rows get sliding candidates, each within the radius of where it is bound and on
    its own part: a lower inner lip never slides onto the upper lip (the mouth could no longer open)."""
    from flamecap.binding.mediapipe import (INNER_LIPS, LOWER_INNER_LIP, SLIDE_RADIUS_M, UPPER_INNER_LIP,
                                            face_parts, with_sliding_lips)
    m, rep = rigged_report
    b = with_sliding_lips(m, rep.binding)
    rows = np.unique(b.slide_row)
    assert set(b.point_index[rows].tolist()) == set(INNER_LIPS) & set(b.point_index.tolist())
    v, f = np.asarray(m["v_template"]), m.faces
    here = surface_points(v, f, b.face_idx[b.slide_row], b.bary[b.slide_row])
    there = surface_points(v, f, b.slide_face_idx, b.slide_bary)
    assert np.linalg.norm(there - here, axis=1).max() <= SLIDE_RADIUS_M + 1e-9
    part = face_parts(f, m["weights"])[b.slide_face_idx]
    pts = b.point_index[b.slide_row]
    assert set(part[np.isin(pts, LOWER_INNER_LIP)].tolist()) == {1}
    assert set(part[np.isin(pts, UPPER_INNER_LIP)].tolist()) == {0}
    assert np.bincount(b.slide_row)[rows].min() >= 5           # somewhere to go for every row
