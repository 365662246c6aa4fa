"""The character and shape-key animation files of :mod:`flamecap.contract.character` as core objects."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..contract import character as fmt
from ..contract.errors import ContractError
from ..errors import InputError
from .shapekeys import ShapeKeyAnimation, ShapeKeyTarget

CHARACTER_FORMAT = fmt.CHARACTER_FORMAT
ANIM_FORMAT = fmt.ANIM_FORMAT


def save_character(path: str | os.PathLike, target: ShapeKeyTarget, flame_vertices=None,
                   target_vertices=None) -> Path:
    pairs = None if flame_vertices is None else (flame_vertices, target_vertices)
    return fmt.save_character(path, target.vertices, target.faces, target.key_names, target.key_deltas,
                              target.name, pairs)


def load_character(path: str | os.PathLike) -> tuple[ShapeKeyTarget, tuple[np.ndarray, np.ndarray] | None]:
    """(target, (flame_vertices, target_vertices) or None)."""
    try:
        arrays, meta = fmt.load_character(path)
    except ContractError as exc:
        raise InputError(str(exc)) from None
    tgt = ShapeKeyTarget(arrays["vertices"], arrays["faces"], list(meta["key_names"]), arrays["key_deltas"],
                         name=str(meta.get("name") or Path(path).stem))
    pairs = None
    if "flame_vertices" in arrays:
        pairs = (arrays["flame_vertices"], arrays["target_vertices"])
    return tgt, pairs


def save_animation(path: str | os.PathLike, anim: ShapeKeyAnimation, target_name: str = "",
                   calibration: dict | None = None) -> Path:
    extra = {"target": target_name, "driven": list(anim.driven)}
    if anim.registration is not None:
        extra["calibration"] = {"scale": float(anim.registration.similarity.scale),
                                "landmark_residual": float(anim.registration.landmark_residual),
                                "surface_residual": float(anim.registration.surface_residual), **(calibration or {})}
    return fmt.save_animation(path, anim.names, anim.raw, anim.weights, anim.frame_index, anim.residual, anim.fps,
                              **extra)


def load_animation(path: str | os.PathLike) -> ShapeKeyAnimation:
    try:
        arrays, meta = fmt.load_animation(path)
    except ContractError as exc:
        raise InputError(str(exc)) from None
    return ShapeKeyAnimation(names=list(meta["names"]), weights=arrays["weights"], raw=arrays["raw"],
                             residual=arrays["residual"], frame_index=arrays["frame_index"], fps=float(meta["fps"]),
                             driven=list(meta.get("driven", [])))
