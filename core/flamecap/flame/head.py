"""The identity-baked head a result file carries (numpy only): what the add-on needs to build the scene."""
from __future__ import annotations

import numpy as np

from ..contract.model_format import FlameModelData


def neutral_vertices(model: FlameModelData, shape: np.ndarray, offsets: np.ndarray | None = None) -> np.ndarray:
    """template + shapedirs·shape (+ offsets): (V, 3) metres, zero pose and expression."""
    shape = np.asarray(shape, dtype=np.float64).reshape(-1)
    n = min(shape.shape[0], model.n_shape)
    v = model["v_template"] + np.einsum("vck,k->vc", model["shapedirs"][:, :, :n], shape[:n])
    if offsets is not None:
        v = v + offsets
    return v


def head_arrays(model: FlameModelData, shape: np.ndarray, n_expr: int,
                offsets: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The ``head_*`` fields of a result (see ``flamecap.contract.result.SCHEMA``)."""
    v = neutral_vertices(model, shape, offsets)
    out = {
        "head_vertices": v.astype(np.float32),
        "head_faces": np.asarray(model["faces"], dtype=np.int32),
        "head_exprdirs": np.asarray(model["exprdirs"][:, :, :n_expr], dtype=np.float32),
        "head_posedirs": np.asarray(model["posedirs"], dtype=np.float32),
        "head_weights": np.asarray(model["weights"], dtype=np.float32),
        "head_joints": (np.asarray(model["J_regressor"]) @ v).astype(np.float32),
        "head_parents": np.asarray(model["parents"], dtype=np.int32),
    }
    if "eyelid_dirs" in model:
        out["head_eyelid_dirs"] = np.asarray(model["eyelid_dirs"], dtype=np.float32)
    return out
