"""Interchange formats (numpy + stdlib): Live Link Face CSV (ARKit-52 weights + head/eye rotations) and the
FLAME parameters as a plain ``.npz`` or JSON. Every writer is atomic (temp file + ``os.replace``).

Live Link Face CSV, as the iOS app exports a take::

    Timecode,BlendShapeCount,EyeBlinkLeft,...(52 ARKit names, PascalCase, app order)...,TongueOut,
    HeadYaw,HeadPitch,HeadRoll,LeftEyeYaw,LeftEyePitch,LeftEyeRoll,RightEyeYaw,RightEyePitch,RightEyeRoll
    00:00:00:00.000,61,0.0123,...

``Timecode`` is ``HH:MM:SS:FF.fff`` (FF = frame within the second at the take's fps, .fff its fraction);
``BlendShapeCount`` is 61 (52 shapes + 9 rotations). Rotations are radians: yaw about +Y (up), pitch about
+X, roll about +Z, FLAME axes, ``R = Ry(yaw) Rx(pitch) Rz(roll)``; the head is global_rot ∘ neck_pose.
"""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .contract.conventions import axis_angle_to_matrix
from .contract.npzio import atomic_output, write_npz_atomic
from .contract.result import PER_FRAME_PARAMS, TrackingResult
from .errors import InputError
from .retarget.arkit import ARKIT_NAMES, canonical_arkit_name

LLF_ROTATIONS = ("HeadYaw", "HeadPitch", "HeadRoll", "LeftEyeYaw", "LeftEyePitch", "LeftEyeRoll",
                 "RightEyeYaw", "RightEyePitch", "RightEyeRoll")
LLF_SHAPES = tuple(n[0].upper() + n[1:] for n in ARKIT_NAMES)
LLF_HEADER = ("Timecode", "BlendShapeCount") + LLF_SHAPES + LLF_ROTATIONS


def _write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    with atomic_output(path) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
    return Path(path)


def timecode(seconds: float, fps: float) -> str:
    """``HH:MM:SS:FF.fff`` for a time in seconds at ``fps``."""
    total_frames = seconds * fps
    whole = int(np.floor(total_frames + 1e-9))
    frac = max(total_frames - whole, 0.0)
    fps_i = max(int(round(fps)), 1)
    s_total, ff = divmod(whole, fps_i)
    h, rem = divmod(s_total, 3600)
    m, s = divmod(rem, 60)
    return f"{h:02d}:{m:02d}:{s:02d}:{ff:02d}.{int(round(frac * 1000)) % 1000:03d}"


def parse_timecode(tc: str, fps: float) -> float:
    try:
        h, m, s, rest = tc.strip().split(":")
        return int(h) * 3600 + int(m) * 60 + int(s) + float(rest) / fps
    except ValueError:
        raise InputError(f"bad Live Link Face timecode '{tc}' (expected HH:MM:SS:FF.fff)") from None


