"""The binding data type: which track points land where on a head surface."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class SurfaceBinding:
    """Which track points bind to the head surface, and where: row r binds track point ``point_index[r]``
    to triangle ``face_idx[r]`` of the model at barycentric ``bary[r]``. Shapes (R,), (R,), (R, 3)."""

    point_index: np.ndarray
    face_idx: np.ndarray
    bary: np.ndarray
    topology_hash: str = ""
    source: str = ""  # e.g. "official-embedding", "self-calibrated", "vertices", "file"
