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
from dataclasses import dataclass

import numpy as np

from ..contract.arkit import match_arkit_names
from ..contract.conventions import axis_angle_to_matrix
from ..contract.result import JOINT_NAMES, TrackingResult
from ..contract.rotations import fill_invalid, gaze_angles
from .calibrate import MP_LIDS, face_size, front_visible, mouth_pair, nearest_vertex
from .features import feature_basis, has_eyelids

log = logging.getLogger(__name__)

EYE_LOOK_RANGE_DEG = 30.0
_TEST_JAW_RAD = 0.2
# the lips meet closer than this (fraction of the face size) at rest
MOUTH_REST = 0.02
# the character's lips are this close to where the registration put FLAME's (fraction of the face size)
MOUTH_RADIUS = 0.1
# a key that parts the lips by less than this (fraction of the face size) does not open the mouth
MIN_PARTING = 0.01


def flame_mouth_pair(result: TrackingResult, phi: np.ndarray) -> tuple[int, int]:
    """(upper, lower) lip vertex of the FLAME head (see :func:`.calibrate.mouth_pair`)."""
    v0 = np.asarray(result["head_vertices"], np.float64)
    front = (v0[:, 2] >= float(result["head_joints"][1][2])) & front_visible(v0, result["head_faces"])
    return mouth_pair(v0, _jaw_delta(result, phi), v0[:, 0] - float(np.median(v0[front, 0])), front,
                      MOUTH_REST * face_size(result), np.array([0.0, 1.0, 0.0]))


def _jaw_delta(result: TrackingResult, phi: np.ndarray) -> np.ndarray:
    off = phi.shape[2] - 27
    f = (axis_angle_to_matrix(np.array([_TEST_JAW_RAD, 0.0, 0.0])) - np.eye(3)).reshape(9)
    return phi[:, :, off:off + 9] @ f


def _character_mouth_frame(target, registration, result: TrackingResult, flame_pair: tuple[int, int]):
    """The arguments of :func:`.calibrate.mouth_pair` after the opening, for the character: lateral (N,),
    front (N,), max_rest, up (3,) and near (N,): within MOUTH_RADIUS of where the registration put FLAME's
    lips — a key that stretches the brows or the nose "parts" points there too."""
    sim = registration.similarity
    local = (target.vertices - sim.t) @ sim.R / sim.scale            # character points in the FLAME frame
    front = (registration.weight > 0.5) & front_visible(local, target.faces)
    mid = float(np.median(local[front, 0])) if front.any() else 0.0
    face = sim.scale * face_size(result)
    centre = registration.registered[list(flame_pair)].mean(0)
    near = np.linalg.norm(target.vertices - centre, axis=1) <= MOUTH_RADIUS * face
    return local[:, 0] - mid, front, MOUTH_REST * face, sim.R[:, 1], near


def character_mouth_pair(target, registration, opening: np.ndarray, result: TrackingResult) -> tuple[int, int]:
    """(upper, lower) lip vertex of the character from a mouth-opening key delta (N, 3)."""
    fp = flame_mouth_pair(result, feature_basis(result))
    if min(fp) < 0:
        return -1, -1
    return mouth_pair(target.vertices, opening, *_character_mouth_frame(target, registration, result, fp))


def _parting(points: np.ndarray, delta: np.ndarray, pair: tuple[int, int]) -> float:
    u, l = pair
    return float(np.linalg.norm(points[u] + delta[u] - points[l] - delta[l]) - np.linalg.norm(points[u] - points[l]))


def character_lips(result: TrackingResult, target, registration, names: list[str],
                   flame_pair: tuple[int, int]) -> tuple[int, int, str] | None:
    """(upper, lower, key): the character's lips and the key that opens them — its jawOpen when that parts
    them, else the key among ``names`` that parts them most, vertically (characters that open the mouth with
    visemes or their own mouth shapes and ship an empty jawOpen). None when no key parts them by
    MIN_PARTING of the face size (a character that cannot open its mouth)."""
    jaw = [n for n, c in match_arkit_names(names).items() if c == "jawOpen"]
    frame = _character_mouth_frame(target, registration, result, flame_pair)
    least = MIN_PARTING * registration.similarity.scale * face_size(result)
    for keys in (jaw, names):
        best = None
        for name in keys:
            delta = target.key_deltas[target.key_names.index(name)]
            pair = mouth_pair(target.vertices, delta, *frame)
            if min(pair) >= 0:
                g = float((delta[pair[0]] - delta[pair[1]]) @ frame[3])
                if g >= least and (best is None or g > best[0]):
                    best = (g, pair, name)
        if best is not None:
            return (*best[1], best[2])
    return None


