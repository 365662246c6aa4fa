"""Retargeting core: ARKit names, identity swap, registration, shape-key solve (known weights), bones, CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest

from flamecap.cli import main
from flamecap.contract.conventions import axis_angle_to_matrix
from flamecap.contract.result import load_result, save_result
from flamecap.errors import InputError, NoFaceError
from flamecap.flame.head import neutral_vertices
from flamecap.retarget import (ARKIT_NAMES, ChannelMap, Correspondences, ShapeKeyTarget, SolveConfig,
                               canonical_arkit_name, register_target, retarget_shape_keys, swap_identity)
from flamecap.retarget.bones import BoneMap, axis_map_matrix, bone_rotations, matrices_to_quaternions
from flamecap.retarget.deform import head_lbs
from flamecap.retarget.io import load_animation, save_character
from flamecap.retarget.registration import closest_points, robust_similarity, umeyama
from flamecap.retarget.synthetic import make_arkit_character, make_result, tiny_head_model

KEYS = ["eyeBlinkLeft", "eyeBlinkRight", "mouthSmileLeft", "mouthSmileRight", "browInnerUp", "jawForward",
        "mouthFunnel", "cheekPuff", "noseSneerLeft", "mouthPucker"]


@pytest.fixture(scope="module")
def model():
    return tiny_head_model()


def test_arkit_names_and_variants():
    assert len(ARKIT_NAMES) == 52 and ARKIT_NAMES[0] == "eyeBlinkLeft" and ARKIT_NAMES[-1] == "tongueOut"
    for variant in ("EyeBlink_L", "eyeBlink_L", "EyeBlinkLeft", "eye_blink_left", "blendShape1.eyeBlinkLeft",
                    "eyeBlink.L", "EYEBLINKLEFT"):
        assert canonical_arkit_name(variant) == "eyeBlinkLeft", variant
    assert canonical_arkit_name("mouthSmile_R") == "mouthSmileRight"
    assert canonical_arkit_name("JawOpen") == "jawOpen"
    assert canonical_arkit_name("Basis") is None and canonical_arkit_name("smile") is None
    cm = ChannelMap.from_dict({"channels": {"jawOpen": {"gain": 2.0, "upper": 0.8}}})
    w = cm.apply(["JawOpen", "eyeBlink_L"], np.array([[0.3, 0.5], [0.6, 1.2]]))
    np.testing.assert_allclose(w, [[0.6, 0.5], [0.8, 1.0]])
    with pytest.raises(InputError):
        ChannelMap.from_dict({"channels": {"jawOpen": {"gian": 1}}})


def test_numpy_lbs_matches_torch_layer(model):
    torch = pytest.importorskip("torch")
    from flamecap.flame.layer import FlameLayer, FlameParams
    rng = np.random.default_rng(0)
    T = 3
    p = dict(expr=rng.normal(size=(T, model.n_expr)), jaw_pose=rng.normal(size=(T, 3)) * 0.2,
             neck_pose=rng.normal(size=(T, 3)) * 0.2, eye_pose=rng.normal(size=(T, 6)) * 0.2,
             global_rot=rng.normal(size=(T, 3)) * 0.2, eyelids=rng.uniform(size=(T, 2)))
    layer = FlameLayer(model, dtype=torch.float64)
    # without expression / eyelids the joints are the same: exact
    p0 = dict(p, expr=np.zeros_like(p["expr"]), eyelids=np.zeros_like(p["eyelids"]))
    res0 = make_result(model, np.zeros(model.n_shape), **p0, transl=np.zeros((T, 3)))
    out0 = layer(FlameParams(**{k: torch.as_tensor(v) for k, v in p0.items()})).vertices.numpy()
    assert np.max(np.abs(head_lbs(res0, neck=True, global_pose=True) - out0)) < 1e-7  # float32 storage
    # with expression/eyelids FLAME re-regresses the joints, the result's head (and the scene rig) keeps them fixed
    res = make_result(model, np.zeros(model.n_shape), **p, transl=np.zeros((T, 3)))
    out = layer(FlameParams(**{k: torch.as_tensor(v) for k, v in p.items()})).vertices.numpy()
    assert np.max(np.abs(head_lbs(res, neck=True, global_pose=True) - out)) < 2e-3


def test_identity_swap_keeps_target_shape_exactly(model):
    rng = np.random.default_rng(3)
    T = 6
    src = make_result(model, rng.normal(size=model.n_shape), expr=rng.normal(size=(T, model.n_expr)),
                      jaw_pose=rng.normal(size=(T, 3)) * 0.1, neck_pose=rng.normal(size=(T, 3)) * 0.1)
    src.arrays["vertex_offsets"] = rng.normal(size=(model.n_vertices, 3)).astype(np.float32) * 1e-3
    tshape = rng.normal(size=model.n_shape)
    out = swap_identity(src, tshape, model=model)
    np.testing.assert_array_equal(out["head_vertices"], neutral_vertices(model, tshape).astype(np.float32))
    assert "vertex_offsets" not in out and np.allclose(out["shape"], tshape)
    for k in ("expr", "jaw_pose", "neck_pose", "eye_pose", "global_rot", "transl"):
        np.testing.assert_array_equal(out[k], src[k])
    # zero motion on the swapped head reproduces the target's neutral exactly
    zero = make_result(model, tshape, n_frames=1)
    np.testing.assert_allclose(head_lbs(zero)[0], neutral_vertices(model, tshape), atol=1e-6)
    # from another result
    other = make_result(model, tshape, n_frames=2)
    out2 = swap_identity(src, target_result=other)
    np.testing.assert_array_equal(out2["head_vertices"], other["head_vertices"])
    np.testing.assert_array_equal(out2["head_joints"], other["head_joints"])
    with pytest.raises(InputError):
        swap_identity(src, np.zeros(model.n_shape + 5), model=model)
    with pytest.raises(InputError):
        swap_identity(src)


def test_umeyama_and_closest_points():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 3))
    R = axis_angle_to_matrix(np.array([0.3, -0.5, 0.2]))
    sim = umeyama(x, 2.5 * x @ R.T + [1, 2, 3])
    assert abs(sim.scale - 2.5) < 1e-9 and np.allclose(sim.R, R) and np.allclose(sim.t, [1, 2, 3])
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0.0]])
    cp = closest_points(np.array([[0.2, 0.2, 1.0], [2.0, -1.0, 0.0]]), v, np.array([[0, 1, 2]]))
    np.testing.assert_allclose(cp.points, [[0.2, 0.2, 0], [1, 0, 0]], atol=1e-12)
    np.testing.assert_allclose(cp.distance, [1.0, np.sqrt(2)], atol=1e-12)


def _target(ch):
    return ShapeKeyTarget(ch.vertices, ch.faces, ch.key_names, ch.key_deltas, name="character")


def test_retarget_recovers_known_weights(model):
    """A subdivided, scaled, rotated, moved and warped head with ARKit keys made from known FLAME
    deformations; the tracked sequence realises known weights; the retarget must recover them."""
    ch = make_arkit_character(model, KEYS, n_frames=40, warp=0.03)
    tgt = _target(ch)
    corr = Correspondences.from_vertices(ch.source, tgt, ch.flame_landmarks, ch.target_landmarks)
    anim = retarget_shape_keys(ch.source, tgt, corr, solve=SolveConfig(smooth=0.0))
    assert anim.names == KEYS
    err = np.abs(anim.weights - ch.weights)
    print(f"warped character: weight error mean {err.mean():.4f} max {err.max():.4f}; registration "
          f"scale {anim.registration.similarity.scale:.4f} (true {ch.scale})")
    assert err.mean() < 0.03 and err.max() < 0.15
    assert abs(anim.registration.similarity.scale - ch.scale) / ch.scale < 0.05
    assert np.all(anim.weights >= 0) and np.all(anim.weights <= 1)
    # an unwarped copy (different topology, similarity only) is recovered almost exactly
    ch0 = make_arkit_character(model, KEYS, n_frames=20, warp=0.0)
    t0 = _target(ch0)
    a0 = retarget_shape_keys(ch0.source, t0, Correspondences.from_vertices(ch0.source, t0, ch0.flame_landmarks,
                                                                           ch0.target_landmarks),
                             solve=SolveConfig(smooth=0.0))
    err0 = np.abs(a0.weights - ch0.weights)
    print(f"similarity-only character: weight error max {err0.max():.5f}")
    assert err0.max() < 0.01
    # temporal smoothness: smoother, still close
    a_s = retarget_shape_keys(ch0.source, t0, registration=a0.registration, solve=SolveConfig(smooth=0.02))
    assert np.abs(np.diff(a_s.weights, 2, axis=0)).mean() < np.abs(np.diff(a0.weights, 2, axis=0)).mean()
    assert np.abs(a_s.weights - ch0.weights).mean() < 0.05
    # jawOpen (a rotation in FLAME, linear in the character) is recovered approximately
    chj = make_arkit_character(model, ["jawOpen"] + KEYS[:4], n_frames=20, warp=0.0)
    tj = _target(chj)
    aj = retarget_shape_keys(chj.source, tj, Correspondences.from_vertices(chj.source, tj, chj.flame_landmarks,
                                                                           chj.target_landmarks))
    errj = np.abs(aj.weights - chj.weights)
    print(f"with jawOpen: weight error mean {errj.mean():.4f} max {errj.max():.4f}")
    assert errj[:, 0].max() < 0.1
    # jaw split from the closed-jaw expressions + per-key smoothing (was mean 0.05, max 0.33)
    assert errj.mean() < 0.015 and errj.max() < 0.06


def test_not_a_face_and_no_shape_keys(model):
    import trimesh
    ch = make_arkit_character(model, KEYS[:3], n_frames=4, warp=0.0)
    with pytest.raises(InputError, match="no shape keys"):
        ShapeKeyTarget(ch.vertices, ch.faces, [], np.zeros((0, len(ch.vertices), 3)), name="Cube")
    torus = trimesh.creation.torus(major_radius=0.3, minor_radius=0.1)
    tv, tf = np.asarray(torus.vertices), np.asarray(torus.faces)
    tgt = ShapeKeyTarget(tv, tf, ["jawOpen"], np.tile([0, 0, 0.01], (1, len(tv), 1)), name="Torus")
    rng = np.random.default_rng(0)
    corr = Correspondences.from_vertices(ch.source, tgt, ch.flame_landmarks,
                                         rng.choice(len(tv), len(ch.flame_landmarks), replace=False))
    with pytest.raises(NoFaceError, match="does not look like a face") as ei:
        register_target(ch.source, tgt, corr)
    assert "\n" not in str(ei.value)
    # keys that do not move anything
    t0 = ShapeKeyTarget(ch.vertices, ch.faces, ["jawOpen"], np.zeros((1, len(ch.vertices), 3)), name="Flat")
    c0 = Correspondences.from_vertices(ch.source, t0, ch.flame_landmarks, ch.target_landmarks)
    with pytest.raises(InputError, match="moves its face"):
        retarget_shape_keys(ch.source, t0, c0)


def test_bone_rotations_axis_mapping():
    rv = np.array([[0.3, 0.0, 0.0], [0.0, 0.2, 0.0]])
    # FlameCap rig bones: rest = identity in Blender; FLAME x-rotation → Blender x, FLAME y → Blender z
    R = bone_rotations(rv)
    np.testing.assert_allclose(R[0], axis_angle_to_matrix(np.array([0.3, 0, 0])), atol=1e-12)
    np.testing.assert_allclose(R[1], axis_angle_to_matrix(np.array([0, 0, 0.2])), atol=1e-12)
    # a bone whose local axes are the Blender world axes rotated 90° about Z sees the x-rotation on its -y
    B = axis_angle_to_matrix(np.array([0, 0, np.pi / 2]))
    Rb = bone_rotations(rv[:1], bone_rest=B)
    np.testing.assert_allclose(Rb[0], axis_angle_to_matrix(np.array([0, -0.3, 0])), atol=1e-12)
    M = axis_map_matrix("-X,-Y,Z")
    np.testing.assert_allclose(bone_rotations(rv[:1], axis_map=M)[0], axis_angle_to_matrix(np.array([-0.3, 0, 0])),
                               atol=1e-12)
    q = matrices_to_quaternions(R)
    np.testing.assert_allclose(q[0], [np.cos(0.15), np.sin(0.15), 0, 0], atol=1e-12)
    assert BoneMap.preset("rigify").bones["jaw"] == "jaw_master"
    with pytest.raises(InputError):
        BoneMap.preset("rigify").resolve(["spine", "hips"])
    with pytest.raises(InputError):
        axis_map_matrix("X,X,Z")
    with pytest.raises(InputError, match="mirrors"):
        axis_map_matrix("-X,Y,Z")


def test_cli_identity_and_shapekeys(model, tmp_path, capsys):
    ch = make_arkit_character(model, KEYS[:6], n_frames=12, warp=0.0)
    save_result(tmp_path / "take.npz", ch.source)
    save_character(tmp_path / "char.npz", _target(ch), ch.flame_landmarks, ch.target_landmarks)
    rc = main(["retarget", "shapekeys", str(tmp_path / "take.npz"), "--target", str(tmp_path / "char.npz"),
               "-o", str(tmp_path / "anim.npz"), "--csv", str(tmp_path / "take.csv"), "--smooth", "0",
               "--progress", "jsonl"])
    assert rc == 0
    lines = [json.loads(ln) for ln in capsys.readouterr().out.splitlines() if ln.startswith("{")]
    assert lines[-1]["event"] == "done"
    anim = load_animation(tmp_path / "anim.npz")
    assert np.abs(anim.weights - ch.weights).max() < 0.01
    assert (tmp_path / "take.csv").read_text().startswith("Timecode,BlendShapeCount,EyeBlinkLeft,")
    # identity swap from another result
    other = make_result(model, np.ones(model.n_shape), n_frames=1)
    save_result(tmp_path / "other.npz", other)
    assert main(["retarget", "identity", str(tmp_path / "take.npz"), "--target-result", str(tmp_path / "other.npz"),
                 "-o", str(tmp_path / "swapped.npz")]) == 0
    sw = load_result(tmp_path / "swapped.npz")
    np.testing.assert_array_equal(sw["head_vertices"], other["head_vertices"])
    # bad inputs: one line, non-zero, no output
    rc = main(["retarget", "shapekeys", str(tmp_path / "take.npz"), "--target", str(tmp_path / "take.npz"),
               "-o", str(tmp_path / "bad.npz")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "not a FlameCap character file" in err[0]
    assert not (tmp_path / "bad.npz").exists()


def test_robust_similarity_ignores_stylised_regions_and_still_rejects_a_non_face():
    """A stylised face: most landmark pairs follow one similarity, a few (big anime eyes) are far off. The
    robust fit recovers the similarity from the rest; shuffled pairs (not a face) stay far off."""
    rng = np.random.default_rng(1)
    src = rng.normal(size=(140, 3))
    R = axis_angle_to_matrix(np.array([0.2, -0.4, 0.1]))
    dst = 1.7 * src @ R.T + np.array([0.3, -1.0, 2.0]) + 0.01 * rng.normal(size=src.shape)
    dst[:12] += rng.normal(size=(12, 3)) * 1.5                  # the stylised region
    sim, keep = robust_similarity(src, dst)
    assert abs(sim.scale - 1.7) < 0.01 and np.allclose(sim.R, R, atol=0.01)
    assert keep[12:].all() and not keep[:12].all()
    plain = umeyama(src, dst)
    assert abs(plain.scale - 1.7) > abs(sim.scale - 1.7)
    sh, _ = robust_similarity(src, dst[rng.permutation(len(dst))])
    assert sh.scale < 0.5                                      # no similarity explains shuffled pairs
