"""Per-character calibration, cached by content hash and reused across takes (numpy + scipy).

The slow part of a shape-key retarget is the character's: correspondences (automatic landmarks render
both heads), the non-rigid registration and each target vertex's binding to the FLAME surface. It depends
on the character's mesh and keys and on the FLAME topology, not on the take, so :func:`calibrate` caches it
in ``cache_dir`` under a sha256 of those inputs (:func:`calibration_key`). A take by any identity of the
same topology reuses it: the binding lives on the topology, and the take's own deformation basis is carried
through it (:mod:`.features`, :func:`.shapekeys.retarget_shape_keys`).

Also here: the lip and eyelid points that give the mouth opening and the eye closure on both heads
(:func:`mouth_pair`), used to drive jawOpen / eyeBlink and to measure the retarget.
"""
from __future__ import annotations

import hashlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..contract.errors import ContractError
from ..contract.npzio import read_npz, write_npz_atomic
from ..contract.result import TrackingResult
from ..contract.events import ProgressCallback
from .registration import Similarity
from .shapekeys import Correspondences, Registration, ShapeKeyTarget, auto_correspondences, register_target

log = logging.getLogger(__name__)

CALIBRATION_FORMAT = "flamecap.retarget_calibration"
CALIBRATION_VERSION = 2   # 2: robust landmark similarity
# MediaPipe FaceMesh ids: inner lips (upper, lower); eyelids (upper, lower) of the subject's left / right eye
MP_LIPS = (13, 14)
MP_LIDS = {"left": (386, 374), "right": (159, 145)}


@dataclass
class Calibration:
    """What a character needs for any take: the registration/binding, the correspondences it came from
    and where it is cached. ``seconds``: time the calibration took (0 when loaded from the cache)."""

    registration: Registration
    correspondences: Correspondences
    key: str
    seconds: float = 0.0
    cached: bool = False


def _digest(h, a) -> None:
    a = np.ascontiguousarray(a)
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())


def calibration_key(result: TrackingResult, target: ShapeKeyTarget, pairs=None) -> str:
    """sha256 of the character (vertices, triangles, key names and deltas), the FLAME topology (faces, vertex
    count), the given correspondences and the calibration version."""
    h = hashlib.sha256(f"{CALIBRATION_FORMAT}/{CALIBRATION_VERSION}".encode())
    _digest(h, target.vertices.astype(np.float32))
    _digest(h, target.faces.astype(np.int64))
    _digest(h, target.key_deltas.astype(np.float32))
    h.update("\0".join(target.key_names).encode())
    _digest(h, np.asarray(result["head_faces"], np.int64))
    h.update(str(result["head_vertices"].shape[0]).encode())
    if pairs is not None:
        _digest(h, np.asarray(pairs[0], np.int64))
        _digest(h, np.asarray(pairs[1], np.int64))
    return h.hexdigest()


def save_calibration(path: str | os.PathLike, cal: Calibration) -> Path:
    r, c = cal.registration, cal.correspondences
    arrays = {"sim_R": r.similarity.R, "sim_t": r.similarity.t, "registered": r.registered, "face": r.face,
              "bary": r.bary, "weight": r.weight, "flame_faces": r.flame_faces,
              "flame_points": c.flame_points, "target_points": c.target_points}
    if r.local is not None:
        arrays["local"] = r.local
    if c.landmark_id is not None:
        arrays["landmark_id"] = np.asarray(c.landmark_id, np.int64)
    if c.flame_landmarks is not None:
        arrays["flame_landmarks"] = c.flame_landmarks
    meta = {"format": CALIBRATION_FORMAT, "version": CALIBRATION_VERSION, "key": cal.key,
            "scale": float(r.similarity.scale), "landmark_residual": float(r.landmark_residual),
            "surface_residual": float(r.surface_residual), "source": c.source, "seconds": float(cal.seconds)}
    return write_npz_atomic(path, arrays, meta)


def load_calibration(path: str | os.PathLike) -> Calibration | None:
    """The cached calibration, or None when the file is missing, unreadable or from another version."""
    try:
        a, meta = read_npz(path, what="retarget calibration")
    except (ContractError, OSError):
        return None
    if meta.get("format") != CALIBRATION_FORMAT or meta.get("version") != CALIBRATION_VERSION:
        return None
    reg = Registration(similarity=Similarity(float(meta["scale"]), a["sim_R"], a["sim_t"]), registered=a["registered"],
                       face=a["face"], bary=a["bary"], weight=a["weight"],
                       landmark_residual=float(meta["landmark_residual"]),
                       surface_residual=float(meta["surface_residual"]), flame_faces=a["flame_faces"],
                       local=a.get("local"))
    corr = Correspondences(flame_points=a["flame_points"], target_points=a["target_points"],
                           source=str(meta.get("source", "user")), landmark_id=a.get("landmark_id"),
                           flame_landmarks=a.get("flame_landmarks"))
    return Calibration(registration=reg, correspondences=corr, key=str(meta["key"]), cached=True)


