"""jawOpen with expressions: the jaw's deformation is transferred apart from the closed-jaw expressions (as a
linear shape-key rig composes them), and the temporal smoothing is per key (small keys are not over-smoothed)."""
from __future__ import annotations

import numpy as np
import pytest

from flamecap.retarget import Correspondences, ShapeKeyTarget, SolveConfig, retarget_shape_keys, solve_weights
from flamecap.retarget.deform import face_displacements, face_displacements_linearised, head_lbs
from flamecap.retarget.synthetic import make_arkit_character, make_result, tiny_head_model

KEYS = ["jawOpen", "eyeBlinkLeft", "eyeBlinkRight", "mouthSmileLeft", "mouthSmileRight", "browInnerUp",
        "jawForward", "mouthFunnel", "cheekPuff", "noseSneerLeft", "mouthPucker"]


@pytest.fixture(scope="module")
def model():
    return tiny_head_model()


def test_linearised_displacements_split_jaw_and_expressions(model):
    rng = np.random.default_rng(0)
    T = 4
    expr = rng.normal(size=(T, model.n_expr))
    jaw = np.c_[rng.uniform(0.1, 0.3, T), np.zeros((T, 2))]
    lids = rng.uniform(size=(T, 2))
    v0 = np.asarray(make_result(model, n_frames=1)["head_vertices"], np.float64)
    # jaw closed: identical to FLAME's posed deformation
    r0 = make_result(model, expr=expr, eyelids=lids)
    np.testing.assert_allclose(face_displacements_linearised(r0), face_displacements(r0), atol=1e-7)
    # no expression: identical too (the jaw alone)
    rj = make_result(model, jaw_pose=jaw)
    np.testing.assert_allclose(face_displacements_linearised(rj), face_displacements(rj), atol=1e-7)
    # both: the sum of the two parts, which differs from FLAME by the jaw rotating the expression offsets
    r = make_result(model, expr=expr, jaw_pose=jaw, eyelids=lids)
    lin = face_displacements_linearised(r)
    parts = (head_lbs(rj) - v0) + (head_lbs(r0) - v0)
    np.testing.assert_allclose(lin, parts, atol=1e-7)
    cross = np.abs(face_displacements(r) - lin).max()
    assert cross > 1e-4      # a real difference (metres) on the lower face
    assert np.all(np.isfinite(lin))


def test_jaw_with_expressions_on_a_warped_character(model):
    """jawOpen combined with 10 expression keys on a warped, subdivided character (40 frames)."""
    ch = make_arkit_character(model, KEYS, n_frames=40, warp=0.03)
    tgt = ShapeKeyTarget(ch.vertices, ch.faces, ch.key_names, ch.key_deltas, name="character")
    corr = Correspondences.from_vertices(ch.source, tgt, ch.flame_landmarks, ch.target_landmarks)
    split = retarget_shape_keys(ch.source, tgt, corr)
    full = retarget_shape_keys(ch.source, tgt, registration=split.registration, split_jaw=False)
    e_split = np.abs(split.weights - ch.weights)
    e_full = np.abs(full.weights - ch.weights)
    print(f"jawOpen + 10 keys, warped: weight error split jaw mean {e_split.mean():.4f} max {e_split.max():.4f}; "
          f"FLAME's full posed deformation mean {e_full.mean():.4f} max {e_full.max():.4f}; jawOpen max "
          f"{e_split[:, 0].max():.4f}")
    assert e_split.mean() < 0.02 and e_split.max() < 0.1
    assert e_split[:, 0].max() < 0.03
    assert e_split.mean() < 0.75 * e_full.mean() and e_split.max() < 0.75 * e_full.max()


def test_smoothing_is_relative_to_each_key():
    """Two keys on separate vertices, 100× apart in size, driven by the same curve: the small one must be
    smoothed like the large one (with one global λ it was pulled almost flat)."""
    N = 50
    basis = np.zeros((2, 2 * N, 3))
    basis[0, :N, 1] = 1.0
    basis[1, N:, 1] = 0.01
    t = np.linspace(0, 1, 30)
    w = 0.5 + 0.45 * np.sin(2 * np.pi * 2 * t)
    targets = np.einsum("tk,knc->tnc", np.c_[w, w], basis)
    sol = solve_weights(basis, targets, 0.0, 1.0, SolveConfig(smooth=0.05))
    err = np.abs(sol.weights - w[:, None])
    assert err[:, 1].max() < 0.1
    assert abs(err[:, 0].max() - err[:, 1].max()) < 1e-6   # the same relative smoothing


