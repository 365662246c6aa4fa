"""Per-frame FLAME head meshes from a result file's baked head, in numpy (no torch).

Linear blend skinning with the result's ``head_*`` arrays: the same model the add-on builds in Blender
(rest joints fixed at ``head_joints``, i.e. not re-regressed per expression — the scene rig does the same).
"""
from __future__ import annotations

import numpy as np

from ..contract.conventions import axis_angle_to_matrix
from ..contract.result import TrackingResult
from ..errors import InputError

_CHUNK = 64


def _per_frame(result: TrackingResult, key: str, T: int, dim: int) -> np.ndarray:
    if key in result.arrays:
        a = np.asarray(result[key], dtype=np.float64).reshape(T, dim)
        return np.where(np.isfinite(a), a, 0.0)
    return np.zeros((T, dim))


def head_lbs(result: TrackingResult, frames: np.ndarray | None = None, *, expression: bool = True,
             jaw: bool = True, eyes: bool = True, eyelids: bool = True, neck: bool = False,
             global_pose: bool = False) -> np.ndarray:
    """Posed head vertices ``(T', V, 3)`` metres, FLAME world, for ``frames`` (indices, default all).

    The flags choose which parameters act; by default the face's own deformation (expression, jaw, eyes,
    eyelids) in the head's rest frame — what retargeting transfers. Invalid frames hold zeros → neutral."""
    T = result.n_frames
    idx = np.arange(T) if frames is None else np.asarray(frames, dtype=np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= T):
        raise InputError(f"frame index outside 0..{T - 1}")
    E = result["expr"].shape[1]
    valid = np.asarray(result["valid"], bool)[idx]
    expr = _per_frame(result, "expr", T, E)[idx] * expression
    jaw_p = _per_frame(result, "jaw_pose", T, 3)[idx] * jaw
    eye_p = _per_frame(result, "eye_pose", T, 6)[idx] * eyes
    neck_p = _per_frame(result, "neck_pose", T, 3)[idx] * neck
    glob = _per_frame(result, "global_rot", T, 3)[idx] * global_pose
    lids = _per_frame(result, "eyelids", T, 2)[idx] * eyelids
    for a in (expr, jaw_p, eye_p, neck_p, glob, lids):
        a[~valid] = 0.0
    pose = np.concatenate([glob, neck_p, jaw_p, eye_p], axis=1).reshape(-1, 5, 3)
    out = np.empty((idx.size, result["head_vertices"].shape[0], 3))
    for s in range(0, idx.size, _CHUNK):
        sl = slice(s, s + _CHUNK)
        out[sl] = lbs_numpy(result, expr[sl], pose[sl], lids[sl] if "head_eyelid_dirs" in result else None)
    return out


def lbs_numpy(result: TrackingResult, expr: np.ndarray, pose: np.ndarray,
              eyelids: np.ndarray | None = None) -> np.ndarray:
    """FLAME LBS: expr (B, E), pose (B, 5, 3) axis-angle per joint (root, neck, jaw, eye_l, eye_r),
    eyelids (B, 2) → vertices (B, V, 3)."""
    v0 = np.asarray(result["head_vertices"], dtype=np.float64)
    exprdirs = np.asarray(result["head_exprdirs"], dtype=np.float64)
    posedirs = np.asarray(result["head_posedirs"], dtype=np.float64)
    W = np.asarray(result["head_weights"], dtype=np.float64)
    J = np.asarray(result["head_joints"], dtype=np.float64)
    parents = np.asarray(result["head_parents"], dtype=np.int64)
    B = expr.shape[0]
    v = v0[None] + np.einsum("vck,bk->bvc", exprdirs, expr[:, : exprdirs.shape[2]])
    if eyelids is not None and "head_eyelid_dirs" in result:
        v = v + np.einsum("vck,bk->bvc", np.asarray(result["head_eyelid_dirs"], np.float64), eyelids)
    R = axis_angle_to_matrix(pose)                                     # (B, 5, 3, 3)
    feat = (R[:, 1:] - np.eye(3)).reshape(B, -1)
    v = v + np.einsum("vcp,bp->bvc", posedirs, feat)
    nj = J.shape[0]
    G = np.zeros((B, nj, 4, 4))
    for j in range(nj):
        local = np.zeros((B, 4, 4))
        local[:, :3, :3] = R[:, j]
        local[:, :3, 3] = J[j] - (J[parents[j]] if parents[j] >= 0 else 0.0)
        local[:, 3, 3] = 1.0
        G[:, j] = local if parents[j] < 0 else G[:, parents[j]] @ local
    A = G.copy()
    A[:, :, :3, 3] -= np.einsum("bjck,jk->bjc", G[:, :, :3, :3], J)
    T = np.einsum("vj,bjrc->bvrc", W, A)                               # (B, V, 4, 4)
    return np.einsum("bvrc,bvc->bvr", T[:, :, :3, :3], v) + T[:, :, :3, 3]


def face_displacements(result: TrackingResult, frames: np.ndarray | None = None) -> np.ndarray:
    """Per-frame deformation of the face in the head's rest frame: (T', V, 3) metres, posed (expression,
    jaw, eyes, eyelids; no neck / global pose) minus the neutral head."""
    return head_lbs(result, frames) - np.asarray(result["head_vertices"], dtype=np.float64)[None]


def face_displacements_linearised(result: TrackingResult, frames: np.ndarray | None = None) -> np.ndarray:
    """The face deformation as a linear blendshape rig would show it: (T', V, 3) metres, the jaw's own
    deformation (rotation + its pose correctives, no expression) plus the expression / eyes / eyelids
    deformation with the jaw closed.

    FLAME rotates the expression displacements of the lower face with the jaw (LBS applies after the
    blendshapes); a shape-key character adds its jawOpen key to expression keys defined on a closed jaw. The
    cross term (jaw rotation of the expression displacements) has no counterpart in such a rig: left in
    the solve's targets it is explained by the wrong keys (mouth keys compensating for the rotated lips), so
    retargeting onto shape keys transfers the two parts separately."""
    v0 = np.asarray(result["head_vertices"], dtype=np.float64)[None]
    jaw = head_lbs(result, frames, expression=False, jaw=True, eyes=False, eyelids=False)
    rest = head_lbs(result, frames, jaw=False)
    return (jaw - v0) + (rest - v0)
