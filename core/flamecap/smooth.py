"""Post-filter a result file: ``smooth_result(result, strength)`` → a new TrackingResult with smoothed
per-frame parameters (the numpy filter lives in :mod:`flamecap.contract.smoothing`, shared with the add-on)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .contract.result import TrackingResult, load_result, save_result
from .contract.smoothing import METHODS, smooth_params
from .errors import InputError


def smooth_result(result: TrackingResult, strength: float = 1.0, method: str = "one_euro") -> TrackingResult:
    if method not in METHODS:
        raise InputError(f"unknown smoothing method '{method}'; use one of {', '.join(METHODS)}")
    if not (np.isfinite(strength) and strength >= 0):
        raise InputError(f"--strength must be a finite number >= 0 (1 = default), got {strength}")
    arrays = smooth_params(result.arrays, result.fps, float(strength), method)
    meta = dict(result.meta)
    meta["smoothing"] = {"method": method, "strength": float(strength)}
    return TrackingResult(arrays=arrays, meta=meta)


def smooth_file(src: str | os.PathLike, dst: str | os.PathLike, strength: float = 1.0,
                method: str = "one_euro") -> Path:
    """Read, smooth, validate and write atomically (no partial output on error)."""
    return save_result(dst, smooth_result(load_result(src), strength, method))
