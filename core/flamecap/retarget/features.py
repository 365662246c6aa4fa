"""The face deformation as a linear function of per-frame FLAME features (numpy only).

``d ≈ Φ f`` with f = [expression (E), eyelids (2, when the head has eyelid shapes), R_jaw − I (9),
R_eye_l − I (9), R_eye_r − I (9)] (:func:`frame_features`) and Φ (V, 3, F) (:func:`feature_basis`). It is
the linearised deformation of :func:`.deform.face_displacements_linearised` (jaw apart from the closed-jaw
expressions): a vertex skinned to one rotating joint moves linearly in the entries of R − I, and so do
FLAME's pose correctives. Dropped: the joint rotating its own pose correctives and the eyes rotating
expression offsets (second order; the tests bound them). With Φ carried onto a character once per take,
each frame's solve needs only f — no skinning, no per-vertex work.
"""
from __future__ import annotations

import numpy as np

from ..contract.result import TrackingResult
from ..contract.rotations import fill_invalid, pose_features

# joints whose rotation the face features carry, with their index in the result's head joints and the
# offset of their block in FLAME's pose-corrective feature (joints 1..4, 9 entries each)
_ROT_JOINTS = (("jaw", 2, 9), ("eye_l", 3, 18), ("eye_r", 4, 27))


def has_eyelids(result: TrackingResult) -> bool:
    return "head_eyelid_dirs" in result and "eyelids" in result


def feature_names(result: TrackingResult) -> list[str]:
    E = result["expr"].shape[1]
    names = [f"expr{i}" for i in range(E)]
    if has_eyelids(result):
        names += ["eyelid_l", "eyelid_r"]
    for j, _, _ in _ROT_JOINTS:
        names += [f"{j}_R{a}{b}" for a in range(3) for b in range(3)]
    return names


def frame_features(result: TrackingResult) -> np.ndarray:
    """(T, F) features per frame; invalid frames are interpolated from their valid neighbours."""
    T = result.n_frames
    valid = np.asarray(result["valid"], bool)
    parts = [np.asarray(result["expr"], np.float64).reshape(T, -1)]
    if has_eyelids(result):
        parts.append(np.asarray(result["eyelids"], np.float64).reshape(T, 2))
    eye = np.asarray(result["eye_pose"], np.float64).reshape(T, 6)
    rot = {"jaw": np.asarray(result["jaw_pose"], np.float64).reshape(T, 3), "eye_l": eye[:, :3], "eye_r": eye[:, 3:]}
    f = np.concatenate(parts + [np.zeros((T, 27))], axis=1)
    f = fill_invalid(f, valid)
    off = f.shape[1] - 27
    for i, (j, _, _) in enumerate(_ROT_JOINTS):
        f[:, off + 9 * i: off + 9 * i + 9] = pose_features(fill_invalid(rot[j], valid))
    return f


def feature_basis(result: TrackingResult) -> np.ndarray:
    """Φ (V, 3, F) metres per unit feature, head rest frame."""
    v0 = np.asarray(result["head_vertices"], np.float64)
    V = v0.shape[0]
    W = np.asarray(result["head_weights"], np.float64)
    J = np.asarray(result["head_joints"], np.float64)
    P = np.asarray(result["head_posedirs"], np.float64)
    E = result["expr"].shape[1]
    blocks = [np.asarray(result["head_exprdirs"], np.float64)[:, :, :E]]
    if has_eyelids(result):
        blocks.append(np.asarray(result["head_eyelid_dirs"], np.float64))
    for _, ji, po in _ROT_JOINTS:
        # (R − I)(v − J) weighted by the joint's skinning weight: entry (a, b) moves coordinate a by (v − J)_b
        rel = W[:, ji, None] * (v0 - J[ji])                          # (V, 3)
        blk = np.zeros((V, 3, 3, 3))
        for a in range(3):
            blk[:, a, a, :] = rel
        blk = blk.reshape(V, 3, 9)
        if P.shape[2] >= po + 9:
            blk = blk + P[:, :, po:po + 9]
        blocks.append(blk)
    return np.concatenate(blocks, axis=2)
