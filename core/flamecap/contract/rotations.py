"""Rotation helpers shared by the core and the add-on (numpy only): quaternions, pose features, gaze angles
and invalid-frame filling. Axis-angle ↔ matrix live in :mod:`.conventions`."""
from __future__ import annotations

import numpy as np

from .conventions import axis_angle_to_matrix, matrix_to_axis_angle
from .errors import ContractError


def matrix_to_quaternion(R: np.ndarray) -> np.ndarray:
    """(T, 3, 3) rotation matrices → (T, 4) unit quaternions (w, x, y, z), sign-continuous over T (no
    flips between frames, so interpolated keys take the short way)."""
    rv = matrix_to_axis_angle(np.asarray(R, dtype=np.float64))
    return axis_angle_to_quaternion(rv)


def axis_angle_to_quaternion(rotvec: np.ndarray) -> np.ndarray:
    """(T, 3) axis-angle radians → (T, 4) (w, x, y, z), sign-continuous over T."""
    rv = np.asarray(rotvec, dtype=np.float64).reshape(-1, 3)
    theta = np.linalg.norm(rv, axis=-1, keepdims=True)
    k = np.where(theta < 1e-12, 0.5, np.sin(0.5 * theta) / np.where(theta < 1e-12, 1.0, theta))
    q = np.concatenate([np.cos(0.5 * theta), rv * k], axis=-1)
    return continuous_quaternions(q)


def continuous_quaternions(q: np.ndarray) -> np.ndarray:
    """Flip signs so consecutive quaternions (T, 4) have a non-negative dot product."""
    q = np.asarray(q, dtype=np.float64).copy()
    if len(q) > 1:
        flip = np.cumsum(np.einsum("tc,tc->t", q[1:], q[:-1]) < 0) % 2 == 1
        q[1:][flip] *= -1.0
    return q


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    """(..., 4) (w, x, y, z) → (..., 3, 3); normalises first."""
    q = np.asarray(q, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = (q[..., i] for i in range(4))
    return np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
                     2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
                     2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
                    -1).reshape(q.shape[:-1] + (3, 3))


def pose_features(rotvec: np.ndarray) -> np.ndarray:
    """(T, 3) axis-angle → (T, 9) entries of R − I, row-major: FLAME's pose-corrective feature, and the
    quantity a skinned vertex moves linearly with."""
    R = axis_angle_to_matrix(np.asarray(rotvec, dtype=np.float64).reshape(-1, 3))
    return (R - np.eye(3)).reshape(-1, 9)


def gaze_angles(eye_rotvec: np.ndarray) -> np.ndarray:
    """(T, 3) eye axis-angle (FLAME axes: +Y up, +Z forward, +X the subject's left) → (T, 2) (yaw, pitch)
    radians of the gaze direction R·(0, 0, 1): yaw > 0 toward the subject's left, pitch > 0 downward."""
    g = axis_angle_to_matrix(np.asarray(eye_rotvec, dtype=np.float64).reshape(-1, 3))[:, :, 2]
    return np.stack([np.arctan2(g[:, 0], g[:, 2]), np.arctan2(-g[:, 1], np.hypot(g[:, 0], g[:, 2]))], axis=1)


def fill_invalid(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Per-frame values (T, ...) with invalid rows (``valid`` False, or non-finite) replaced by linear
    interpolation between the nearest valid frames (held at the ends); all invalid → zeros."""
    v = np.asarray(values, dtype=np.float64)
    T = v.shape[0]
    flat = v.reshape(T, -1).copy()
    ok = np.asarray(valid, bool).reshape(T) & np.all(np.isfinite(flat), axis=1)
    if ok.all():
        return flat.reshape(v.shape)
    if not ok.any():
        return np.zeros_like(v)
    t = np.arange(T)
    for c in range(flat.shape[1]):
        flat[:, c] = np.interp(t, t[ok], flat[ok, c])
    return flat.reshape(v.shape)


def axis_map_matrix(spec: str | None) -> np.ndarray:
    """"X,Y,Z" (identity), "-X,Z,Y" ... → signed permutation (3, 3): FLAME axis i goes to the target axis
    named in position i. Raises :class:`ContractError` for a malformed or mirroring map."""
    if not spec:
        return np.eye(3)
    parts = [p.strip().upper() for p in str(spec).split(",")]
    if len(parts) != 3 or sorted(p.lstrip("+-") for p in parts) != ["X", "Y", "Z"]:
        raise ContractError(f"axis map '{spec}' must use each of X, Y, Z once (with optional '-'), e.g. 'X,-Z,Y'")
    M = np.zeros((3, 3))
    for i, p in enumerate(parts):
        M["XYZ".index(p.lstrip("+-")), i] = -1.0 if p.startswith("-") else 1.0
    if np.linalg.det(M) < 0:
        raise ContractError(f"axis map '{spec}' mirrors (it is not a rotation); flip one more axis sign or swap two "
                            f"axes, e.g. '-X,-Y,Z' or 'X,-Z,Y'")
    return M


# FLAME channel → bone name per rig family (the add-on's bone picker starts from these)
BONE_PRESETS: dict[str, dict[str, str]] = {
    # FlameCap's own FLAME rig
    "flame": {"root": "root", "neck": "neck", "jaw": "jaw", "eye_l": "eye_l", "eye_r": "eye_r"},
    # Rigify generated rig: jaw control "jaw_master", head control "head"; eyes through their mechanism bones
    "rigify": {"neck": "head", "jaw": "jaw_master", "eye_l": "MCH-eye.L", "eye_r": "MCH-eye.R"},
    "mixamo": {"neck": "mixamorig:Head", "jaw": "mixamorig:Jaw", "eye_l": "mixamorig:LeftEye",
               "eye_r": "mixamorig:RightEye"},
    # Ready Player Me, VRM (after glTF import) and most game skeletons
    "head_neck": {"neck": "Head", "jaw": "Jaw", "eye_l": "LeftEye", "eye_r": "RightEye"},
}


def _bone_key(name: str) -> str:
    return "".join(ch for ch in name.lower().rsplit(":", 1)[-1] if ch.isalnum())


def resolve_bones(preset: dict[str, str], available) -> dict[str, str]:
    """The preset's bones found in ``available`` bone names: exact names first, then case, namespace
    ("mixamorig:", "J_Bip_C_") and separator variants ("left_eye", "Eye.L" for LeftEye)."""
    have = list(available)
    by_key: dict[str, str] = {}
    for b in have:
        k = _bone_key(b)
        by_key.setdefault(k, b)
        for pre in ("jbipc", "jbipl", "jbipr", "jadjl", "jadjr", "bip", "def", "org"):
            if k.startswith(pre) and len(k) > len(pre):
                by_key.setdefault(k[len(pre):], b)
        for side, word in (("l", "left"), ("r", "right")):
            if k.endswith(side) and len(k) > 1:
                by_key.setdefault(word + k[:-1], b)
    out = {}
    for ch, bone in preset.items():
        if bone in have:
            out[ch] = bone
        elif _bone_key(bone) in by_key:
            out[ch] = by_key[_bone_key(bone)]
    return out


def best_bone_preset(available) -> tuple[str, dict[str, str]]:
    """The preset that finds the most bones in ``available``, and its resolved mapping."""
    have = set(available)
    scored = [(len(resolve_bones(p, have)), sum(b in have for b in p.values()), name)
              for name, p in BONE_PRESETS.items() if name != "flame"]
    *_, name = max(scored)
    return name, resolve_bones(BONE_PRESETS[name], available)
