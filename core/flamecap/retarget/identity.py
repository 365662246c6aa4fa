"""FLAME character: drive another FLAME identity with the tracked expression, jaw, neck and eyes.

Only the identity changes: the per-frame parameters are kept, the ``head_*`` arrays are re-baked for the
target identity (via :func:`flamecap.flame.head.head_arrays` when a model and a shape vector are given, or
copied from another result of the same topology). Vertex offsets of the source never leak: the target's
neutral mesh is exactly template + shapedirs·target_shape (+ the target result's own offsets).
"""
from __future__ import annotations

import copy

import numpy as np

from ..contract.model_format import FlameModelData
from ..contract.result import TrackingResult, validate
from ..errors import InputError

_HEAD_KEYS = ("head_vertices", "head_faces", "head_exprdirs", "head_posedirs", "head_eyelid_dirs",
              "head_weights", "head_joints", "head_parents")


def swap_identity(result: TrackingResult, target_shape: np.ndarray | None = None, *,
                  target_result: TrackingResult | None = None, model: FlameModelData | None = None,
                  keep_transl: bool = True) -> TrackingResult:
    """A new result: ``result``'s motion on another identity.

    Give either ``target_shape`` (S,) (a MICA or any FLAME shape vector) with the FLAME ``model`` it belongs
    to, or ``target_result`` (another result on the same topology: its shape, head and offsets are used).
    ``keep_transl`` False zeroes the translation (the character stays at the origin)."""
    if (target_shape is None) == (target_result is None):
        raise InputError("give exactly one of a target shape vector or a target result")
    arrays = {k: np.array(v, copy=True) for k, v in result.arrays.items() if k not in _HEAD_KEYS}
    arrays.pop("vertex_offsets", None)
    meta = copy.deepcopy(result.meta)
    E = result["expr"].shape[1]
    if target_result is not None:
        if target_result["head_faces"].shape != result["head_faces"].shape or not np.array_equal(
                target_result["head_faces"], result["head_faces"]):
            raise InputError("the target result's head has a different topology; both must come from the same "
                             "FLAME model")
        if target_result["head_exprdirs"].shape[2] < E:
            raise InputError(f"the target result has {target_result['head_exprdirs'].shape[2]} expression "
                             f"components, the source uses {E}; re-track the target with at least {E}")
        for k in _HEAD_KEYS:
            if k in target_result.arrays:
                arrays[k] = np.array(target_result[k], copy=True)
        arrays["head_exprdirs"] = arrays["head_exprdirs"][:, :, :E]
        arrays["shape"] = np.array(target_result["shape"], copy=True)
        if "vertex_offsets" in target_result:
            arrays["vertex_offsets"] = np.array(target_result["vertex_offsets"], copy=True)
        meta["identity"] = {"swapped_from": "result", "source_identity": result.meta.get("identity"),
                            "target_identity": target_result.meta.get("identity")}
    else:
        if model is None:
            raise InputError("a target shape vector needs the FLAME model it belongs to (--model)")
        shape = np.asarray(target_shape, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(shape)):
            raise InputError("the target shape vector has NaN/inf values")
        if shape.shape[0] > model.n_shape:
            raise InputError(f"the target shape has {shape.shape[0]} coefficients, the model only "
                             f"{model.n_shape}; use the model the shape was estimated with")
        if model["faces"].shape != result["head_faces"].shape or not np.array_equal(model["faces"], result["head_faces"]):
            raise InputError("the model's topology differs from the result's head; use the model the result "
                             "was tracked with")
        if model.n_expr < E:
            raise InputError(f"the model has {model.n_expr} expression components, the result uses {E}")
        from ..flame.head import head_arrays
        arrays.update(head_arrays(model, shape, E))
        arrays["shape"] = shape.astype(np.float32)
        meta["identity"] = {"swapped_from": "shape", "source_identity": result.meta.get("identity"),
                            "n_shape": int(shape.shape[0])}
    if not keep_transl:
        arrays["transl"] = np.zeros_like(arrays["transl"])
    validate(arrays, meta, where="identity-swapped result")
    return TrackingResult(arrays=arrays, meta=meta)
