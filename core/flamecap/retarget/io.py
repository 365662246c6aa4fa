"""Files exchanged with the add-on for shape-key retargeting (numpy + stdlib, atomic writes).

- character ``.npz`` (format ``flamecap.character``): ``vertices`` (N, 3), ``faces`` (M, 3) triangles,
  ``key_deltas`` (K, N, 3); meta ``key_names``, ``name``; optional ``flame_vertices`` / ``target_vertices``
  (L,) correspondence pairs (the target's known landmark vertices).
- animation ``.npz`` (format ``flamecap.shapekey_anim``): ``weights`` (T, K), ``frame_index`` (T,),
  ``residual`` (T,); meta ``names``, ``fps``, ``target``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..contract.errors import ContractError
from ..contract.npzio import read_npz, write_npz_atomic
from ..errors import InputError
from .shapekeys import ShapeKeyAnimation, ShapeKeyTarget

CHARACTER_FORMAT = "flamecap.character"
ANIM_FORMAT = "flamecap.shapekey_anim"


def save_character(path: str | os.PathLike, target: ShapeKeyTarget, flame_vertices=None,
                   target_vertices=None) -> Path:
    arrays = {"vertices": target.vertices.astype(np.float64), "faces": target.faces.astype(np.int64),
              "key_deltas": target.key_deltas.astype(np.float32)}
    if flame_vertices is not None:
        arrays["flame_vertices"] = np.asarray(flame_vertices, np.int64)
        arrays["target_vertices"] = np.asarray(target_vertices, np.int64)
    meta = {"format": CHARACTER_FORMAT, "version": 1, "key_names": list(target.key_names), "name": target.name}
    return write_npz_atomic(path, arrays, meta)


def load_character(path: str | os.PathLike) -> tuple[ShapeKeyTarget, tuple[np.ndarray, np.ndarray] | None]:
    """(target, (flame_vertices, target_vertices) or None)."""
    try:
        arrays, meta = read_npz(path, what="character file")
    except ContractError as exc:
        raise InputError(str(exc)) from None
    if meta.get("format") != CHARACTER_FORMAT:
        raise InputError(f"{path} is not a FlameCap character file (format '{meta.get('format')}'); export it "
                         f"from Blender with the FlameCap retarget panel")
    for k in ("vertices", "faces", "key_deltas"):
        if k not in arrays:
            raise InputError(f"character file {path} lacks '{k}'; re-export it")
    tgt = ShapeKeyTarget(arrays["vertices"], arrays["faces"], list(meta.get("key_names", [])),
                         arrays["key_deltas"], name=str(meta.get("name", Path(path).stem)))
    pairs = None
    if "flame_vertices" in arrays and "target_vertices" in arrays:
        pairs = (arrays["flame_vertices"], arrays["target_vertices"])
    return tgt, pairs


def save_animation(path: str | os.PathLike, anim: ShapeKeyAnimation, target_name: str = "") -> Path:
    arrays = {"weights": anim.weights.astype(np.float64), "raw": anim.raw.astype(np.float64),
              "frame_index": np.asarray(anim.frame_index, np.int64), "residual": anim.residual.astype(np.float64)}
    meta = {"format": ANIM_FORMAT, "version": 1, "names": list(anim.names), "fps": float(anim.fps),
            "target": target_name}
    if anim.registration is not None:
        meta["registration"] = {"scale": anim.registration.similarity.scale,
                                "landmark_residual": anim.registration.landmark_residual,
                                "surface_residual": anim.registration.surface_residual}
    return write_npz_atomic(path, arrays, meta)


def load_animation(path: str | os.PathLike) -> ShapeKeyAnimation:
    try:
        arrays, meta = read_npz(path, what="animation file")
    except ContractError as exc:
        raise InputError(str(exc)) from None
    if meta.get("format") != ANIM_FORMAT:
        raise InputError(f"{path} is not a FlameCap shape-key animation (format '{meta.get('format')}'); "
                         f"create one with 'flamecap retarget shapekeys'")
    return ShapeKeyAnimation(names=list(meta["names"]), weights=arrays["weights"], raw=arrays.get("raw", arrays["weights"]),
                             residual=arrays.get("residual", np.zeros(len(arrays["weights"]))),
                             frame_index=arrays["frame_index"], fps=float(meta["fps"]))
