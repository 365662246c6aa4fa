"""Automatic FLAME ↔ character correspondences (render both neutral meshes, detect MediaPipe landmarks,
back-project) on real head meshes with known truth, then registration and the shape-key retarget on them.

The character is the same head model with another identity, in Blender axes and centimetres, rotated and
moved ("character space"), with its vertex order permuted so that correspondences are not trivial. Its
keys are the model's own expression components seen through that transform, so the true per-frame key
values are known, and so is the true position of every FLAME surface point on the character.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import cKDTree

from flamecap.contract.conventions import axis_angle_to_matrix, flame_to_blender_points
from flamecap.binding.mediapipe import CalibrationConfig
from flamecap.errors import InputError, NoFaceError
from flamecap.flame.head import neutral_vertices
from flamecap.retarget import ShapeKeyTarget, SolveConfig, register_target, retarget_shape_keys
from flamecap.retarget.deform import face_displacements
from flamecap.retarget.registration import closest_points, umeyama
from flamecap.retarget.shapekeys import _face_region, auto_correspondences
from flamecap.retarget.synthetic import make_result

# 6 renders instead of the default 30: enough views for a robust median, fast enough for CI
FAST = CalibrationConfig(yaws_deg=(-20.0, 0.0, 20.0), pitches_deg=(-8.0, 8.0), lights=((0.3, -0.4, -1.0),),
                         min_views=3)
# expression components (SEMANTIC_EXPRESSIONS order) → ARKit names the character's keys get; "lid0" is the
# left eyelid shape: eyeBlink keys close the eye, and the retarget drives them from the eye closure
KEYS = {0: "mouthSmile", 2: "mouthPucker", 5: "browInnerUp", 7: "cheekPuff", "lid0": "eyeBlinkLeft",
        12: "mouthFrown"}
CM_PER_M = 100.0


class Character:
    """A character built from ``model`` with identity ``shape`` (see module docstring)."""

    def __init__(self, model, shape, seed=0, n_frames=12, albedo=False):
        rng = np.random.default_rng(seed)
        self.R = axis_angle_to_matrix(np.array([0.05, -0.03, np.radians(10.0)]))   # Blender axes
        self.t = np.array([12.0, -30.0, 160.0])                                      # cm
        neutral = neutral_vertices(model, shape)
        self.neutral = neutral
        comps = list(KEYS)
        keyres = make_result(model, shape, **self.params(model, np.eye(len(comps))))
        deltas = np.stack([self.vec(d) for d in face_displacements(keyres)])
        self.perm = rng.permutation(len(neutral))
        inv = np.argsort(self.perm)
        albedo_v = np.asarray(model["vertex_albedo"])[self.perm] if albedo else None
        self.target = ShapeKeyTarget(self.point(neutral)[self.perm], inv[np.asarray(model.faces)],
                                     list(KEYS.values()), deltas[:, self.perm], name="Character", albedo=albedo_v)
        tt = np.linspace(0, 1, n_frames)[:, None]
        W = 0.5 + 0.5 * np.sin(2 * np.pi * (rng.uniform(0.5, 1.5, len(comps)) * tt + rng.uniform(0, 1, len(comps))))
        self.weights = np.clip(1.3 * W - 0.15, 0.0, 1.0)
        self.source = make_result(model, np.zeros(model.n_shape), **self.params(model, self.weights))

    @staticmethod
    def params(model, weights):
        """FLAME expression and eyelid parameters realising key ``weights`` (T, len(KEYS))."""
        expr = np.zeros((len(weights), model.n_expr))
        lids = np.zeros((len(weights), 2))
        for i, c in enumerate(KEYS):
            if c == "lid0":
                lids[:, 0] = weights[:, i]
            else:
                expr[:, c] = 2.0 * weights[:, i]
        return {"expr": expr, "eyelids": lids}

    def vec(self, d):
        return CM_PER_M * flame_to_blender_points(d) @ self.R.T

    def point(self, p):
        return self.vec(p) + self.t

    def true_points(self, result, flame_points):
        """Where FLAME surface points (result head frame) truly are on the character (cm)."""
        fv = np.asarray(result["head_vertices"], np.float64)
        ff = np.asarray(result["head_faces"], np.int64)
        cp = closest_points(flame_points, fv, ff)
        return self.point(np.einsum("nk,nkc->nc", cp.bary, self.neutral[ff[cp.face]]))


def _check(model, shape, flame_albedo=None, albedo=False, label=""):
    ch = Character(model, shape, albedo=albedo)
    corr = auto_correspondences(ch.source, ch.target, flame_albedo=flame_albedo, config=FAST)
    assert corr.source == "auto" and len(corr.flame_points) == len(corr.landmark_id) >= 150
    assert np.all(np.isfinite(corr.target_points))
    lm_err = np.linalg.norm(corr.target_points - ch.true_points(ch.source, corr.flame_points), axis=1) / CM_PER_M * 1e3
    reg = register_target(ch.source, ch.target, corr)
    region = _face_region(ch.source)
    all_err = np.linalg.norm(reg.registered - ch.point(ch.neutral), axis=1) / CM_PER_M * 1e3
    reg_err = all_err[region]
    # the face proper (within 1 cm of a detected landmark); ears and neck may slide along the surface
    fv = np.asarray(ch.source["head_vertices"], np.float64)
    near = cKDTree(corr.flame_points).query(fv)[0] < 0.01
    face_err = all_err[region & near]
    anim = retarget_shape_keys(ch.source, ch.target, registration=reg, solve=SolveConfig(smooth=0.0))
    w_err = np.abs(anim.weights - ch.weights)
    # the identity changes the head's size too: the reference scale is the best similarity over all vertices
    true_scale = umeyama(np.asarray(ch.source["head_vertices"], np.float64)[region], ch.point(ch.neutral)[region]).scale
    print(f"{label}: {len(corr.flame_points)} auto landmarks, landmark error mm mean {lm_err.mean():.2f} "
          f"median {np.median(lm_err):.2f} max {lm_err.max():.2f}; registration error (face) mm mean "
          f"{reg_err.mean():.2f} median {np.median(reg_err):.2f} p90 {np.percentile(reg_err, 90):.2f}, near the "
          f"landmarks mean {face_err.mean():.2f} p90 {np.percentile(face_err, 90):.2f}; scale "
          f"{reg.similarity.scale:.2f} (all-vertex similarity {true_scale:.2f}); key weight error mean {w_err.mean():.4f} "
          f"max {w_err.max():.4f}")
    assert abs(reg.similarity.scale - true_scale) / true_scale < 0.03
    assert np.median(lm_err) < 2.5 and np.percentile(lm_err, 90) < 5.0
    assert reg_err.mean() < 6.0 and np.median(reg_err) < 3.5
    assert face_err.mean() < 2.5 and np.percentile(face_err, 90) < 4.5
    assert anim.names == list(KEYS.values())
    assert w_err.mean() < 0.05 and w_err.max() < 0.3
    return ch, corr


def test_auto_correspondences_flame_topology_head(flame_reference_dir):
    from flamecap.flame.synthetic import flame_reference_head
    model = flame_reference_head(flame_reference_dir, n_expr=16)
    shape = np.random.default_rng(4).normal(size=model.n_shape)
    _check(model, shape, label="FLAME-topology head, other identity")


def test_auto_correspondences_synthetic_head_needs_albedo():
    from flamecap.flame.synthetic import make_synthetic_model
    model = make_synthetic_model(n_shape=20, n_expr=16)
    shape = np.random.default_rng(5).normal(size=model.n_shape)
    ch, _ = _check(model, shape, flame_albedo=model["vertex_albedo"], albedo=True, label="synthetic head")
    # wrong-sized colours: one-line input error before any rendering
    with pytest.raises(InputError, match="albedo has shape"):
        auto_correspondences(ch.source, ch.target, flame_albedo=np.ones((3, 3)), config=FAST)
    with pytest.raises(InputError, match="vertex colours"):
        ShapeKeyTarget(ch.target.vertices, ch.target.faces, ch.target.key_names, ch.target.key_deltas,
                       albedo=np.ones((4, 3)))


def test_auto_correspondences_not_a_face():
    """A torus is no face: a clear one-line NoFaceError naming it, no correspondences."""
    import trimesh
    from flamecap.flame.synthetic import make_synthetic_model
    model = make_synthetic_model(n_shape=20, n_expr=16)
    res = make_result(model, n_frames=1)
    torus = trimesh.creation.torus(major_radius=0.3, minor_radius=0.1)
    tv = np.asarray(torus.vertices)
    tgt = ShapeKeyTarget(tv, np.asarray(torus.faces), ["jawOpen"], np.full((1, len(tv), 3), 0.01), name="Torus")
    one_view = CalibrationConfig(yaws_deg=(0.0,), pitches_deg=(0.0,), lights=((0.3, -0.4, -1.0),), min_views=1)
    with pytest.raises(NoFaceError) as ei:
        auto_correspondences(res, tgt, flame_albedo=model["vertex_albedo"], config=one_view)
    assert "\n" not in str(ei.value) and "no face found on renders of 'Torus'" in str(ei.value)
