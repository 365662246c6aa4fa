"""Eyelid-closing blendshapes for any FLAME-format head (FLAME 2020 and 2023 Open carry none).

The lid margins come from the head's MediaPipe binding (its eye-contour points, on lid skin — see
:mod:`flamecap.binding.mediapipe`), or from the model's own 68-point embedding when it has one; the eyeballs
and their centres from the rig (vertices skinned to the eye joints, joints regressed from the template).
:func:`flamecap.flame.face_regions.eyelid_closing` then carries each upper lid down over its eyeball and the
lower lid a little up. The shapes are linear, like FLAME's own ``eyelid_dirs``, so the fitter solves them per
eye from MediaPipe's lid points and Blender gets them as shape keys.
"""
from __future__ import annotations

import numpy as np

from ..binding.base import SurfaceBinding
from ..binding.mediapipe import MP_TO_68
from ..contract.model_format import FlameModelData
from ..errors import ModelError
from . import face_regions as fr

# iBUG-68 eye points (36–47) → MediaPipe points: corners, upper lid, lower lid of each eye
_EYE68_MP = MP_TO_68[36:48]


def eye_landmarks_68(model: FlameModelData, binding: SurfaceBinding | None) -> np.ndarray:
    """Rest-space positions (12, 3) of the iBUG eye points 36–47: the model's 68-point embedding when it
    has one, else the MediaPipe binding's eye-contour points."""
    v, f = np.asarray(model["v_template"], np.float64), np.asarray(model.faces, np.int64)
    if "lmk68_face_idx" in model and "lmk68_bary" in model:
        idx = np.asarray(model["lmk68_face_idx"], np.int64)[36:48]
        return np.einsum("kc,kcd->kd", np.asarray(model["lmk68_bary"], np.float64)[36:48], v[f[idx]])
    if binding is None:
        raise ModelError("eyelid shapes need the lid positions: a MediaPipe binding or the model's 68-point "
                         "embedding")
    rows = {int(k): r for r, k in enumerate(binding.point_index)}
    missing = [k for k in _EYE68_MP if k not in rows]
    if missing:
        raise ModelError(f"the head's MediaPipe binding lacks the eye points {missing}; the eyes were not found "
                         f"on its renders, so no eyelid shapes can be made")
    r = np.array([rows[k] for k in _EYE68_MP])
    return np.einsum("kc,kcd->kd", np.asarray(binding.bary, np.float64)[r], v[f[binding.face_idx[r]]])


def eyeballs(model: FlameModelData) -> tuple[np.ndarray, np.ndarray]:
    """(V,) masks of the vertices skinned to the left and right eye joints."""
    w = np.asarray(model["weights"], np.float64)
    return w[:, fr.EYE_L] > 0.5, w[:, fr.EYE_R] > 0.5


def generate_eyelids(model: FlameModelData, binding: SurfaceBinding | None) -> np.ndarray:
    """Eyelid blendshapes (V, 3, 2) m: [..., 0] closes the left (+X) eye, [..., 1] the right."""
    v = np.asarray(model["v_template"], np.float64)
    eye_l, eye_r = eyeballs(model)
    if not (eye_l.any() and eye_r.any()):
        raise ModelError("the head has no vertices skinned to its eye joints, so it has no eyeballs to close "
                         "lids over")
    lmk = np.full((68, 3), np.nan)
    lmk[36:48] = eye_landmarks_68(model, binding)
    anchors = fr.HeadAnchors(joints=np.asarray(model["J_regressor"], np.float64) @ v, lmk68=lmk,
                             eyeball_l=eye_l, eyeball_r=eye_r)
    return fr.eyelid_basis(v, anchors)


def with_eyelids(model: FlameModelData, binding: SurfaceBinding | None) -> FlameModelData:
    """``model`` itself when it has eyelid shapes (or nothing tells where its lids are: no MediaPipe
    ``binding`` and no 68-point embedding), else a copy with generated ones (``meta['eyelids']`` says so)."""
    if "eyelid_dirs" in model or (binding is None and "lmk68_face_idx" not in model):
        return model
    lids = generate_eyelids(model, binding).astype(np.float32)
    return FlameModelData(arrays={**model.arrays, "eyelid_dirs": lids}, meta={**model.meta, "eyelids": "generated"})
