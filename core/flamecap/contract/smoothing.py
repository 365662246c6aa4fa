"""Post-filter for per-frame FLAME parameters (numpy only; vendored into the Blender add-on, which re-applies
it to imported keys). Separate from fitting, so it can be re-applied without re-tracking.

One-Euro filter (Casiez et al., CHI 2012) per channel, run forward and backward and averaged so it adds no
lag; its cutoff rises with speed, so blinks and fast jaw motion survive while slow drift-noise is removed.
Speeds are normalised per channel (robust spread of the frame-to-frame velocity), so one ``strength`` works
for radians, metres and expression coefficients alike. Savitzky–Golay (local cubic fit) is the alternative.
"""
from __future__ import annotations

import math

import numpy as np

SMOOTHED_PARAMS = ("expr", "jaw_pose", "neck_pose", "eye_pose", "global_rot", "transl", "eyelids")
METHODS = ("one_euro", "savgol")


def _alpha(cutoff: np.ndarray | float, fps: float) -> np.ndarray:
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff, dtype=np.float64))
    return 1.0 / (1.0 + tau * fps)


def one_euro(x: np.ndarray, fps: float, min_cutoff: float, beta: float, d_cutoff: float = 1.0) -> np.ndarray:
    """Causal One-Euro filter along axis 0 of x (T, C). Speeds are in units of each channel's robust
    velocity spread (so ``beta`` is unitless). min_cutoff / d_cutoff in Hz."""
    x = np.asarray(x, dtype=np.float64)
    T = x.shape[0]
    if T < 2:
        return x.copy()
    v = np.diff(x, axis=0) * fps
    scale = 1.4826 * np.median(np.abs(v - np.median(v, 0)), 0) + 1e-9
    out = np.empty_like(x)
    out[0] = x[0]
    dx = np.zeros(x.shape[1:])
    a_d = _alpha(d_cutoff, fps)
    for t in range(1, T):
        raw_dx = (x[t] - out[t - 1]) * fps
        dx = a_d * raw_dx + (1 - a_d) * dx
        cutoff = min_cutoff + beta * np.abs(dx) / scale
        a = _alpha(cutoff, fps)
        out[t] = a * x[t] + (1 - a) * out[t - 1]
    return out


def zero_phase_one_euro(x: np.ndarray, fps: float, min_cutoff: float, beta: float) -> np.ndarray:
    """Mean of the forward and the time-reversed One-Euro passes: no lag."""
    f = one_euro(x, fps, min_cutoff, beta)
    b = one_euro(x[::-1], fps, min_cutoff, beta)[::-1]
    return 0.5 * (f + b)


def savgol(x: np.ndarray, window: int, order: int = 3) -> np.ndarray:
    """Savitzky–Golay smoothing along axis 0 of x (T, C) (local least-squares polynomial; edges fitted with
    the nearest full window)."""
    x = np.asarray(x, dtype=np.float64)
    T = x.shape[0]
    window = int(window) | 1
    if T < 3 or window < 3:
        return x.copy()
    window = min(window, T if T % 2 else T - 1)
    order = min(order, window - 1)
    h = window // 2
    out = np.empty_like(x)
    for t in range(T):
        a = min(max(t - h, 0), T - window)
        idx = np.arange(a, a + window)
        A = np.vander((idx - t).astype(np.float64), order + 1, increasing=True)
        coef = np.linalg.pinv(A)[0]            # value of the fitted polynomial at t
        out[t] = coef @ x[idx]
    return out


def smooth_params(arrays: dict, fps: float, strength: float, method: str = "one_euro") -> dict:
    """Return a copy of ``arrays`` with the per-frame parameters smoothed. strength 0 = unchanged; 1 = the
    default amount; larger = smoother. Invalid frames (``valid`` False) are smoothed like the rest (the fitter
    interpolates them). Other entries are passed through unchanged."""
    if method not in METHODS:
        raise ValueError(f"unknown smoothing method '{method}'; use one of {', '.join(METHODS)}")
    if not (fps > 0) or not np.isfinite(strength) or strength < 0:
        raise ValueError(f"smoothing needs fps > 0 and strength >= 0 (got fps={fps}, strength={strength})")
    out = dict(arrays)
    if strength == 0:
        return out
    for key in SMOOTHED_PARAMS:
        if key not in arrays:
            continue
        a = np.asarray(arrays[key])
        T = a.shape[0]
        flat = a.reshape(T, -1).astype(np.float64)
        bad = ~np.isfinite(flat)
        if bad.all():
            continue
        if bad.any():   # NaN rows (invalid frames a result may hold) would spread through the filter
            flat = _fill_gaps(flat, bad)
        if method == "one_euro":
            min_cutoff = 2.0 / (0.25 + 0.75 * strength)        # Hz; 2 Hz at strength 1
            beta = 1.0
            res = zero_phase_one_euro(flat, fps, min_cutoff, beta)
        else:
            res = savgol(flat, window=max(3, int(round(fps * 0.12 * (1 + strength)))), order=3)
        res[bad] = np.nan              # what was unknown stays unknown
        out[key] = res.reshape(a.shape).astype(a.dtype)
    return out


def _fill_gaps(flat: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """(T, C) with non-finite entries linearly interpolated over time per column (held at the ends); an
    all-unknown column becomes 0 (it is put back to NaN after filtering)."""
    out = flat.copy()
    t = np.arange(flat.shape[0])
    for c in range(flat.shape[1]):
        good = ~bad[:, c]
        out[:, c] = np.interp(t, t[good], flat[good, c]) if good.any() else 0.0
    return out