def calibrate(result: TrackingResult, target: ShapeKeyTarget, pairs=None, *, cache_dir: str | os.PathLike | None = None,
              nonrigid: bool = True, flame_albedo: np.ndarray | None = None,
              progress: ProgressCallback | None = None) -> Calibration:
    """Correspondences (``pairs`` = (FLAME vertex ids, target vertex ids), else automatic) and registration,
    from ``cache_dir`` when this character was calibrated before (None: no cache)."""
    key = calibration_key(result, target, pairs) + ("" if nonrigid else "-rigid")
    path = Path(cache_dir) / f"{key}.npz" if cache_dir is not None else None
    if path is not None and path.is_file():
        cal = load_calibration(path)
        if cal is not None and cal.key == key:
            log.info("calibration of '%s' from the cache (%s)", target.name, path)
            return cal
    t0 = time.perf_counter()
    if pairs is not None:
        corr = Correspondences.from_vertices(result, target, *pairs)
    else:
        corr = auto_correspondences(result, target, flame_albedo=flame_albedo,
                                    progress=None if progress is None else
                                    (lambda s, f, m: progress("calibrate", 0.8 * f, m)))
    if progress:
        progress("calibrate", 0.85, "registering FLAME onto the character")
    reg = register_target(result, target, corr, nonrigid=nonrigid)
    cal = Calibration(registration=reg, correspondences=corr, key=key, seconds=time.perf_counter() - t0)
    if path is not None:
        save_calibration(path, cal)
    log.info("calibrated '%s' in %.1f s", target.name, cal.seconds)
    return cal


# ------------------------------------------------------------------------------------------------
# mouth opening / eye closure points
# ------------------------------------------------------------------------------------------------
def face_size(result: TrackingResult) -> float:
    """Diagonal of the FLAME face region's bounding box (metres): the length mouth openings are divided by."""
    v = np.asarray(result["head_vertices"], np.float64)
    front = v[:, 2] >= float(result["head_joints"][1][2])
    return float(np.linalg.norm(np.ptp(v[front], axis=0)))


def mouth_pair(points: np.ndarray, opening: np.ndarray, lateral: np.ndarray, front: np.ndarray,
               max_rest: float, up: np.ndarray, near: np.ndarray | None = None) -> tuple[int, int]:
    """(upper, lower) lip vertex: among front vertices on the midline (``lateral`` (N,) signed distance from
    it, within 3 % of the face's width), the pairs closer than ``max_rest`` at rest that ``opening`` (N, 3), a
    mouth-opening deformation, parts vertically (along ``up`` (3,)) nearly (80 %) as much as the most, and
    of those the one nearest the midline (to 0.1 % of the width), then the closest at rest — the lips where
    they meet in the middle of the mouth, whichever key opens them. Not simply the
    nearest pair: on heads with teeth and a mouth cavity that is inside the mouth; off the midline the lips
    part less; and a key that moves the teeth back "parts" a lip from a tooth, but not vertically.
    ``near`` (N,) bool limits the search (to the mouth). (-1, -1) when nothing parts."""
    from scipy.spatial import cKDTree
    width = float(np.ptp(lateral[front])) if front.any() else 0.0
    mid = np.flatnonzero(front & (np.abs(lateral) <= 0.03 * width) & (True if near is None else near))
    pairs = cKDTree(points[mid]).query_pairs(max_rest, output_type="ndarray") if mid.size > 1 else np.zeros((0, 2), int)
    if len(pairs) == 0:
        return -1, -1
    i, j = mid[pairs[:, 0]], mid[pairs[:, 1]]
    higher = (points[i] - points[j]) @ up >= 0
    i, j = np.where(higher, i, j), np.where(higher, j, i)                 # i above j
    gain = (opening[i] - opening[j]) @ up
    if gain.max() <= 0:
        return -1, -1
    ok = np.flatnonzero(gain >= 0.8 * gain.max())
    off = np.abs(lateral[i[ok]]) + np.abs(lateral[j[ok]])
    rest = np.linalg.norm(points[i[ok]] - points[j[ok]], axis=1)
    best = ok[np.lexsort((rest, np.round(off / max(width, 1e-20), 3)))[0]]
    return int(i[best]), int(j[best])


def front_visible(points: np.ndarray, faces: np.ndarray, size: int = 256) -> np.ndarray:
    """(N,) bool: the vertex is seen by a camera in front of the face (``points`` in the FLAME head frame,
    +Y up, +Z front) — the outer surface, not the teeth, tongue or mouth cavity behind the lips."""
    from ..render.raster import vertex_visibility
    p = np.asarray(points, np.float64)
    lo, hi = p.min(0), p.max(0)
    extent = float(np.max(hi[:2] - lo[:2]))
    dist = 10.0 * max(extent, 1e-9)
    centre = 0.5 * (lo + hi)
    cam = np.stack([p[:, 0] - centre[0], centre[1] - p[:, 1], hi[2] + dist - p[:, 2]], 1)
    f = 0.9 * size * (dist / extent)
    K = np.array([[f, 0.0, size / 2], [0.0, f, size / 2], [0.0, 0.0, 1.0]])
    return vertex_visibility(cam, faces, K, (size, size), tol=3e-3 * extent)


def nearest_vertex(vertices: np.ndarray, points: np.ndarray) -> np.ndarray:
    from scipy.spatial import cKDTree
    return cKDTree(vertices).query(np.asarray(points, np.float64).reshape(-1, 3))[1]
