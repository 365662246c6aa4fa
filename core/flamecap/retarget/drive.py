"""ARKit keys set from the take's pose features instead of solved (numpy only).

The least-squares solve explains the FLAME deformation with whatever keys fit it; on characters whose keys
do not match FLAME's motion well (most third-party heads) the jaw's motion then spreads over mouth keys and
jawOpen stays near zero, and an eyeball rotation is explained by one eyeLook key at its limit. So:

- ``jawOpen``: the source's lip opening (distance between the lips where they meet, over the face size,
  change from rest) divided by the opening the character's own jawOpen key makes (over its face size);
- ``eyeBlink*``: the source's eyelid closure: FLAME's eyelid parameter when the head has eyelid shapes,
  else from the source mesh's lid points (MediaPipe lid landmarks of the calibration), 1 − gap / rest gap;
- ``eyeLook*``: the gaze angles (:func:`flamecap.contract.rotations.gaze_angles`) over
  :data:`EYE_LOOK_RANGE_DEG` (the angle a key's value 1 stands for; per-channel gain adjusts it).

The solve then fits the other keys to what is left of the deformation.
"""
from __future__ import annotations

import logging

import numpy as np

from ..contract.arkit import match_arkit_names
from ..contract.conventions import axis_angle_to_matrix
from ..contract.result import JOINT_NAMES, TrackingResult
from ..contract.rotations import fill_invalid, gaze_angles
from .calibrate import MP_LIDS, face_size, mouth_pair, nearest_vertex
from .features import has_eyelids

log = logging.getLogger(__name__)

EYE_LOOK_RANGE_DEG = 30.0
_TEST_JAW_RAD = 0.2


def flame_mouth_pair(result: TrackingResult, phi: np.ndarray) -> tuple[int, int]:
    """(upper, lower) lip vertex of the FLAME head (see :func:`.calibrate.mouth_pair`)."""
    v0 = np.asarray(result["head_vertices"], np.float64)
    jaw = _jaw_delta(result, phi)
    front = v0[:, 2] >= float(result["head_joints"][1][2])
    return mouth_pair(v0, jaw, v0[:, 0] - float(np.median(v0[front, 0])), front)


def _jaw_delta(result: TrackingResult, phi: np.ndarray) -> np.ndarray:
    off = phi.shape[2] - 27
    f = (axis_angle_to_matrix(np.array([_TEST_JAW_RAD, 0.0, 0.0])) - np.eye(3)).reshape(9)
    return phi[:, :, off:off + 9] @ f


def character_mouth_pair(target, registration, jaw_key: np.ndarray) -> tuple[int, int]:
    """(upper, lower) lip vertex of the character from its jawOpen key delta (N, 3)."""
    sim = registration.similarity
    local = (target.vertices - sim.t) @ sim.R / sim.scale            # character points in the FLAME frame
    front = registration.weight > 0.5
    mid = float(np.median(local[front, 0])) if front.any() else 0.0
    return mouth_pair(target.vertices, jaw_key, local[:, 0] - mid, front)


def source_opening(result: TrackingResult, phi: np.ndarray, feats: np.ndarray, pair: tuple[int, int]) -> np.ndarray:
    """(T,) lip gap change from rest over the face size, on the source head."""
    v0 = np.asarray(result["head_vertices"], np.float64)
    u, l = pair
    pu = v0[u] + np.einsum("cf,tf->tc", phi[u], feats)
    pl = v0[l] + np.einsum("cf,tf->tc", phi[l], feats)
    return (np.linalg.norm(pu - pl, axis=1) - np.linalg.norm(v0[u] - v0[l])) / face_size(result)


