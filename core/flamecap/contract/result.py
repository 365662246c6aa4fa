"""The versioned tracking-result file: schema, validation on write and on read (numpy + stdlib only).

A result ``.npz`` is self-contained: besides the per-frame FLAME parameters and the camera it carries the
*head* the add-on needs to build the scene (identity baked into the neutral mesh, expression / pose-corrective
bases, skinning, rest joints), so importing never needs the user's FLAME file.

Shapes: T frames, S shape coeffs, E expression coeffs, V vertices, F faces, J joints (5: root, neck, jaw,
left eye, right eye), P pose-corrective components. Units and axes: see :mod:`.conventions`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ContractError
from .npzio import read_npz, write_npz_atomic

RESULT_FORMAT = "flamecap.result"
RESULT_VERSION = 3          # 2: ``source`` records frames expected / read / damaged; 3: ``fit_error_px`` is
                            # named for what it is, ``landmark_residual_px``. Older files still read (upgraded).
JOINT_NAMES = ("root", "neck", "jaw", "eye_l", "eye_r")
# Parameter names, identical in core, file, CLI and add-on.
PER_FRAME_PARAMS = ("expr", "jaw_pose", "neck_pose", "eye_pose", "global_rot", "transl")

# name -> (shape spec, dtype kind, required). Spec symbols are sizes resolved from the data.
SCHEMA: dict[str, tuple[tuple, str, bool]] = {
    # per frame
    "expr": (("T", "E"), "f", True),
    "jaw_pose": (("T", 3), "f", True),
    "neck_pose": (("T", 3), "f", True),
    "eye_pose": (("T", 6), "f", True),          # left eye axis-angle, right eye axis-angle
    "global_rot": (("T", 3), "f", True),
    "transl": (("T", 3), "f", True),
    "eyelids": (("T", 2), "f", False),          # left, right (models with eyelid blendshapes)
    "valid": (("T",), "b", True),
    # mean distance of the frame's fitted points to the detector's own points, pixels: agreement with the
    # fit's input, not accuracy (NaN on invalid frames)
    "landmark_residual_px": (("T",), "f", True),
    "time_s": (("T",), "f", True),              # presentation time of each frame, seconds
    "frame_index": (("T",), "i", True),         # source frame number of each row
    # per clip
    "shape": (("S",), "f", True),
    "vertex_offsets": (("V", 3), "f", False),   # per-vertex detail, metres, in the neutral pose frame
    "K": ((3, 3), "f", True),
    "cam_R": ((3, 3), "f", True),
    "cam_t": ((3,), "f", True),
    "image_size": ((2,), "i", True),            # width, height in pixels
    # the head (identity baked in)
    "head_vertices": (("V", 3), "f", True),     # neutral mesh = template + shapedirs·shape (+ offsets)
    "head_faces": (("F", 3), "i", True),
    "head_exprdirs": (("V", 3, "E"), "f", True),
    "head_posedirs": (("V", 3, "P"), "f", True),
    "head_eyelid_dirs": (("V", 3, 2), "f", False),
    "head_weights": (("V", "J"), "f", True),
    "head_joints": (("J", 3), "f", True),       # rest joint positions for this identity
    "head_parents": (("J",), "i", True),        # -1 for the root
}
REQUIRED_META = ("format", "version", "fps", "source", "model", "units", "conventions")
# What ``meta["source"]`` records about the footage (version >= 2): name -> (JSON types, may be None).
# frames_expected: frames the selection should hold (None: the video does not say); frames_read: decoded
# intact; frames_damaged: selected frames that could not be decoded (invalid rows); truncated: the file
# holds fewer frames than its header announces.
SOURCE_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "frames_expected": ((int,), True),
    "frames_read": ((int,), False),
    "frames_damaged": ((int,), False),
    "truncated": ((bool,), False),
}
MAX_ABS_TRANSL_M = 1.0e4     # a head 10 km from the camera is a broken file, not a shot


@dataclass
class TrackingResult:
    """In-memory form of a result file. ``arrays`` follow :data:`SCHEMA`; ``meta`` is JSON-able."""

    arrays: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    def __contains__(self, key: str) -> bool:
        return key in self.arrays

    @property
    def n_frames(self) -> int:
        return int(self.arrays["valid"].shape[0])

    @property
    def fps(self) -> float:
        return float(self.meta["fps"])

    @property
    def image_size(self) -> tuple[int, int]:
        w, h = (int(x) for x in self.arrays["image_size"])
        return w, h


def default_meta(fps: float, source: dict, model: dict, **extra: Any) -> dict:
    """Metadata with the fixed fields filled in. ``source``: {path, kind, n_frames...};
    ``model``: {release, topology_hash, n_vertices, ...}."""
    src = dict(source)
    src.setdefault("frames_expected", None)
    src.setdefault("frames_read", int(src.get("n_frames") or 0))
    src.setdefault("frames_damaged", 0)
    src.setdefault("truncated", bool(src.get("ended_early", False)))
    meta = {
        "format": RESULT_FORMAT,
        "version": RESULT_VERSION,
        "fps": float(fps),
        "source": src,
        "model": dict(model),
        "units": "m",
        "conventions": "flame-world +Y up +Z to camera; opencv camera; axis-angle radians",
        "joint_names": list(JOINT_NAMES),
    }
    meta.update(extra)
    return meta


def _kind_ok(arr: np.ndarray, kind: str) -> bool:
    if kind == "f":
        return arr.dtype.kind == "f"
    if kind == "i":
        return arr.dtype.kind in "iu"
    if kind == "b":
        return arr.dtype.kind == "b"
    return False


def validate(arrays: dict[str, np.ndarray], meta: dict, where: str = "result") -> None:
    """Check every field against :data:`SCHEMA` and the metadata; raise :class:`ContractError` naming the
    field with expected vs actual."""
    fmt = meta.get("format")
    if fmt is not None and fmt != RESULT_FORMAT:  # a model / landmarks / other file given as a result
        raise ContractError(f"{where}: this is a '{fmt}' file, not a tracking result ('{RESULT_FORMAT}'); "
                            f"give a result .npz written by 'flamecap track' or 'flamecap fit'")
    for key in REQUIRED_META:
        if key not in meta:
            raise ContractError(f"{where}: metadata field '{key}' is missing")
    if meta["format"] != RESULT_FORMAT:
        raise ContractError(f"{where}: format is '{meta['format']}', expected '{RESULT_FORMAT}'")
    if not isinstance(meta["version"], int) or isinstance(meta["version"], bool):
        raise ContractError(f"{where}: version {meta['version']!r} is not an integer")
    if not isinstance(meta["fps"], (int, float)) or isinstance(meta["fps"], bool):
        raise ContractError(f"{where}: fps {meta['fps']!r} is not a number")
    if int(meta["version"]) > RESULT_VERSION:
        raise ContractError(f"{where}: version {meta['version']} is newer than this FlameCap reads "
                            f"({RESULT_VERSION}); update FlameCap")
    if int(meta["version"]) < 1:
        raise ContractError(f"{where}: version {meta['version']} is not a valid result version (1..{RESULT_VERSION})")
    _validate_source(meta["source"], int(meta["version"]), where)
    if not (np.isfinite(float(meta["fps"])) and float(meta["fps"]) > 0):
        raise ContractError(f"{where}: fps must be > 0, got {meta['fps']}")
    sizes: dict[str, int] = {}
    for key, (spec, kind, required) in SCHEMA.items():
        if key not in arrays:
            if required:
                raise ContractError(f"{where}: required field '{key}' is missing")
            continue
        arr = np.asarray(arrays[key])
        if not _kind_ok(arr, kind):
            raise ContractError(f"{where}: field '{key}' has dtype {arr.dtype}, expected kind '{kind}'")
        if arr.ndim != len(spec):
            raise ContractError(f"{where}: field '{key}' has shape {arr.shape}, expected {spec}")
        for axis, (want, got) in enumerate(zip(spec, arr.shape)):
            if isinstance(want, int):
                if got != want:
                    raise ContractError(f"{where}: field '{key}' has shape {arr.shape}, expected {spec}")
            elif sizes.setdefault(want, got) != got:
                raise ContractError(f"{where}: field '{key}' axis {axis} ({want}) is {got}, "
                                    f"but other fields say {want}={sizes[want]}")
        if kind == "f":
            if key in PER_FRAME_PARAMS or key == "eyelids":
                valid = np.asarray(arrays.get("valid", np.ones(arr.shape[0], bool)), bool)
                if valid.shape[0] == arr.shape[0] and not np.all(np.isfinite(arr[valid])):
                    raise ContractError(f"{where}: field '{key}' has non-finite values on valid frames")
            elif key != "landmark_residual_px" and not np.all(np.isfinite(arr)):
                raise ContractError(f"{where}: field '{key}' has non-finite values")
    if sizes.get("T", 0) < 1:
        raise ContractError(f"{where}: no frames")
    if sizes.get("J") != len(JOINT_NAMES):
        raise ContractError(f"{where}: head has {sizes.get('J')} joints, expected {len(JOINT_NAMES)}")
    faces = np.asarray(arrays["head_faces"])
    if faces.size and (faces.min() < 0 or faces.max() >= sizes["V"]):
        raise ContractError(f"{where}: head_faces index outside 0..{sizes['V'] - 1}")
    w, h = (int(x) for x in arrays["image_size"])
    if w <= 0 or h <= 0:
        raise ContractError(f"{where}: image_size must be positive, got {w}x{h}")
    fi = np.asarray(arrays["frame_index"])
    if fi.size > 1 and not np.all(np.diff(fi.astype(np.int64)) > 0):
        k = int(np.argmax(np.diff(fi.astype(np.int64)) <= 0))
        raise ContractError(f"{where}: frame_index must increase row by row, but row {k + 1} is {int(fi[k + 1])} "
                            f"after {int(fi[k])}")
    valid = np.asarray(arrays["valid"], bool)
    tr = np.asarray(arrays["transl"], np.float64)[valid]
    if tr.size and np.abs(tr).max() > MAX_ABS_TRANSL_M:
        raise ContractError(f"{where}: field 'transl' reaches {np.abs(tr).max():.3g} m, beyond "
                            f"{MAX_ABS_TRANSL_M:g} m; the file is damaged or not in metres")


def _validate_source(source: Any, version: int, where: str) -> None:
    """``meta['source']``: a dict; from version 2 on it carries :data:`SOURCE_FIELDS` with their types."""
    if not isinstance(source, dict):
        raise ContractError(f"{where}: metadata 'source' must be an object, got {type(source).__name__}")
    if version < 2:
        return
    for key, (types, nullable) in SOURCE_FIELDS.items():
        if key not in source:
            raise ContractError(f"{where}: metadata source field '{key}' is missing (version {version})")
        v = source[key]
        if v is None and nullable:
            continue
        if not isinstance(v, types) or (types == (int,) and (isinstance(v, bool) or v < 0)):
            raise ContractError(f"{where}: metadata source field '{key}' is {v!r}, expected "
                                f"{' or '.join(t.__name__ for t in types)}{' or null' if nullable else ''}"
                                f"{' >= 0' if types == (int,) else ''}")


def save_result(path: str | os.PathLike, result: TrackingResult) -> Path:
    """Validate, then write atomically."""
    validate(result.arrays, result.meta, where=f"result {path}")
    return write_npz_atomic(path, result.arrays, result.meta)


def upgrade(arrays: dict[str, np.ndarray], meta: dict) -> None:
    """Rename what older versions called otherwise, in place (the version number stays the file's own)."""
    if isinstance(meta.get("version"), int) and meta["version"] < 3 and "fit_error_px" in arrays:
        arrays["landmark_residual_px"] = arrays.pop("fit_error_px")


def load_result(path: str | os.PathLike) -> TrackingResult:
    """Read, upgrade and validate a result file."""
    arrays, meta = read_npz(path, what="result file")
    upgrade(arrays, meta)
    validate(arrays, meta, where=f"result {path}")
    return TrackingResult(arrays=arrays, meta=meta)
