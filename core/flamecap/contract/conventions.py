"""Units, axes and camera conventions, written once (numpy only).

- Units: metres. Rotations: axis-angle, radians.
- FLAME world: +X to the subject's left (viewer's right), +Y up, +Z out of the face toward the camera.
- Pixels: continuous image coordinates, (0, 0) the top-left corner of the top-left pixel, pixel centres
  at i + 0.5 (MediaPipe's normalised coordinates × size); image size is (width, height).
- Camera: OpenCV pinhole — x right, y down, z forward; intrinsics ``K`` in pixels; extrinsics world→camera
  ``x_cam = cam_R @ x_world + cam_t``. The fitter's camera is ``cam_R = diag(1, -1, -1)``, ``cam_t = 0``:
  at the world origin, looking down world −Z, so a head in front of it has negative ``transl[2]``.
- Blender world: +Z up, front view looks along +Y. FLAME → Blender is +90° about X: (x, y, z) → (x, −z, y).
- Blender camera object: looks down its local −Z with +Y up, i.e. OpenCV camera axes with y and z flipped.
"""
from __future__ import annotations

import numpy as np

# FLAME world → Blender world: +90° about X.
FLAME_TO_BLENDER = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
# OpenCV camera axes ↔ Blender/OpenGL camera axes (its own inverse).
OPENCV_TO_GL_CAMERA = np.diag([1.0, -1.0, -1.0])
# The fitter's fixed extrinsics (see module docstring).
DEFAULT_CAM_R = np.diag([1.0, -1.0, -1.0])
DEFAULT_CAM_T = np.zeros(3)
# Blender's default full-frame sensor width in millimetres.
SENSOR_WIDTH_MM = 36.0


def axis_angle_to_matrix(rotvec: np.ndarray) -> np.ndarray:
    """Rodrigues: axis-angle ``(..., 3)`` radians → rotation matrices ``(..., 3, 3)``."""
    r = np.asarray(rotvec, dtype=np.float64)
    theta = np.linalg.norm(r, axis=-1, keepdims=True)
    small = theta < 1e-12
    axis = np.where(small, 0.0, r / np.where(small, 1.0, theta))
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    zero = np.zeros_like(x)
    kmat = np.stack([zero, -z, y, z, zero, -x, -y, x, zero], axis=-1).reshape(r.shape[:-1] + (3, 3))
    s = np.sin(theta)[..., None]
    c = np.cos(theta)[..., None]
    eye = np.broadcast_to(np.eye(3), kmat.shape)
    return eye + s * kmat + (1.0 - c) * (kmat @ kmat)


def matrix_to_axis_angle(mat: np.ndarray) -> np.ndarray:
    """Rotation matrices ``(..., 3, 3)`` → axis-angle ``(..., 3)``, robust near 0 and π."""
    m = np.asarray(mat, dtype=np.float64)
    # via quaternion (Shepperd) for stability
    tr = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    q = np.stack([
        1.0 + tr,
        1.0 + m[..., 0, 0] - m[..., 1, 1] - m[..., 2, 2],
        1.0 - m[..., 0, 0] + m[..., 1, 1] - m[..., 2, 2],
        1.0 - m[..., 0, 0] - m[..., 1, 1] + m[..., 2, 2],
    ], axis=-1)
    best = np.argmax(q, axis=-1)
    w = np.empty(m.shape[:-2] + (4,))
    s = m
    cand = [
        np.stack([1.0 + tr, s[..., 2, 1] - s[..., 1, 2], s[..., 0, 2] - s[..., 2, 0], s[..., 1, 0] - s[..., 0, 1]], -1),
        np.stack([s[..., 2, 1] - s[..., 1, 2], q[..., 1], s[..., 0, 1] + s[..., 1, 0], s[..., 0, 2] + s[..., 2, 0]], -1),
        np.stack([s[..., 0, 2] - s[..., 2, 0], s[..., 0, 1] + s[..., 1, 0], q[..., 2], s[..., 1, 2] + s[..., 2, 1]], -1),
        np.stack([s[..., 1, 0] - s[..., 0, 1], s[..., 0, 2] + s[..., 2, 0], s[..., 1, 2] + s[..., 2, 1], q[..., 3]], -1),
    ]
    for i in range(4):
        w = np.where((best == i)[..., None], cand[i], w)
    w = w / np.linalg.norm(w, axis=-1, keepdims=True)
    w = np.where(w[..., :1] < 0, -w, w)  # canonical: angle in [0, π]
    vec = w[..., 1:]
    sin_half = np.linalg.norm(vec, axis=-1, keepdims=True)
    angle = 2.0 * np.arctan2(sin_half, w[..., :1])
    scale = np.where(sin_half < 1e-12, 2.0, angle / np.where(sin_half < 1e-12, 1.0, sin_half))
    return vec * scale


def flame_to_blender_points(points: np.ndarray) -> np.ndarray:
    """Points ``(..., 3)`` in FLAME world → Blender world (same units)."""
    return np.asarray(points) @ FLAME_TO_BLENDER.T


def blender_to_flame_points(points: np.ndarray) -> np.ndarray:
    """Inverse of :func:`flame_to_blender_points`."""
    return np.asarray(points) @ FLAME_TO_BLENDER


def project_points(points_cam: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pinhole projection of OpenCV camera-space points ``(..., 3)`` → pixels ``(..., 2)``."""
    p = np.asarray(points_cam, dtype=np.float64)
    uvw = p @ np.asarray(K, dtype=np.float64).T
    return uvw[..., :2] / uvw[..., 2:3]


def blender_camera_matrix_world(cam_R: np.ndarray, cam_t: np.ndarray) -> np.ndarray:
    """World→camera OpenCV extrinsics (FLAME world) → the Blender camera object's 4×4 ``matrix_world``
    (Blender world, camera looking down local −Z)."""
    R = np.asarray(cam_R, dtype=np.float64)
    t = np.asarray(cam_t, dtype=np.float64)
    cam_to_world = np.eye(4)
    cam_to_world[:3, :3] = R.T @ OPENCV_TO_GL_CAMERA
    cam_to_world[:3, 3] = -R.T @ t
    to_blender = np.eye(4)
    to_blender[:3, :3] = FLAME_TO_BLENDER
    return to_blender @ cam_to_world


def blender_camera_intrinsics(K: np.ndarray, width: int, height: int,
                              sensor_width_mm: float = SENSOR_WIDTH_MM) -> dict:
    """Pixel intrinsics → Blender camera data settings.

    Returns ``lens`` (mm), ``sensor_width`` (mm), ``sensor_fit`` (``'HORIZONTAL'``/``'VERTICAL'``, the
    larger image side, matching how Blender measures ``shift``), ``shift_x``, ``shift_y`` (fractions of
    the larger side). Assumes square pixels (uses fx)."""
    K = np.asarray(K, dtype=np.float64)
    fx, cx, cy = K[0, 0], K[0, 2], K[1, 2]
    big = float(max(width, height))
    return {
        "lens": float(fx * sensor_width_mm / big),
        "sensor_width": float(sensor_width_mm),
        "sensor_fit": "HORIZONTAL" if width >= height else "VERTICAL",
        "shift_x": float((width / 2.0 - cx) / big),
        "shift_y": float((cy - height / 2.0) / big),
    }


def intrinsics_from_fov(width: int, height: int, fov_x_deg: float) -> np.ndarray:
    """K with the principal point at the image centre for a horizontal field of view in degrees."""
    f = (width / 2.0) / np.tan(np.radians(fov_x_deg) / 2.0)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])
