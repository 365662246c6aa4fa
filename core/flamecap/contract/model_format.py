"""The plain FLAME-format model ``.npz`` (no pickle) that the core and the add-on read (numpy + stdlib only).

Converted once from a FLAME ``.pkl`` (see ``flamecap.flame.pkl``) or written by the synthetic generator.
Shapes: V vertices, F faces, S shape comps, E expression comps, P pose-corrective comps (9·(J−1) = 36),
J joints (root, neck, jaw, eye_l, eye_r). Layout of bases follows FLAME: ``(V, 3, K)``.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ContractError
from .npzio import read_npz, write_npz_atomic

MODEL_FORMAT = "flamecap.model"
MODEL_VERSION = 1
N_JOINTS = 5

MODEL_SCHEMA: dict[str, tuple[tuple, str, bool]] = {
    "v_template": (("V", 3), "f", True),
    "faces": (("F", 3), "i", True),
    "shapedirs": (("V", 3, "S"), "f", True),
    "exprdirs": (("V", 3, "E"), "f", True),
    "posedirs": (("V", 3, "P"), "f", True),
    "J_regressor": ((N_JOINTS, "V"), "f", True),
    "weights": (("V", N_JOINTS), "f", True),
    "parents": ((N_JOINTS,), "i", True),
    "eyelid_dirs": (("V", 3, 2), "f", False),       # left, right eyelid closing blendshapes
    "vertex_uv": (("V", 2), "f", False),            # per-vertex UV in [0, 1]
    "face_mask": (("V",), "b", False),              # face region (metrics, dense net loss)
    "lmk68_face_idx": ((68,), "i", False),
    "lmk68_bary": ((68, 3), "f", False),
    "mp_face_idx": (("K",), "i", False),            # MediaPipe binding: triangle per point
    "mp_bary": (("K", 3), "f", False),
    "mp_landmark_indices": (("K",), "i", False),    # which of MediaPipe's 478 points each row is
    "vertex_albedo": (("V", 3), "f", False),        # per-vertex RGB in [0, 1] (synthetic / test heads)
}


def topology_hash(faces: np.ndarray, n_vertices: int) -> str:
    """Stable id of a mesh topology (vertex count + triangle list), 16 hex chars."""
    h = hashlib.sha256()
    h.update(str(int(n_vertices)).encode())
    h.update(np.ascontiguousarray(np.asarray(faces, dtype=np.int64)).tobytes())
    return h.hexdigest()[:16]


@dataclass
class FlameModelData:
    """A FLAME-format model as numpy arrays plus metadata (release, source hash, topology hash)."""

    arrays: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    def __contains__(self, key: str) -> bool:
        return key in self.arrays

    @property
    def n_vertices(self) -> int:
        return int(self.arrays["v_template"].shape[0])

    @property
    def n_shape(self) -> int:
        return int(self.arrays["shapedirs"].shape[2])

    @property
    def n_expr(self) -> int:
        return int(self.arrays["exprdirs"].shape[2])

    @property
    def faces(self) -> np.ndarray:
        return self.arrays["faces"]

    @property
    def topology(self) -> str:
        return topology_hash(self.arrays["faces"], self.n_vertices)

    @property
    def release(self) -> str:
        return str(self.meta.get("release", "unknown"))


def validate_model(arrays: dict[str, np.ndarray], meta: dict, where: str = "model") -> None:
    """Check arrays against :data:`MODEL_SCHEMA` (shapes consistent, finite, indices in range)."""
    if meta.get("format") != MODEL_FORMAT:
        raise ContractError(f"{where}: format is '{meta.get('format')}', expected '{MODEL_FORMAT}'")
    if int(meta.get("version", 0)) > MODEL_VERSION:
        raise ContractError(f"{where}: model format version {meta.get('version')} is newer than this "
                            f"FlameCap reads; update FlameCap")
    sizes: dict[str, int] = {}
    for key, (spec, kind, required) in MODEL_SCHEMA.items():
        if key not in arrays:
            if required:
                raise ContractError(f"{where}: required array '{key}' is missing")
            continue
        arr = np.asarray(arrays[key])
        ok_kind = {"f": "f", "i": "iu", "b": "b"}[kind]
        if arr.dtype.kind not in ok_kind:
            raise ContractError(f"{where}: array '{key}' has dtype {arr.dtype}, expected kind '{kind}'")
        if arr.ndim != len(spec):
            raise ContractError(f"{where}: array '{key}' has shape {arr.shape}, expected {spec}")
        for want, got in zip(spec, arr.shape):
            if isinstance(want, int):
                if want != got:
                    raise ContractError(f"{where}: array '{key}' has shape {arr.shape}, expected {spec}")
            elif sizes.setdefault(want, got) != got:
                raise ContractError(f"{where}: array '{key}' says {want}={got}, other arrays say {sizes[want]}")
        if kind == "f" and not np.all(np.isfinite(arr)):
            raise ContractError(f"{where}: array '{key}' has NaN or infinite values")
    V = sizes["V"]
    if V < 4:
        raise ContractError(f"{where}: {V} vertices is not a mesh")
    faces = np.asarray(arrays["faces"])
    if faces.min() < 0 or faces.max() >= V:
        raise ContractError(f"{where}: 'faces' indexes outside 0..{V - 1}")
    parents = np.asarray(arrays["parents"])
    if parents[0] != -1 or np.any(parents[1:] < 0) or np.any(parents[1:] >= np.arange(1, N_JOINTS)):
        raise ContractError(f"{where}: 'parents' {parents.tolist()} is not a root-first joint tree")
    if sizes["P"] != 9 * (N_JOINTS - 1):
        raise ContractError(f"{where}: posedirs has {sizes['P']} components, expected {9 * (N_JOINTS - 1)}")
    F = faces.shape[0]
    for key in ("lmk68_face_idx", "mp_face_idx"):
        if key in arrays and (arrays[key].min() < 0 or arrays[key].max() >= F):
            raise ContractError(f"{where}: '{key}' indexes outside 0..{F - 1}")


def model_meta(release: str, source_sha256: str | None = None, **extra: Any) -> dict:
    meta = {"format": MODEL_FORMAT, "version": MODEL_VERSION, "release": release,
            "source_sha256": source_sha256}
    meta.update(extra)
    return meta


def save_model_npz(path: str | os.PathLike, model: FlameModelData) -> Path:
    meta = dict(model.meta)
    meta.setdefault("format", MODEL_FORMAT)
    meta.setdefault("version", MODEL_VERSION)
    meta["topology_hash"] = model.topology
    validate_model(model.arrays, meta, where=f"model {path}")
    return write_npz_atomic(path, model.arrays, meta)


def load_model_npz(path: str | os.PathLike) -> FlameModelData:
    arrays, meta = read_npz(path, what="model file")
    validate_model(arrays, meta, where=f"model {path}")
    return FlameModelData(arrays=arrays, meta=meta)
