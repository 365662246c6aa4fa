"""How a detector's point scheme lands on a head surface: a function of (scheme, head model), decided here
and nowhere else. Aligners produce tracks; :func:`bind` binds them.

- ``mediapipe478``: the model's official MediaPipe embedding where it has one (``mp_*`` arrays, from the
  user's FLAME download), self-calibrated on renders for the other points, the self-calibrated points
  moved by the official-vs-calibrated offsets of their neighbours (see :mod:`.mediapipe`).
- ``vertices``: point k is vertex k.
- any scheme with explicit surface points (a point file's ``face_idx``/``bary``).
"""
from __future__ import annotations

import numpy as np

from ..contract.events import ProgressCallback
from ..contract.model_format import FlameModelData
from ..errors import InputError
from .base import SurfaceBinding

BINDING_SOURCES = ("auto", "official", "self-calibrated")


def bind(scheme: str, model: FlameModelData, *, source: str = "auto", n_points: int | None = None,
         surface_points: tuple[np.ndarray, np.ndarray] | None = None,
         progress: ProgressCallback | None = None) -> SurfaceBinding:
    """The binding of a track of ``scheme`` (``n_points`` points) to ``model``. ``surface_points`` = (face_idx
    (K,), bary (K, 3)) given with the points (a point file) wins; a ``custom`` scheme with one point per model
    vertex is bound vertex by vertex; ``source`` picks the MediaPipe binding (see the module docstring)."""
    if surface_points is not None:
        face_idx, bary = (np.asarray(a) for a in surface_points)
        if face_idx.size and (face_idx.max() >= len(model.faces) or face_idx.min() < 0):
            raise InputError(f"the points' 'face_idx' index outside the model's {len(model.faces)} triangles; "
                             f"they were made for another head topology")
        return SurfaceBinding(point_index=np.arange(len(face_idx)), face_idx=face_idx.astype(np.int64),
                              bary=np.asarray(bary, dtype=np.float64), topology_hash=model.topology, source="file")
    if scheme == "mediapipe478":
        from .mediapipe import mediapipe_binding
        return mediapipe_binding(model, source=source, progress=progress)
    if scheme == "vertices" or (scheme == "custom" and n_points == model.n_vertices):
        from .vertices import vertex_binding
        return vertex_binding(model)
    raise InputError(f"landmarks with scheme '{scheme}' have no binding to the head model; give the points with "
                     f"'face_idx'/'bary' arrays ('flamecap track FOOTAGE --aligner file --points FILE')")


__all__ = ["BINDING_SOURCES", "SurfaceBinding", "bind"]
