"""The binding data type: which track points land where on a head surface."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np


def _no_rows() -> np.ndarray:
    return np.zeros(0, dtype=np.int64)


@dataclass
class SurfaceBinding:
    """Which track points bind to the head surface, and where: row r binds track point ``point_index[r]``
    to triangle ``face_idx[r]`` of the model at barycentric ``bary[r]``. Shapes (R,), (R,), (R, 3).

    Sliding rows: points that are contours rather than fixed skin (a detector's inner lip line is wherever
    the lips meet or turn away from the camera, which moves over the lip as the mouth opens and differs
    between real faces and renders). Candidate ``n`` is another place row ``slide_row[n]`` may take,
    (``slide_face_idx[n]``, ``slide_bary[n]``); the fitter picks one per clip
    (:func:`flamecap.fit.tracker.stage_slide`)."""

    point_index: np.ndarray
    face_idx: np.ndarray
    bary: np.ndarray
    topology_hash: str = ""
    source: str = ""  # e.g. "official-embedding", "self-calibrated", "vertices", "file"
    slide_row: np.ndarray = field(default_factory=_no_rows)
    slide_face_idx: np.ndarray = field(default_factory=_no_rows)
    slide_bary: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))

    def with_rows(self, rows: np.ndarray, face_idx: np.ndarray, bary: np.ndarray) -> "SurfaceBinding":
        """A copy with rows ``rows`` moved to (``face_idx``, ``bary``)."""
        fi, b = self.face_idx.copy(), np.array(self.bary, dtype=np.float64)
        fi[rows], b[rows] = face_idx, bary
        return replace(self, face_idx=fi, bary=b)


def surface_points(vertices: np.ndarray, faces: np.ndarray, face_idx: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """Points (R, 3) at barycentrics ``bary`` (R, 3) of triangles ``face_idx`` (R,)."""
    tri = np.asarray(vertices)[np.asarray(faces)[np.asarray(face_idx)]]
    return np.einsum("rk,rkc->rc", np.asarray(bary, np.float64), tri)


def with_sliding(binding: SurfaceBinding, rows: np.ndarray, vertices: np.ndarray, faces: np.ndarray,
                 radius_m: float, face_ok: np.ndarray | None = None) -> SurfaceBinding:
    """``binding`` with ``rows`` sliding: row ``rows[i]`` may move to any vertex or triangle centre within
    ``radius_m`` (rest space) of where it is bound, on the triangles ``face_ok[i]`` allows ((len(rows), F)
    bool; None: any)."""
    v, f = np.asarray(vertices, dtype=np.float64), np.asarray(faces, dtype=np.int64)
    rows = np.asarray(rows, dtype=np.int64)
    here = surface_points(v, f, binding.face_idx[rows], binding.bary[rows])
    centre = v[f].mean(1)
    out_row, out_f, out_b = [], [], []
    for i, (r, p) in enumerate(zip(rows, here)):
        ok = np.flatnonzero(face_ok[i]) if face_ok is not None else np.arange(len(f))
        tri_of = np.full(len(v), -1, dtype=np.int64)        # a triangle through each vertex, and its corner
        corner = np.zeros(len(v), dtype=np.int64)
        for c in range(3):
            tri_of[f[ok, c]], corner[f[ok, c]] = ok, c
        near_v = np.flatnonzero((np.linalg.norm(v - p, axis=1) <= radius_m) & (tri_of >= 0))
        near_t = ok[np.linalg.norm(centre[ok] - p, axis=1) <= radius_m]
        out_row.append(np.full(near_v.size + near_t.size, r, dtype=np.int64))
        out_f += [tri_of[near_v], near_t]
        out_b += [np.eye(3)[corner[near_v]], np.full((near_t.size, 3), 1.0 / 3.0)]
    if not out_row:
        return binding
    return replace(binding, slide_row=np.concatenate(out_row), slide_face_idx=np.concatenate(out_f),
                   slide_bary=np.concatenate(out_b))
