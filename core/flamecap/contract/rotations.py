"""Rotation helpers shared by the core and the add-on (numpy only): quaternions, pose features, gaze angles
and invalid-frame filling. Axis-angle ↔ matrix live in :mod:`.conventions`."""
from __future__ import annotations

import numpy as np

from .conventions import axis_angle_to_matrix, matrix_to_axis_angle


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
