"""Landmark embeddings that come with a user's FLAME download, attached to a model when it is added.

- MediaPipe embedding (``mediapipe_landmark_embedding.npz``: ``lmk_face_idx`` (K,), ``lmk_b_coords`` (K, 3),
  ``landmark_indices`` (K,) = which of MediaPipe's 478 points each row is) → the model's ``mp_*`` arrays, which
  the binding layer prefers where it has them (:mod:`flamecap.binding.mediapipe`).
- 68-point static embedding (``flame_static_embedding*.pkl``) → ``lmk68_face_idx`` / ``lmk68_bary`` (eyelid
  shapes and metrics use it).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..contract.model_format import FlameModelData
from ..errors import InputError, ModelError


def read_embedding(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The model arrays an embedding file provides (see the module docstring)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"embedding file not found: {p}")
    if p.suffix.lower() == ".pkl":
        from .synthetic import load_static_embedding_68
        idx, bary = load_static_embedding_68(p)
        return {"lmk68_face_idx": idx.astype(np.int32), "lmk68_bary": bary.astype(np.float32)}
    try:
        with np.load(p, allow_pickle=False) as z:
            d = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise ModelError(f"{p} is not a readable .npz embedding ({exc}); re-download it") from None
    need = ("lmk_face_idx", "lmk_b_coords", "landmark_indices")
    if not all(k in d for k in need):
        raise ModelError(f"{p} is not a MediaPipe landmark embedding (needs {', '.join(need)}); use FLAME's "
                         f"mediapipe_landmark_embedding.npz or the 68-point .pkl")
    idx, bary, mp = (np.asarray(d[k]) for k in need)
    K = idx.shape[0]
    if idx.shape != (K,) or bary.shape != (K, 3) or mp.shape != (K,) or mp.min() < 0 or mp.max() >= 478:
        raise ModelError(f"{p}: embedding arrays have inconsistent shapes or point numbers outside 0..477")
    return {"mp_face_idx": idx.astype(np.int32), "mp_bary": bary.astype(np.float32),
            "mp_landmark_indices": mp.astype(np.int32)}


def attach_embeddings(model: FlameModelData, files: list[str | os.PathLike]) -> FlameModelData:
    """``model`` with the arrays of each embedding file, checked against its triangles."""
    arrays = dict(model.arrays)
    for f in files:
        add = read_embedding(f)
        for k, v in add.items():
            if k.endswith("face_idx") and (v.min() < 0 or v.max() >= len(model.faces)):
                raise ModelError(f"{Path(f).name} indexes triangles outside the model's {len(model.faces)}; it "
                                 f"belongs to another head topology")
        arrays.update(add)
    return FlameModelData(arrays=arrays, meta={**model.meta, "embeddings": [Path(f).name for f in files]})
