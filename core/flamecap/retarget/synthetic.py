"""Procedural heads and characters for retargeting tests and demos (numpy + trimesh; deterministic).

- :func:`tiny_head_model`: a small FLAME-format model (ellipsoid icosphere, local expression bumps, a jaw,
  eyes, eyelids) with the real model's array layout.
- :func:`make_result`: a valid :class:`TrackingResult` for that model from per-frame parameters.
- :func:`make_arkit_character`: a *different* mesh (subdivided, scaled, rotated, moved and gently warped
  copy of a head) carrying ARKit-named shape keys made from known FLAME deformations, plus the per-frame
  FLAME parameters that realise known key weights — ground truth for the shape-key retarget.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..contract.conventions import axis_angle_to_matrix
from ..contract.model_format import FlameModelData, model_meta
from ..contract.result import TrackingResult, default_meta
from ..flame.head import head_arrays


def tiny_head_model(subdivisions: int = 3, n_shape: int = 8, n_expr: int = 12, seed: int = 0) -> FlameModelData:
    """A FLAME-format model on an ellipsoid (about 16 × 22 × 18 cm), V = 642 at subdivisions=3."""
    import trimesh

    rng = np.random.default_rng(seed)
    ico = trimesh.creation.icosphere(subdivisions=subdivisions)
    u = np.asarray(ico.vertices, dtype=np.float64)
    faces = np.asarray(ico.faces, dtype=np.int64)
    v = u * np.array([0.08, 0.11, 0.09])
    v[:, 2] += 0.015 * np.exp(-((u[:, 0] / 0.2) ** 2 + ((u[:, 1] + 0.05) / 0.25) ** 2)) * (u[:, 2] > 0)  # a nose
    V = v.shape[0]

    def bump(center, width):
        d2 = np.sum((u - center) ** 2, axis=1)
        return np.exp(-d2 / (2 * width ** 2))

    shapedirs = np.zeros((V, 3, n_shape))
    for k in range(n_shape):
        a = rng.normal(size=(3, 3)) * 0.004
        shapedirs[:, :, k] = u @ a.T * np.abs(u)  # smooth, identity-like global changes
    exprdirs = np.zeros((V, 3, n_expr))
    front = np.array([[np.cos(t) * 0.6, s, np.sqrt(max(1 - 0.36 - s * s, 0.05))]
                      for t, s in zip(np.linspace(0.2, np.pi - 0.2, n_expr), np.linspace(-0.6, 0.5, n_expr))])
    for k in range(n_expr):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        exprdirs[:, :, k] = bump(front[k], 0.3)[:, None] * direction * 0.006
    eye_centres = np.array([[0.35, 0.3, 0.88], [-0.35, 0.3, 0.88]])
    eyelid_dirs = np.stack([bump(c, 0.15)[:, None] * np.array([0.0, -0.006, 0.0]) for c in eye_centres], axis=2)
    posedirs = rng.normal(size=(V, 3, 36)) * 1e-4
    joints = np.array([[0.0, -0.09, -0.01], [0.0, -0.06, -0.01], [0.0, -0.02, 0.01],
                       eye_centres[0] * [0.08, 0.11, 0.07], eye_centres[1] * [0.08, 0.11, 0.07]])
    J_reg = np.zeros((5, V))
    for j in range(5):
        near = np.argsort(np.sum((v - joints[j]) ** 2, axis=1))[:6]
        coef, *_ = np.linalg.lstsq(v[near].T, joints[j], rcond=None)  # exact combination of 6 vertices
        J_reg[j, near] = coef
    W = np.zeros((V, 5))
    jaw_w = 1.0 / (1.0 + np.exp((u[:, 1] + 0.25) / 0.08)) * (u[:, 2] > -0.2)
    eye_w = [np.clip(1.0 - np.sum((u - c) ** 2, 1) / 0.02, 0, 1) for c in eye_centres]
    W[:, 2] = jaw_w
    W[:, 3], W[:, 4] = eye_w
    W[:, 1] = 1.0 - W[:, 2:].sum(1)
    W = np.clip(W, 0, 1)
    W /= W.sum(1, keepdims=True)
    arrays = {"v_template": v, "faces": faces, "shapedirs": shapedirs, "exprdirs": exprdirs,
              "posedirs": posedirs, "J_regressor": J_reg, "weights": W,
              "parents": np.array([-1, 0, 1, 1, 1], dtype=np.int64), "eyelid_dirs": eyelid_dirs}
    return FlameModelData(arrays=arrays, meta=model_meta("synthetic-tiny-head", None))


def make_result(model: FlameModelData, shape: np.ndarray | None = None, *, expr: np.ndarray | None = None,
                jaw_pose=None, neck_pose=None, eye_pose=None, global_rot=None, transl=None, eyelids=None,
                n_frames: int | None = None, fps: float = 30.0) -> TrackingResult:
    """A valid result for ``model`` from per-frame parameters (missing ones are zero)."""
    given = [x for x in (expr, jaw_pose, neck_pose, eye_pose, global_rot, transl, eyelids) if x is not None]
    T = n_frames or (np.asarray(given[0]).shape[0] if given else 1)
    shape = np.zeros(model.n_shape) if shape is None else np.asarray(shape, dtype=np.float64)
    E = model.n_expr if expr is None else np.asarray(expr).shape[1]

    def arr(x, dim):
        return np.zeros((T, dim), np.float32) if x is None else np.asarray(x, np.float32).reshape(T, dim)

    tr = arr(transl, 3)
    if transl is None:
        tr[:, 2] = -0.6
    arrays = {"expr": arr(expr, E), "jaw_pose": arr(jaw_pose, 3), "neck_pose": arr(neck_pose, 3),
              "eye_pose": arr(eye_pose, 6), "global_rot": arr(global_rot, 3), "transl": tr,
              "valid": np.ones(T, bool), "landmark_residual_px": np.zeros(T, np.float32),
              "time_s": (np.arange(T) / fps).astype(np.float64), "frame_index": np.arange(T, dtype=np.int64),
              "shape": shape.astype(np.float32), "K": np.array([[800.0, 0, 320], [0, 800, 240], [0, 0, 1]]),
              "cam_R": np.diag([1.0, -1.0, -1.0]), "cam_t": np.zeros(3), "image_size": np.array([640, 480])}
    if "eyelid_dirs" in model:
        arrays["eyelids"] = arr(eyelids, 2)
    arrays.update(head_arrays(model, shape, E))
    meta = default_meta(fps, {"path": "synthetic", "kind": "synthetic", "n_frames": T},
                        {"release": model.release, "topology_hash": model.topology,
                         "n_vertices": model.n_vertices})
    return TrackingResult(arrays=arrays, meta=meta)


def midpoint_subdivide(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray, sp.csr_matrix]:
    """One 1→4 midpoint subdivision. Returns new vertices (V', 3), faces (4F, 3) and the sparse
    interpolation ``P`` (V', V) with ``new = P @ old`` (old vertices keep their indices)."""
    V = vertices.shape[0]
    edges = np.sort(np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]]), axis=1)
    uniq, inv = np.unique(edges, axis=0, return_inverse=True)
    inv = inv.reshape(-1)
    F = faces.shape[0]
    mids = V + inv.reshape(3, F).T                                  # (F, 3): mid of edges 01, 12, 20
    a, b, c = faces.T
    m01, m12, m20 = mids.T
    new_faces = np.concatenate([np.stack([a, m01, m20], 1), np.stack([m01, b, m12], 1),
                                np.stack([m20, m12, c], 1), np.stack([m01, m12, m20], 1)])
    rows = np.concatenate([np.arange(V), np.repeat(np.arange(V, V + len(uniq)), 2)])
    cols = np.concatenate([np.arange(V), uniq.reshape(-1)])
    vals = np.concatenate([np.ones(V), np.full(2 * len(uniq), 0.5)])
    P = sp.csr_matrix((vals, (rows, cols)), shape=(V + len(uniq), V))
    return P @ vertices, new_faces, P


