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
