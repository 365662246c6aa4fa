"""Shape-key retargeting files crossing the core/add-on boundary, versioned and validated on write and on
read (numpy + stdlib only), and the per-channel mapping both sides apply to solved key values.

- character ``.npz`` (format ``flamecap.character``): ``vertices`` (N, 3) world space, ``faces`` (M, 3)
  triangles, ``key_deltas`` (K, N, 3); meta ``key_names`` (K,), ``name``; optional ``flame_vertices`` /
  ``target_vertices`` (L,) correspondence pairs (the character's known landmark vertices).
- shape-key animation ``.npz`` (format ``flamecap.shapekey_anim``): ``raw`` (T, K) as solved, ``weights``
  (T, K) after the mapping, ``frame_index`` (T,), ``residual`` (T,); meta ``names``, ``fps``, ``target``,
  ``driven`` (keys set from pose features), ``calibration`` (cache key, scale, residuals).
- mapping: per source channel (a solved key name) ``{"target", "gain", "offset", "lower", "upper",
  "smooth", "enabled"}``; :func:`apply_mapping` turns raw values into key values. The add-on re-keys from
  ``raw`` with a changed mapping without running the solve again.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .errors import ContractError
from .npzio import read_npz, write_npz_atomic
from .smoothing import zero_phase_one_euro

CHARACTER_FORMAT = "flamecap.character"
CHARACTER_VERSION = 1
ANIM_FORMAT = "flamecap.shapekey_anim"
ANIM_VERSION = 1
MAPPING_FIELDS = {"target": str, "gain": float, "offset": float, "lower": float, "upper": float,
                  "smooth": float, "enabled": bool}
MAPPING_DEFAULT = {"gain": 1.0, "offset": 0.0, "lower": 0.0, "upper": 1.0, "smooth": 0.0, "enabled": True}


def _check_meta(meta: dict, fmt: str, version: int, where: str, hint: str) -> None:
    label = "character" if fmt == CHARACTER_FORMAT else "shape-key animation"
    if meta.get("format") != fmt:
        raise ContractError(f"{where} is not a FlameCap {label} file (format '{meta.get('format')}'); {hint}")
    v = meta.get("version")
    if not isinstance(v, int) or isinstance(v, bool):
        raise ContractError(f"{where}: version {v!r} is not an integer; {hint}")
    if v > version:
        raise ContractError(f"{where}: version {v} is newer than this FlameCap reads ({version}); update FlameCap")


def _shape(a: np.ndarray, ndim: int, last: int | None, kind: str, name: str, where: str) -> None:
    if a.ndim != ndim or (last is not None and a.shape[-1] != last) or a.dtype.kind not in kind:
        raise ContractError(f"{where}: '{name}' has shape {a.shape} dtype {a.dtype}; expected {ndim}-D"
                            f"{'' if last is None else f' (..., {last})'} of kind {kind}")
    if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
        raise ContractError(f"{where}: '{name}' holds NaN/inf values")


def validate_character(arrays: Mapping[str, np.ndarray], meta: dict, where: str = "character") -> None:
    hint = "export the mesh from Blender with the FlameCap retarget panel"
    _check_meta(meta, CHARACTER_FORMAT, CHARACTER_VERSION, where, hint)
    for k in ("vertices", "faces", "key_deltas"):
        if k not in arrays:
            raise ContractError(f"{where} lacks '{k}'; {hint}")
    v, f, d = (np.asarray(arrays[k]) for k in ("vertices", "faces", "key_deltas"))
    _shape(v, 2, 3, "f", "vertices", where)
    _shape(f, 2, 3, "iu", "faces", where)
    _shape(d, 3, 3, "f", "key_deltas", where)
    names = meta.get("key_names")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ContractError(f"{where}: meta 'key_names' must be a list of key names")
    if d.shape[0] != len(names) or d.shape[1] != v.shape[0]:
        raise ContractError(f"{where}: key_deltas {d.shape} do not match {len(names)} names and {v.shape[0]} vertices")
    if f.size and (f.min() < 0 or f.max() >= v.shape[0]):
        raise ContractError(f"{where}: face indices outside 0..{v.shape[0] - 1}")
    if ("flame_vertices" in arrays) != ("target_vertices" in arrays):
        raise ContractError(f"{where}: correspondences need both 'flame_vertices' and 'target_vertices'")
    if "target_vertices" in arrays:
        fv, tv = np.asarray(arrays["flame_vertices"]), np.asarray(arrays["target_vertices"])
        if fv.shape != tv.shape or fv.ndim != 1 or fv.dtype.kind not in "iu" or tv.dtype.kind not in "iu":
            raise ContractError(f"{where}: correspondences {fv.shape}/{tv.shape} must be two integer lists of one length")
        if tv.size and (tv.min() < 0 or tv.max() >= v.shape[0]):
            raise ContractError(f"{where}: a correspondence vertex is outside 0..{v.shape[0] - 1}")


def save_character(path: str | os.PathLike, vertices, faces, key_names: list[str], key_deltas, name: str = "",
                   pairs: tuple | None = None) -> Path:
    arrays = {"vertices": np.asarray(vertices, np.float64), "faces": np.asarray(faces, np.int64),
              "key_deltas": np.asarray(key_deltas, np.float32)}
    if pairs is not None:
        arrays["flame_vertices"] = np.asarray(pairs[0], np.int64)
        arrays["target_vertices"] = np.asarray(pairs[1], np.int64)
    meta = {"format": CHARACTER_FORMAT, "version": CHARACTER_VERSION, "key_names": [str(n) for n in key_names],
            "name": str(name)}
    validate_character(arrays, meta, where=f"character {Path(path).name}")
    return write_npz_atomic(path, arrays, meta)


def load_character(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    arrays, meta = read_npz(path, what="character file")
    validate_character(arrays, meta, where=f"character file {path}")
    return arrays, meta


def validate_animation(arrays: Mapping[str, np.ndarray], meta: dict, where: str = "animation") -> None:
    hint = "create one with 'flamecap retarget shapekeys'"
    _check_meta(meta, ANIM_FORMAT, ANIM_VERSION, where, hint)
    for k in ("raw", "weights", "frame_index", "residual"):
        if k not in arrays:
            raise ContractError(f"{where} lacks '{k}'; {hint}")
    names = meta.get("names")
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ContractError(f"{where}: meta 'names' must be a list of key names")
    raw, w = np.asarray(arrays["raw"]), np.asarray(arrays["weights"])
    _shape(raw, 2, len(names), "f", "raw", where)
    _shape(w, 2, len(names), "f", "weights", where)
    T = raw.shape[0]
    fi, res = np.asarray(arrays["frame_index"]), np.asarray(arrays["residual"])
    if w.shape[0] != T or fi.shape != (T,) or res.shape != (T,) or fi.dtype.kind not in "iu":
        raise ContractError(f"{where}: weights {w.shape}, frame_index {fi.shape}, residual {res.shape} do not match "
                            f"{T} frames")
    fps = meta.get("fps")
    if not isinstance(fps, (int, float)) or not fps > 0:
        raise ContractError(f"{where}: fps {fps!r} must be a positive number")


def save_animation(path: str | os.PathLike, names: list[str], raw, weights, frame_index, residual, fps: float,
                   **meta_extra: Any) -> Path:
    arrays = {"raw": np.asarray(raw, np.float64), "weights": np.asarray(weights, np.float64),
              "frame_index": np.asarray(frame_index, np.int64), "residual": np.asarray(residual, np.float64)}
    meta = {"format": ANIM_FORMAT, "version": ANIM_VERSION, "names": [str(n) for n in names], "fps": float(fps),
            **meta_extra}
    validate_animation(arrays, meta, where=f"animation {Path(path).name}")
    return write_npz_atomic(path, arrays, meta)


def load_animation(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    arrays, meta = read_npz(path, what="animation file")
    validate_animation(arrays, meta, where=f"animation file {path}")
    return arrays, meta


# ------------------------------------------------------------------------------------------------
# mapping
# ------------------------------------------------------------------------------------------------
def normalise_mapping(mapping: Mapping[str, Mapping] | None, names: list[str]) -> dict[str, dict]:
    """Full settings per source channel (defaults filled in, target = the channel itself); raises
    :class:`ContractError` on unknown fields, wrong types or lower > upper."""
    out = {}
    mapping = mapping or {}
    unknown = [n for n in mapping if n not in names]
    if unknown:
        raise ContractError(f"mapping names channels {unknown[:4]} that the animation does not have")
    for n in names:
        spec = dict(mapping.get(n, {}))
        bad = [k for k in spec if k not in MAPPING_FIELDS]
        if bad:
            raise ContractError(f"mapping for '{n}': unknown field(s) {bad}; allowed: {sorted(MAPPING_FIELDS)}")
        full = {"target": n, **MAPPING_DEFAULT, **spec}
        try:
            full = {k: MAPPING_FIELDS[k](v) for k, v in full.items()}
        except (TypeError, ValueError):
            raise ContractError(f"mapping for '{n}': a value has the wrong type ({spec})") from None
        if not (full["lower"] <= full["upper"]) or full["smooth"] < 0 or not all(
                math.isfinite(full[k]) for k in ("gain", "offset", "lower", "upper", "smooth")):
            raise ContractError(f"mapping for '{n}': need finite values, lower <= upper and smooth >= 0")
        out[n] = full
    return out


def apply_mapping(names: list[str], raw: np.ndarray, mapping: Mapping[str, Mapping] | None, fps: float,
                  neutral: np.ndarray | None = None) -> tuple[list[str], np.ndarray]:
    """Raw values (T, K) → (target key names, values (T, K')) for the enabled channels:
    ``clip(gain · smooth(raw − neutral) + offset, lower, upper)``. ``smooth`` is a zero-lag One-Euro strength
    (0 = none; 1 = the result smoothing's default), ``neutral`` (K,) raw values of a chosen neutral frame
    (subtracted, so that frame keys to the offsets). Channels mapped onto the same target add up."""
    full = normalise_mapping(mapping, names)
    raw = np.asarray(raw, np.float64)
    base = raw - (0.0 if neutral is None else np.asarray(neutral, np.float64).reshape(1, -1))
    targets: list[str] = []
    cols: list[np.ndarray] = []
    for k, n in enumerate(names):
        c = full[n]
        if not c["enabled"]:
            continue
        x = base[:, k]
        if c["smooth"] > 0 and len(x) > 2:
            x = zero_phase_one_euro(x[:, None], fps, 2.0 / (0.25 + 0.75 * c["smooth"]), 1.0)[:, 0]
        v = c["gain"] * x + c["offset"]
        if c["target"] in targets:
            i = targets.index(c["target"])
            cols[i] = cols[i] + v
        else:
            targets.append(c["target"])
            cols.append(v)
    lim = {c["target"]: (c["lower"], c["upper"]) for c in full.values() if c["enabled"]}
    out = np.stack([np.clip(v, *lim[t]) for t, v in zip(targets, cols)], 1) if cols else np.zeros((raw.shape[0], 0))
    return targets, out