def test_eye_closure_from_lid_points_uses_the_lids_not_the_eyeballs(flame_reference_dir):
    """Without eyelid shapes the closure comes from the source mesh's lid points; a lid landmark lies on the
    eyeball's front (where a thin lid projects), and the eyeball right behind it never moves with an
    expression: the closure must come from the nearest lid vertex."""
    from flamecap.flame.face_regions import SEMANTIC_EXPRESSIONS
    from flamecap.flame.synthetic import flame_reference_head
    from flamecap.retarget.calibrate import MP_LIDS
    from flamecap.retarget.drive import eye_closure
    from flamecap.retarget.features import feature_basis, frame_features
    model = flame_reference_head(flame_reference_dir, n_expr=12)
    del model.arrays["eyelid_dirs"]
    T = 6
    expr = np.zeros((T, model.n_expr))
    closing = np.array([0, 0, 1, 1.5, 1, 0], float)
    expr[:, SEMANTIC_EXPRESSIONS.index("eye_blink_left")] = closing
    expr[:, SEMANTIC_EXPRESSIONS.index("eye_blink_right")] = closing
    res = make_result(model, expr=expr)
    v0 = np.asarray(res["head_vertices"])
    W = np.asarray(res["head_weights"])
    lm = np.full((478, 3), np.nan)
    for side, joint in (("left", 3), ("right", 4)):
        ball = np.flatnonzero(W[:, joint] > 0.5)
        front = v0[ball[np.argmax(v0[ball, 2])]]                 # the eyeball's front-most vertex
        up, lo = MP_LIDS[side]
        lm[up], lm[lo] = front + [0, 0.003, 0], front - [0, 0.003, 0]
    out = eye_closure(res, feature_basis(res), frame_features(res), Correspondences(
        flame_points=lm[[159, 145, 386, 374]], target_points=lm[[159, 145, 386, 374]], flame_landmarks=lm))
    for side in ("left", "right"):
        c = out[side]
        assert c[0] < 0.05 and c[1] < 0.05 and min(c[2], c[3], c[4]) > 0.3, (side, c)


MOUTH_KEYS = ["jawOpen", "mouthSmileLeft", "mouthSmileRight", "mouthFunnel", "cheekPuff", "mouthPucker"]


def _mouth_character(flame_reference_dir, teeth: bool):
    """A FLAME-reference character whose mouth opens with ``viseme_aa`` (FLAME's jaw opening) while its
    jawOpen key is empty, as some third-party heads ship; ``teeth``: two rows of teeth behind the lips,
    touching at rest, the lower row moving with the jaw (as on heads with a mouth cavity)."""
    from flamecap.flame.synthetic import flame_reference_head
    from flamecap.retarget.shapekeys import register_target
    model = flame_reference_head(flame_reference_dir, n_expr=12)
    ch = make_arkit_character(model, MOUTH_KEYS, n_frames=60, warp=0.02)
    v, f, D = ch.vertices, ch.faces, ch.key_deltas
    names = ["viseme_aa"] + MOUTH_KEYS[1:] + ["jawOpen"]
    D = np.concatenate([D, np.zeros_like(D[:1])])
    reg = register_target(ch.source, ShapeKeyTarget(v, f, names, D), Correspondences.from_vertices(
        ch.source, ShapeKeyTarget(v, f, names, D), ch.flame_landmarks, ch.target_landmarks))
    R, s = reg.similarity.R, reg.similarity.scale
    if teeth:
        from flamecap.retarget.drive import character_lips
        u, lo, _ = character_lips(ch.source, ShapeKeyTarget(v, f, names, D), reg, names, _flame_lips(ch))
        seam = 0.5 * (v[u] + v[lo]) - 0.012 * s * R[:, 2]                # 12 mm behind the lips
        gx, gy = np.meshgrid(np.linspace(-0.015, 0.015, 7), np.linspace(0.0005, 0.008, 4))
        rows = []
        for sign in (1, -1):                                           # upper row above the seam, lower below
            pts = seam + s * (gx.reshape(-1, 1) * R[:, 0] + sign * gy.reshape(-1, 1) * R[:, 1])
            rows.append(pts)
        n0 = len(v)
        quad = np.array([[0, 1, 8], [0, 8, 7]])
        grid = np.array([quad + i + 7 * j for j in range(3) for i in range(6)]).reshape(-1, 3)
        v = np.concatenate([v, rows[0], rows[1]])
        f = np.concatenate([f, grid + n0, grid + n0 + 28])
        drop = D[0, lo]                                                # the lower teeth go down with the jaw
        D = np.concatenate([D, np.zeros((len(D), 56, 3))], axis=1)
        D[0, n0 + 28:] = drop
    return ch, ShapeKeyTarget(v, f, names, D, name="stylised")