def source_opening(result: TrackingResult, phi: np.ndarray, feats: np.ndarray, pair: tuple[int, int]) -> np.ndarray:
    """(T,) lip gap change from rest over the face size, on the source head."""
    v0 = np.asarray(result["head_vertices"], np.float64)
    u, l = pair
    pu = v0[u] + np.einsum("cf,tf->tc", phi[u], feats)
    pl = v0[l] + np.einsum("cf,tf->tc", phi[l], feats)
    return (np.linalg.norm(pu - pl, axis=1) - np.linalg.norm(v0[u] - v0[l])) / face_size(result)


@dataclass
class Mouth:
    """The take's mouth opening and where the character's lips are: ``opening`` (T,) the source's lip gap
    change over its face size; the character's ``lips`` (upper, lower) vertex, the ``key`` that opens them,
    ``face`` its face size (the source's, scaled by the registration) and its ``up`` direction (3,)."""

    opening: np.ndarray
    lips: tuple[int, int]
    key: str
    face: float
    up: np.ndarray


def mouth(result: TrackingResult, target, registration, names: list[str], phi: np.ndarray,
          feats: np.ndarray) -> Mouth | None:
    """:class:`Mouth` for this take and character; None when either head's lips cannot be found."""
    fp = flame_mouth_pair(result, phi)
    lips = character_lips(result, target, registration, names, fp) if min(fp) >= 0 else None
    if lips is None:
        return None
    return Mouth(opening=source_opening(result, phi, feats, fp), lips=lips[:2], key=lips[2],
                 face=registration.similarity.scale * face_size(result), up=registration.similarity.R[:, 1])


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


def driven_values(result: TrackingResult, target, names: list[str], phi: np.ndarray, feats: np.ndarray,
                  mouth: Mouth | None = None, correspondences=None) -> dict[str, np.ndarray]:
    """Key name (the character's spelling) → (T,) value for the keys driven from pose features."""
    arkit = match_arkit_names(names)
    by_canon = {c: n for n, c in arkit.items()}
    out: dict[str, np.ndarray] = {}
    if mouth is not None and by_canon.get("jawOpen") == mouth.key:
        gain = _parting(target.vertices, target.key_deltas[target.key_names.index(mouth.key)], mouth.lips) / mouth.face
        if gain > 1e-4:
            out[mouth.key] = np.clip(mouth.opening / gain, 0.0, 1.0)
        log.info("jawOpen: opening per unit key %.4f of the face size", gain)
    for side, vals in eye_closure(result, phi, feats, correspondences).items():
        canon = f"eyeBlink{side.capitalize()}"
        if canon in by_canon:
            out[by_canon[canon]] = vals
    for canon, vals in gaze_keys(result).items():
        if canon in by_canon:
            out[by_canon[canon]] = vals
    return out


def mouth_gap_row(mouth: Mouth, target, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The lip gap as one linear equation of the keys: (a (K,), b (T,)) with a·wₜ ≈ bₜ — the parting of the
    character's lips (vertically, as they are found) per unit of each key of ``names``, and the source's lip
    opening scaled to the character. The deformation carried through the binding does not open a mouth
    whose lips sit away from FLAME's (stylised faces: the lips of both bind to one FLAME point), so the
    solve would close it with other keys; this row holds the gap."""
    u, l = mouth.lips
    D = target.key_deltas[[target.key_names.index(n) for n in names]][:, [u, l]]    # (K, 2, 3)
    return (D[:, 0] - D[:, 1]) @ mouth.up, mouth.opening * mouth.face