# What each ARKit key means on the synthetic FLAME head: (expr component, jaw x rotation rad, eyelid index)
_KEY_RECIPES = {
    "jawOpen": ("jaw", 0.25), "eyeBlinkLeft": ("lid", 0), "eyeBlinkRight": ("lid", 1),
}


@dataclass
class SyntheticCharacter:
    """A procedural shape-key character and the ground truth to check a retarget against.

    vertices (N, 3) neutral in the character's own frame/units; faces (M, 3); key_names (K,);
    key_deltas (K, N, 3); weights (T, K) the known per-frame key values; source: the tracked FLAME
    result whose motion realises ``weights``; flame_landmarks / target_landmarks: corresponding vertex
    indices on the FLAME head and on the character; scale: character units per metre."""

    vertices: np.ndarray
    faces: np.ndarray
    key_names: list[str]
    key_deltas: np.ndarray
    weights: np.ndarray
    source: TrackingResult
    flame_landmarks: np.ndarray
    target_landmarks: np.ndarray
    scale: float


def make_arkit_character(model: FlameModelData, key_names: list[str], n_frames: int = 40, *,
                         scale: float = 1.7, yaw_deg: float = 12.0, warp: float = 0.06,
                         identity: np.ndarray | None = None, seed: int = 1) -> SyntheticCharacter:
    """Build the character and a tracked sequence whose FLAME motion realises known key weights.

    Key k is the (similarity-mapped, subdivision-interpolated) FLAME deformation of a recipe: "jawOpen" a
    0.25 rad jaw opening, "eyeBlink*" an eyelid closing, every other name one expression component (×2).
    Weights are smooth random curves in [0, 1]. The neutral mesh is further warped by a smooth field, so
    the registration has real non-rigid work to do."""
    from .deform import face_displacements

    rng = np.random.default_rng(seed)
    shape = identity if identity is not None else rng.normal(size=model.n_shape) * 0.8
    E = model.n_expr
    recipes = []
    expr_k = 0
    for name in key_names:
        if name in _KEY_RECIPES:
            recipes.append(_KEY_RECIPES[name])
        else:
            recipes.append(("expr", expr_k % E))
            expr_k += 1
    K = len(key_names)
    # one result with a frame per key recipe → key deformations
    expr = np.zeros((K, E))
    jaw = np.zeros((K, 3))
    lids = np.zeros((K, 2))
    for k, (kind, val) in enumerate(recipes):
        if kind == "expr":
            expr[k, val] = 2.0
        elif kind == "jaw":
            jaw[k, 0] = val
        else:
            lids[k, val] = 1.0
    keyres = make_result(model, shape, expr=expr, jaw_pose=jaw, eyelids=lids)
    D = face_displacements(keyres)                                  # (K, V, 3)
    base = np.asarray(keyres["head_vertices"], dtype=np.float64)
    sub_v, sub_f, P = midpoint_subdivide(base, np.asarray(model.faces))
    R = axis_angle_to_matrix(np.array([0.0, np.radians(yaw_deg), 0.0]))
    t = np.array([0.3, 1.5, -0.2])
    ext = np.ptp(sub_v, axis=0)

    def warp_fn(x):
        return x + warp * ext * np.sin(2.0 * x[:, [1, 2, 0]] / ext)

    warped = warp_fn(sub_v)
    verts = scale * warped @ R.T + t
    # the character's keys are the same FLAME deformations seen through the character's warp
    PD = np.einsum("nv,kvc->knc", P.toarray(), D)
    deltas = np.stack([scale * (warp_fn(sub_v + PD[k]) - warped) @ R.T for k in range(K)])
    # smooth random weights in [0, 1]
    tt = np.linspace(0, 1, n_frames)[:, None]
    W = 0.5 + 0.5 * np.sin(2 * np.pi * (rng.uniform(0.5, 2.0, K) * tt + rng.uniform(0, 1, K)))
    W = np.clip(1.4 * W - 0.3, 0.0, 1.0)
    seq_expr = np.zeros((n_frames, E))
    seq_jaw = np.zeros((n_frames, 3))
    seq_lids = np.zeros((n_frames, 2))
    for k, (kind, val) in enumerate(recipes):
        if kind == "expr":
            seq_expr[:, val] += 2.0 * W[:, k]
        elif kind == "jaw":
            seq_jaw[:, 0] += val * W[:, k]
        else:
            seq_lids[:, val] += W[:, k]
    src = make_result(model, shape, expr=seq_expr, jaw_pose=seq_jaw, eyelids=seq_lids,
                      neck_pose=0.1 * np.sin(np.linspace(0, 3, n_frames))[:, None] * [[0.0, 1.0, 0.0]])
    front = np.nonzero(base[:, 2] > np.percentile(base[:, 2], 55))[0]
    lmk = front[np.linspace(0, front.size - 1, 40).astype(int)]
    return SyntheticCharacter(vertices=verts, faces=sub_f, key_names=list(key_names), key_deltas=deltas,
                              weights=W, source=src, flame_landmarks=lmk, target_landmarks=lmk.copy(),
                              scale=scale)