def _flame_lips(ch):
    from flamecap.retarget.drive import flame_mouth_pair
    from flamecap.retarget.features import feature_basis
    return flame_mouth_pair(ch.source, feature_basis(ch.source))


def _lip_gap(points, deltas, weights, pair):
    d = np.einsum("tk,knc->tnc", weights, deltas[:, list(pair)])
    p = points[list(pair)]
    return np.linalg.norm(p[0] + d[:, 0] - p[1] - d[:, 1], axis=1) - np.linalg.norm(p[0] - p[1])


def test_lips_are_found_in_front_of_the_teeth(flame_reference_dir):
    """The lip pair is the visible lips' seam on the midline, not the teeth right behind them (which touch
    more closely and part as much), and the key that opens it is the viseme when jawOpen is empty."""
    from flamecap.retarget.drive import character_lips
    from flamecap.retarget.shapekeys import register_target
    ch, tgt = _mouth_character(flame_reference_dir, teeth=True)
    reg = register_target(ch.source, tgt, Correspondences.from_vertices(ch.source, tgt, ch.flame_landmarks,
                                                                        ch.target_landmarks))
    u, lo, key = character_lips(ch.source, tgt, reg, tgt.key_names, _flame_lips(ch))
    assert key == "viseme_aa"
    assert max(u, lo) < len(ch.vertices), "a tooth was taken for a lip"
    up = reg.similarity.R[:, 1]
    assert (tgt.vertices[u] - tgt.vertices[lo]) @ up >= 0                   # upper above lower
    assert (tgt.key_deltas[0, u] - tgt.key_deltas[0, lo]) @ up > 0.5 * np.abs(tgt.key_deltas[0]).max()


def test_mouth_opens_when_both_lips_bind_to_one_flame_point(flame_reference_dir):
    """On stylised heads both lips can bind to one point of the registered FLAME surface: the carried
    deformation then keeps them together and the solve closes the mouth with keys that press the lips
    (mouthClose, visemes). The lip-gap row keeps the character's opening to the source's (amplitude within
    0.8-1.25)."""
    import flamecap.retarget.shapekeys as sk
    from flamecap.retarget.drive import character_lips, flame_mouth_pair, source_opening
    from flamecap.retarget.features import feature_basis, frame_features
    from flamecap.retarget.calibrate import face_size
    ch, tgt = _mouth_character(flame_reference_dir, teeth=False)
    corr = Correspondences.from_vertices(ch.source, tgt, ch.flame_landmarks, ch.target_landmarks)
    reg = sk.register_target(ch.source, tgt, corr)
    u, lo, _ = character_lips(ch.source, tgt, reg, tgt.key_names, _flame_lips(ch))
    near = np.linalg.norm(tgt.vertices - 0.5 * (tgt.vertices[u] + tgt.vertices[lo]), axis=1) < 0.01 * ch.scale
    reg.face[near], reg.bary[near] = reg.face[u], reg.bary[u]               # both lips on the upper lip's point
    close = np.where(near[:, None], -tgt.key_deltas[0], 0.0)               # presses the lips back together
    tgt = ShapeKeyTarget(tgt.vertices, tgt.faces, tgt.key_names + ["mouthClose"],
                         np.concatenate([tgt.key_deltas, close[None]]), name=tgt.name)
    phi = feature_basis(ch.source)
    src = source_opening(ch.source, phi, frame_features(ch.source), flame_mouth_pair(ch.source, phi))
    amps = {}
    for weight in (0.0, sk.MOUTH_GAP_WEIGHT):
        old, sk.MOUTH_GAP_WEIGHT = sk.MOUTH_GAP_WEIGHT, weight
        try:
            anim = sk.retarget_shape_keys(ch.source, tgt, corr, registration=reg)
        finally:
            sk.MOUTH_GAP_WEIGHT = old
        idx = [tgt.key_names.index(n) for n in anim.names]
        gap = _lip_gap(tgt.vertices, tgt.key_deltas[idx], anim.weights, (u, lo)) / (reg.similarity.scale * face_size(ch.source))
        amps[weight] = (np.ptp(np.percentile(gap, [5, 95])) / np.ptp(np.percentile(src, [5, 95])),
                        np.corrcoef(gap, src)[0, 1])
    print("mouth amplitude, correlation without / with the lip-gap row:", amps)
    assert amps[0.0][0] < 0.6                          # the failure this guards against
    amp, corr_ = amps[sk.MOUTH_GAP_WEIGHT]
    assert 0.8 <= amp <= 1.25 and corr_ > 0.9
