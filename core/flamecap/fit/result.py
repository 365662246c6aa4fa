"""FitOutput + track + model → a validated :class:`~flamecap.contract.result.TrackingResult`."""
from __future__ import annotations

import numpy as np

from ..contract.conventions import DEFAULT_CAM_R, DEFAULT_CAM_T
from ..contract.model_format import FlameModelData
from ..contract.result import TrackingResult, default_meta, validate
from ..flame.head import head_arrays
from ..landmarks.base import LandmarkTrack
from .tracker import FitOutput


def build_result(fit: FitOutput, track: LandmarkTrack, model: FlameModelData, source: dict | None = None,
                 **meta_extra) -> TrackingResult:
    """Assemble (and validate) the result: per-frame params (float32), camera, identity-baked head."""
    T = track.n_frames
    E = fit.params["expr"].shape[1]
    arrays = {k: np.asarray(v, dtype=np.float32) for k, v in fit.params.items()}
    arrays.update({
        "valid": np.asarray(fit.valid, dtype=bool),
        "landmark_residual_px": np.asarray(fit.landmark_residual_px, dtype=np.float32),
        "time_s": np.asarray(track.time_s, dtype=np.float64).reshape(T),
        "frame_index": np.asarray(track.frame_index, dtype=np.int64).reshape(T),
        "shape": np.asarray(fit.shape, dtype=np.float32),
        "K": np.asarray(fit.K, dtype=np.float64),
        "cam_R": np.asarray(DEFAULT_CAM_R, dtype=np.float64),
        "cam_t": np.asarray(DEFAULT_CAM_T, dtype=np.float64),
        "image_size": np.asarray(track.image_size, dtype=np.int32),
    })
    offsets = getattr(fit, "offsets", None)
    if offsets is not None:
        arrays["vertex_offsets"] = np.asarray(offsets, dtype=np.float32)
    arrays.update(head_arrays(model, fit.shape, E, offsets))
    model_info = {"release": model.release, "topology_hash": model.topology, "n_vertices": model.n_vertices,
                  "n_shape": int(fit.shape.shape[0]), "n_expr": int(E)}
    src = dict(source or {"path": track.meta.get("source", ""), "kind": "landmarks"})
    src.setdefault("n_frames", T)
    meta = default_meta(track.fps, src, model_info, **meta_extra)
    meta.setdefault("fit", {"focal_px": fit.focal, "focal_observable": fit.info.get("focal_observable"),
                            "n_points": fit.n_points, "binding_slid_mm": _slid(fit.info.get("slid_mm")),
                            "timings_s": {k: round(v, 4) for k, v in fit.timings.items()},
                            "valid_frames": int(np.sum(fit.valid))})
    validate(arrays, meta, where="fit result")
    return TrackingResult(arrays=arrays, meta=meta)


def _slid(slid: dict | None) -> dict | None:
    """Sliding binding rows as the result records them: track point (str, as JSON keys are) → mm moved."""
    return None if slid is None else {str(k): round(float(v), 2) for k, v in slid.items()}
