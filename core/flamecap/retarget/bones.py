"""Jaw / neck / eye rotations onto an armature's bones (numpy only; the add-on applies the quaternions).

FLAME's joint rotations are local axis-angle rotations expressed in FLAME world axes (its rest joints have
no orientation). For a target bone with rest orientation ``B`` (3×3, armature space, Blender: columns =
the bone's x, y, z axes) in an armature whose object rotation is ``A`` (world), the pose-bone rotation is

    R_bone = Bᵀ Aᵀ C (M R_flame Mᵀ) Cᵀ A B

with ``C`` = FLAME→Blender and ``M`` an optional user axis map (signed permutation, e.g. "X,-Z,Y") for rigs
whose characters do not face FLAME's way. Each channel has a gain (scales the angle).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..contract.conventions import FLAME_TO_BLENDER, axis_angle_to_matrix
from ..contract.errors import ContractError
from ..contract.rotations import BONE_PRESETS, matrix_to_quaternion, resolve_bones
from ..contract.rotations import axis_map_matrix as _axis_map_matrix
from ..errors import InputError

CHANNELS = ("neck", "jaw", "eye_l", "eye_r", "root")

PRESETS = BONE_PRESETS


def axis_map_matrix(spec: str | None) -> np.ndarray:
    """:func:`flamecap.contract.rotations.axis_map_matrix` with the core's input error."""
    try:
        return _axis_map_matrix(spec)
    except ContractError as exc:
        raise InputError(str(exc)) from None


@dataclass
class BoneMap:
    """FLAME channel → target bone name, plus per-channel angle gain and a shared axis map."""

    bones: dict[str, str] = field(default_factory=dict)
    gains: dict[str, float] = field(default_factory=dict)
    axis_map: str = "X,Y,Z"

    @classmethod
    def preset(cls, name: str, **kw) -> "BoneMap":
        if name not in PRESETS:
            raise InputError(f"unknown bone preset '{name}'; choose one of {sorted(PRESETS)}")
        return cls(bones=dict(PRESETS[name]), **kw)

    def resolve(self, available: list[str]) -> dict[str, str]:
        """The mapping restricted to bones the armature has; raises when none is there."""
        out = resolve_bones(self.bones, available)
        if self.bones and not out:
            raise InputError(f"none of the bones {sorted(self.bones.values())} is in the armature; pick the bones "
                             f"by hand or another preset")
        return out


def channel_rotvecs(arrays: dict) -> dict[str, np.ndarray]:
    """FLAME per-frame rotations (T, 3) per channel from a result's arrays."""
    T = np.asarray(arrays["jaw_pose"]).shape[0]
    eye = np.asarray(arrays["eye_pose"], np.float64).reshape(T, 2, 3)
    return {"root": np.asarray(arrays["global_rot"], np.float64), "neck": np.asarray(arrays["neck_pose"], np.float64),
            "jaw": np.asarray(arrays["jaw_pose"], np.float64), "eye_l": eye[:, 0], "eye_r": eye[:, 1]}


def bone_rotations(rotvecs: np.ndarray, bone_rest: np.ndarray | None = None, armature_rot: np.ndarray | None = None,
                   axis_map: np.ndarray | None = None, gain: float = 1.0, flame_axes: bool = True) -> np.ndarray:
    """FLAME rotations (T, 3) axis-angle → pose-bone rotations (T, 3, 3) in the bone's rest frame.

    ``bone_rest`` (3, 3) the bone's rest orientation in armature space (default identity),
    ``armature_rot`` (3, 3) the armature object's world rotation (default identity), ``axis_map`` a signed
    permutation from :func:`axis_map_matrix`, ``gain`` scales the angle. ``flame_axes`` False: the rotations
    are already in Blender world axes."""
    r = np.asarray(rotvecs, dtype=np.float64) * float(gain)
    R = axis_angle_to_matrix(r)
    M = np.eye(3) if axis_map is None else np.asarray(axis_map, dtype=np.float64)
    R = M @ R @ M.T
    if flame_axes:
        R = FLAME_TO_BLENDER @ R @ FLAME_TO_BLENDER.T
    A = np.eye(3) if armature_rot is None else _orthonormal(armature_rot)
    B = np.eye(3) if bone_rest is None else _orthonormal(bone_rest)
    F = A @ B
    return F.T @ R @ F


def _orthonormal(m: np.ndarray) -> np.ndarray:
    U, _, Vt = np.linalg.svd(np.asarray(m, dtype=np.float64)[:3, :3])
    return U @ Vt


def matrices_to_quaternions(R: np.ndarray) -> np.ndarray:
    """(T, 3, 3) → (T, 4) (w, x, y, z), sign-continuous over T."""
    return matrix_to_quaternion(R)