def eye_closure(result: TrackingResult, phi: np.ndarray, feats: np.ndarray, correspondences) -> dict[str, np.ndarray]:
    """Side ("left"/"right") → (T,) closure in [0, 1]; empty when neither eyelid shapes nor lid landmarks."""
    T = result.n_frames
    if has_eyelids(result):
        lids = fill_invalid(np.asarray(result["eyelids"], np.float64).reshape(T, 2), result["valid"])
        return {"left": np.clip(lids[:, 0], 0, 1), "right": np.clip(lids[:, 1], 0, 1)}
    lm = None if correspondences is None else correspondences.flame_landmarks
    if lm is None:
        return {}
    v0 = np.asarray(result["head_vertices"], np.float64)
    # the lids, not the eyeballs right behind them (which no expression moves)
    W = np.asarray(result["head_weights"], np.float64)
    skin = np.flatnonzero(W[:, [JOINT_NAMES.index("eye_l"), JOINT_NAMES.index("eye_r")]].max(1) <= 0.5)
    out = {}
    for side, (up, lo) in MP_LIDS.items():
        pts = lm[[up, lo]]
        if np.all(np.isfinite(pts)):
            a, b = skin[nearest_vertex(v0[skin], pts)]
            pa = v0[a] + np.einsum("cf,tf->tc", phi[a], feats)
            pb = v0[b] + np.einsum("cf,tf->tc", phi[b], feats)
            rest = max(np.linalg.norm(v0[a] - v0[b]), 1e-9)
            out[side] = np.clip((1.0 - np.linalg.norm(pa - pb, axis=1) / rest) / 0.9, 0.0, 1.0)
    return out


def gaze_keys(result: TrackingResult) -> dict[str, np.ndarray]:
    """Canonical eyeLook* name → (T,) in [0, 1] from the eye rotations."""
    T = result.n_frames
    eye = fill_invalid(np.asarray(result["eye_pose"], np.float64).reshape(T, 6), result["valid"])
    rng = np.radians(EYE_LOOK_RANGE_DEG)
    out = {}
    for side, rv in (("Left", eye[:, :3]), ("Right", eye[:, 3:])):
        yaw, pitch = gaze_angles(rv).T / rng
        toward_left = np.clip(yaw, 0, 1)          # toward the subject's left: out for the left eye, in for the right
        toward_right = np.clip(-yaw, 0, 1)
        out[f"eyeLookOut{side}"] = toward_left if side == "Left" else toward_right
        out[f"eyeLookIn{side}"] = toward_right if side == "Left" else toward_left
        out[f"eyeLookDown{side}"] = np.clip(pitch, 0, 1)
        out[f"eyeLookUp{side}"] = np.clip(-pitch, 0, 1)
    return out


def driven_values(result: TrackingResult, target, registration, names: list[str], phi: np.ndarray,
                  feats: np.ndarray, correspondences=None) -> dict[str, np.ndarray]:
    """Key name (the character's spelling) → (T,) value for the keys driven from pose features."""
    arkit = match_arkit_names(names)
    by_canon = {c: n for n, c in arkit.items()}
    out: dict[str, np.ndarray] = {}
    if "jawOpen" in by_canon:
        name = by_canon["jawOpen"]
        key = target.key_deltas[target.key_names.index(name)]
        fp = flame_mouth_pair(result, phi)
        cp = character_mouth_pair(target, registration, key)
        if min(fp + cp) >= 0:
            p = target.vertices
            gap0 = np.linalg.norm(p[cp[0]] - p[cp[1]])
            gap1 = np.linalg.norm(p[cp[0]] + key[cp[0]] - p[cp[1]] - key[cp[1]])
            char_face = registration.similarity.scale * face_size(result)
            gain = (gap1 - gap0) / char_face
            if gain > 1e-4:
                out[name] = np.clip(source_opening(result, phi, feats, fp) / gain, 0.0, 1.0)
            log.info("jawOpen: opening per unit key %.4f of the face size", gain)
    for side, vals in eye_closure(result, phi, feats, correspondences).items():
        canon = f"eyeBlink{side.capitalize()}"
        if canon in by_canon:
            out[by_canon[canon]] = vals
    for canon, vals in gaze_keys(result).items():
        if canon in by_canon:
            out[by_canon[canon]] = vals
    return out
