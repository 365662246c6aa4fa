"""Point k ↔ vertex k (dense aligners, per-vertex point files)."""
from __future__ import annotations

import numpy as np

from ..contract.model_format import FlameModelData
from .base import SurfaceBinding


def vertex_binding(model: FlameModelData) -> SurfaceBinding:
    """Each vertex bound to one triangle that contains it (one-hot barycentrics); vertices in no triangle
    are left out."""
    f = np.asarray(model.faces, dtype=np.int64)
    V = model.n_vertices
    face_idx = np.full(V, -1, dtype=np.int64)
    corner = np.zeros(V, dtype=np.int64)
    for c in range(3):
        face_idx[f[:, c]] = np.arange(len(f))
        corner[f[:, c]] = c
    used = face_idx >= 0
    bary = np.zeros((V, 3))
    bary[np.arange(V)[used], corner[used]] = 1.0
    return SurfaceBinding(point_index=np.nonzero(used)[0], face_idx=face_idx[used], bary=bary[used],
                          topology_hash=model.topology, source="vertices")
