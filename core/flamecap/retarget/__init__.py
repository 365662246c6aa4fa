"""Retargeting a tracked FLAME performance onto characters (numpy/scipy core; Blender side in the add-on).

- :func:`swap_identity` — drive another FLAME identity with the tracked motion (identity never leaks).
- :func:`retarget_shape_keys` — any shape-key character (ARKit-52 or custom): register FLAME onto its face,
  transfer the deformation, solve its own key values per frame.
- :mod:`.bones` — jaw / neck / eye rotations onto armature bones (axis mapping, Rigify preset).
"""
from .arkit import ARKIT_NAMES, Channel, ChannelMap, canonical_arkit_name, match_arkit_names
from .identity import swap_identity
from .shapekeys import (Correspondences, Registration, ShapeKeyAnimation, ShapeKeyTarget, register_target,
                        retarget_shape_keys)
from .solve import SolveConfig, solve_weights

__all__ = ["ARKIT_NAMES", "Channel", "ChannelMap", "canonical_arkit_name", "match_arkit_names", "swap_identity",
           "Correspondences", "Registration", "ShapeKeyAnimation", "ShapeKeyTarget", "register_target",
           "retarget_shape_keys", "SolveConfig", "solve_weights"]
