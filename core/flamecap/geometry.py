"""Mesh-geometry helpers shared by the embedding, the synthetic head and retargeting (trimesh does the work)."""
from __future__ import annotations

import numpy as np


def closest_barycentric(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Barycentric coordinates (N, 3) of the point on triangle (a[i], b[i], c[i]) closest to p[i]; all (N, 3)
    (p may also be one point (3,) for all triangles)."""
    import trimesh

    tri = np.stack([np.asarray(a, np.float64), np.asarray(b, np.float64), np.asarray(c, np.float64)], axis=1)
    p = np.broadcast_to(np.asarray(p, np.float64), (tri.shape[0], 3))
    closest = trimesh.triangles.closest_point(tri, p)
    bary = trimesh.triangles.points_to_barycentric(tri, closest)
    return np.clip(bary, 0.0, 1.0) / np.clip(bary, 0.0, 1.0).sum(1, keepdims=True)