def euler_yxz(R: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) → (yaw, pitch, roll) (..., 3) with R = Ry(yaw) Rx(pitch) Rz(roll)."""
    pitch = np.arcsin(np.clip(-R[..., 1, 2], -1.0, 1.0))
    yaw = np.arctan2(R[..., 0, 2], R[..., 2, 2])
    roll = np.arctan2(R[..., 1, 0], R[..., 1, 1])
    return np.stack([yaw, pitch, roll], axis=-1)


def matrix_from_euler_yxz(ypr: np.ndarray) -> np.ndarray:
    y, p, r = (np.asarray(ypr, np.float64)[..., i] for i in range(3))
    Ry = axis_angle_to_matrix(np.stack([0 * y, y, 0 * y], -1))
    Rx = axis_angle_to_matrix(np.stack([p, 0 * p, 0 * p], -1))
    Rz = axis_angle_to_matrix(np.stack([0 * r, 0 * r, r], -1))
    return Ry @ Rx @ Rz


def result_rotations(result: TrackingResult) -> np.ndarray:
    """The 9 Live Link Face rotation columns (T, 9) radians from a result."""
    T = result.n_frames
    head = axis_angle_to_matrix(np.nan_to_num(np.asarray(result["global_rot"], np.float64))) @ \
        axis_angle_to_matrix(np.nan_to_num(np.asarray(result["neck_pose"], np.float64)))
    eyes = axis_angle_to_matrix(np.nan_to_num(np.asarray(result["eye_pose"], np.float64)).reshape(T, 2, 3))
    return np.concatenate([euler_yxz(head), euler_yxz(eyes[:, 0]), euler_yxz(eyes[:, 1])], axis=1)


@dataclass
class LiveLinkTake:
    """ARKit weights (T, 52) in :data:`ARKIT_NAMES` order, rotations (T, 9) radians (see module doc),
    time_s (T,), fps."""

    weights: np.ndarray
    rotations: np.ndarray
    time_s: np.ndarray
    fps: float

    def as_dict(self) -> dict[str, np.ndarray]:
        return {n: self.weights[:, k] for k, n in enumerate(ARKIT_NAMES)}


def take_from_weights(arkit: dict[str, np.ndarray], time_s: np.ndarray, fps: float,
                      rotations: np.ndarray | None = None) -> LiveLinkTake:
    """Build a take from ``{ARKit name or variant: (T,)}``; missing shapes are 0."""
    T = len(time_s)
    W = np.zeros((T, 52))
    for name, vals in arkit.items():
        c = canonical_arkit_name(name)
        if c is None:
            raise InputError(f"'{name}' is not an ARKit blendshape name")
        v = np.asarray(vals, np.float64).reshape(-1)
        if v.shape[0] != T:
            raise InputError(f"'{name}' has {v.shape[0]} frames, expected {T}")
        W[:, ARKIT_NAMES.index(c)] = v
    rot = np.zeros((T, 9)) if rotations is None else np.asarray(rotations, np.float64).reshape(T, 9)
    return LiveLinkTake(weights=W, rotations=rot, time_s=np.asarray(time_s, np.float64), fps=float(fps))


def write_live_link_csv(path: str | os.PathLike, take: LiveLinkTake) -> Path:
    """Write a Live Link Face-compatible CSV (atomic)."""
    if not np.all(np.isfinite(take.weights)) or not np.all(np.isfinite(take.rotations)):
        raise InputError("the take has NaN/inf values; interpolate invalid frames first")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(LLF_HEADER)
    t0 = float(take.time_s[0]) if len(take.time_s) else 0.0
    for t in range(take.weights.shape[0]):
        w.writerow([timecode(float(take.time_s[t]) - t0, take.fps), 61]
                   + [f"{x:.6f}" for x in take.weights[t]] + [f"{x:.6f}" for x in take.rotations[t]])
    return _write_text_atomic(path, buf.getvalue())


def read_live_link_csv(path: str | os.PathLike, fps: float = 60.0) -> LiveLinkTake:
    """Read a Live Link Face CSV (any column order, PascalCase or camelCase names, rotation columns
    optional). ``fps`` is the app's take rate (60 by default) used to decode the timecode frames."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"Live Link Face CSV not found: {p}")
    with open(p, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.reader(fh))
    if not rows or not rows[0] or rows[0][0].strip().lower() != "timecode":
        raise InputError(f"{p} is not a Live Link Face CSV (first column must be 'Timecode')")
    header = [h.strip() for h in rows[0]]
    col_shape: dict[int, int] = {}
    col_rot: dict[int, int] = {}
    rot_lower = [r.lower() for r in LLF_ROTATIONS]
    for c, h in enumerate(header[1:], start=1):
        if h.lower() == "blendshapecount":
            continue
        if h.lower() in rot_lower:
            col_rot[c] = rot_lower.index(h.lower())
            continue
        n = canonical_arkit_name(h)
        if n is not None:
            col_shape[c] = ARKIT_NAMES.index(n)
    if not col_shape:
        raise InputError(f"{p} has no ARKit blendshape columns (e.g. EyeBlinkLeft, JawOpen)")
    data = [r for r in rows[1:] if r and any(x.strip() for x in r)]
    if not data:
        raise InputError(f"{p} has a header but no frames")
    T = len(data)
    W = np.zeros((T, 52))
    R = np.zeros((T, 9))
    ts = np.zeros(T)
    for t, r in enumerate(data):
        if len(r) < len(header):
            raise InputError(f"{p} line {t + 2} has {len(r)} columns, the header {len(header)}")
        ts[t] = parse_timecode(r[0], fps)
        try:
            for c, k in col_shape.items():
                W[t, k] = float(r[c])
            for c, k in col_rot.items():
                R[t, k] = float(r[c])
        except ValueError as exc:
            raise InputError(f"{p} line {t + 2}: {exc}") from None
    return LiveLinkTake(weights=W, rotations=R, time_s=ts - ts[0], fps=float(fps))


# ------------------------------------------------------------------------------------------------
# FLAME parameters
# ------------------------------------------------------------------------------------------------
PARAMS_FORMAT = "flamecap.params"


def flame_params(result: TrackingResult) -> dict[str, np.ndarray]:
    """The FLAME parameters of a result: per-frame ``expr, jaw_pose, neck_pose, eye_pose, global_rot,
    transl`` (+ ``eyelids``), ``shape``, camera ``K, cam_R, cam_t``, ``frame_index, time_s, valid``."""
    keys = PER_FRAME_PARAMS + ("eyelids", "shape", "K", "cam_R", "cam_t", "image_size", "frame_index",
                               "time_s", "valid")
    return {k: np.asarray(result[k]) for k in keys if k in result}


def write_params_npz(path: str | os.PathLike, result: TrackingResult) -> Path:
    meta = {"format": PARAMS_FORMAT, "version": 1, "fps": result.fps, "units": "m",
            "rotations": "axis-angle radians, FLAME world (+Y up, +Z to camera)",
            "eye_pose": "left eye xyz then right eye xyz", "model": result.meta.get("model")}
    return write_npz_atomic(path, flame_params(result), meta)


def write_params_json(path: str | os.PathLike, result: TrackingResult) -> Path:
    """JSON: ``{"format", "version", "fps", "units", "frames": [{"frame_index", "time_s", "valid", "expr", ...}],
    "shape", "K", "cam_R", "cam_t", "image_size"}``; invalid frames' NaNs become null."""
    p = flame_params(result)

    def clean(a):
        a = np.asarray(a, dtype=np.float64)
        return [None if not np.isfinite(x) else float(x) for x in a.reshape(-1)] if a.ndim == 1 else \
            [clean(x) for x in a]

    frames = []
    per = [k for k in PER_FRAME_PARAMS + ("eyelids",) if k in p]
    for t in range(result.n_frames):
        f = {"frame_index": int(p["frame_index"][t]), "time_s": float(p["time_s"][t]), "valid": bool(p["valid"][t])}
        for k in per:
            f[k] = clean(p[k][t])
        frames.append(f)
    doc = {"format": PARAMS_FORMAT, "version": 1, "fps": result.fps, "units": "m",
           "rotations": "axis-angle radians, FLAME world (+Y up, +Z to camera)", "model": result.meta.get("model"),
           "shape": clean(p["shape"]), "K": clean(p["K"]), "cam_R": clean(p["cam_R"]), "cam_t": clean(p["cam_t"]),
           "image_size": [int(x) for x in p["image_size"]], "frames": frames}
    return _write_text_atomic(path, json.dumps(doc, indent=1, allow_nan=False))
