"""Retarget a tracked FLAME performance onto any shape-key character (ARKit-52 or a custom set).

Pipeline (all numpy/scipy, no Blender):

1. correspondences FLAME ↔ target: user-given vertex pairs / points, or automatic (MediaPipe landmarks
   detected on renders of both neutral meshes, see :func:`auto_correspondences`);
2. :func:`register_target`: Umeyama similarity, then non-rigid ICP of the FLAME surface onto the target face;
   each target vertex is bound to its closest point of the registered FLAME surface (falloff with distance);
3. :func:`retarget_shape_keys`: per frame, the FLAME face deformation (expression, jaw, eyes, eyelids in the
   head frame) is interpolated at the bound points, scaled and rotated by the similarity, and the target's
   own keys are solved for (bounded, temporally smooth least squares, :mod:`.solve`), then the per-channel
   gain/offset/limits apply.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from ..contract.events import ProgressCallback
from ..contract.result import TrackingResult
from ..errors import InputError, NoFaceError
from .arkit import ChannelMap, match_arkit_names
from .registration import Similarity, closest_points, local_affines, nonrigid_icp, robust_similarity
from .solve import SolveConfig

log = logging.getLogger(__name__)

# A target whose landmarks cannot be matched by a similarity better than this (RMS residual / RMS spread of
# the landmarks) is not a face, or the correspondences are wrong.
MAX_LANDMARK_RESIDUAL = 0.2
# After non-rigid registration: RMS distance of the FLAME face to the target surface / head size.
MAX_SURFACE_RESIDUAL = 0.05
# Weight of the lip-gap equation (:func:`.drive.mouth_gap_row`) as a share of the vertex rows: the gap is
# what an audience reads of a talking mouth, so it must win over the carried deformation near the lips.
MOUTH_GAP_WEIGHT = 0.2


@dataclass
class ShapeKeyTarget:
    """A character mesh: neutral vertices (N, 3) in its own frame/units, triangles (M, 3), shape keys as
    deltas from the neutral (K, N, 3) with their names. ``name`` is used in messages."""

    vertices: np.ndarray
    faces: np.ndarray
    key_names: list[str]
    key_deltas: np.ndarray
    name: str = "target"
    albedo: np.ndarray | None = None   # (N, 3) vertex colours in [0, 1] for automatic landmark detection

    def __post_init__(self):
        self.vertices = np.asarray(self.vertices, dtype=np.float64)
        self.faces = np.asarray(self.faces, dtype=np.int64)
        self.key_deltas = np.asarray(self.key_deltas, dtype=np.float64).reshape(-1, *self.vertices.shape)
        self.key_names = [str(n) for n in self.key_names]
        n = self.vertices.shape[0]
        if self.vertices.ndim != 2 or self.vertices.shape[1] != 3 or n < 4:
            raise InputError(f"'{self.name}' is not a mesh ({self.vertices.shape} vertices); pick a mesh object")
        if self.faces.ndim != 2 or self.faces.shape[1] != 3 or len(self.faces) == 0:
            raise InputError(f"'{self.name}' has no faces; pick a mesh with polygons")
        if self.faces.min() < 0 or self.faces.max() >= n:
            raise InputError(f"'{self.name}': face indices outside 0..{n - 1}")
        if len(self.key_names) == 0:
            raise InputError(f"'{self.name}' has no shape keys; add shape keys (e.g. the ARKit-52 set) to it, "
                             f"or drive a FLAME head / armature instead")
        if len(self.key_names) != self.key_deltas.shape[0]:
            raise InputError(f"'{self.name}': {len(self.key_names)} key names for {self.key_deltas.shape[0]} keys")
        if not (np.all(np.isfinite(self.vertices)) and np.all(np.isfinite(self.key_deltas))):
            raise InputError(f"'{self.name}' has NaN/inf coordinates; fix the mesh")
        if self.albedo is not None:
            self.albedo = np.asarray(self.albedo, dtype=np.float64)
            if self.albedo.shape != self.vertices.shape or not np.all(np.isfinite(self.albedo)):
                raise InputError(f"'{self.name}': vertex colours {self.albedo.shape} do not match its "
                                 f"{n} vertices; drop them or re-export the mesh")

    @property
    def size(self) -> float:
        return float(np.linalg.norm(np.ptp(self.vertices, axis=0)))

    def arkit_names(self) -> dict[str, str]:
        return match_arkit_names(self.key_names)


@dataclass
class Correspondences:
    """Matching points: FLAME surface points (L, 3) in the result's head rest frame and target points
    (L, 3) in the target's frame. Build with :meth:`from_vertices` for vertex-index pairs."""

    flame_points: np.ndarray
    target_points: np.ndarray
    flame_vertex_index: np.ndarray | None = None   # (L,) when given as FLAME vertex indices
    source: str = "user"
    landmark_id: np.ndarray | None = None          # (L,) MediaPipe point ids when detected automatically
    flame_landmarks: np.ndarray | None = None      # (478, 3) every MediaPipe point on the FLAME head (NaN: not found)

    @classmethod
    def from_vertices(cls, result: TrackingResult, target: ShapeKeyTarget, flame_vertices, target_vertices,
                      source: str = "user") -> "Correspondences":
        fv = np.asarray(flame_vertices, dtype=np.int64).reshape(-1)
        tv = np.asarray(target_vertices, dtype=np.int64).reshape(-1)
        V = result["head_vertices"].shape[0]
        if fv.shape != tv.shape:
            raise InputError(f"{fv.size} FLAME vertices but {tv.size} target vertices; give them in pairs")
        if fv.size and (fv.min() < 0 or fv.max() >= V):
            raise InputError(f"FLAME correspondence vertex outside 0..{V - 1}")
        if tv.size and (tv.min() < 0 or tv.max() >= len(target.vertices)):
            raise InputError(f"target correspondence vertex outside 0..{len(target.vertices) - 1}")
        return cls(flame_points=np.asarray(result["head_vertices"], np.float64)[fv],
                   target_points=target.vertices[tv], flame_vertex_index=fv, source=source)


@dataclass
class Registration:
    """FLAME head → target: similarity, registered FLAME vertices (V, 3) in the target frame, and each
    target vertex's binding to the FLAME surface: face (N,), bary (N, 3), weight (N,) in [0, 1]."""

    similarity: Similarity
    registered: np.ndarray
    face: np.ndarray
    bary: np.ndarray
    weight: np.ndarray
    landmark_residual: float      # relative (see MAX_LANDMARK_RESIDUAL)
    surface_residual: float       # relative (see MAX_SURFACE_RESIDUAL)
    flame_faces: np.ndarray = field(repr=False, default=None)
    local: np.ndarray | None = field(repr=False, default=None)   # (N, 3, 3) registration Jacobian per target vertex

    def transfer(self, displacements: np.ndarray) -> np.ndarray:
        """FLAME displacements (T, V, 3) (head rest frame, metres) → target displacements (T, N, 3): the
        global similarity, then the non-rigid registration's local rotation/scale at each bound point."""
        tri = self.flame_faces[self.face]                                    # (N, 3)
        d = np.einsum("nk,tnkc->tnc", self.bary, displacements[:, tri])
        d = self.similarity.apply_vectors(d)
        if self.local is not None:
            d = np.einsum("nab,tnb->tna", self.local, d)
        return d * self.weight[None, :, None]


def _face_region(result: TrackingResult) -> np.ndarray:
    """FLAME vertices in front of the neck joint (the face half of the head)."""
    v = np.asarray(result["head_vertices"], np.float64)
    return v[:, 2] >= float(result["head_joints"][1][2])


def register_target(result: TrackingResult, target: ShapeKeyTarget, correspondences: Correspondences, *,
                    nonrigid: bool = True, stiffness: tuple[float, ...] = (50.0, 20.0, 8.0, 3.0, 1.0),
                    falloff: tuple[float, float] = (0.03, 0.12)) -> Registration:
    """Register the result's neutral head onto the target's neutral mesh (see module docstring).

    ``falloff`` (near, far) as fractions of the head size: target vertices farther than ``far`` from the
    registered FLAME surface get no motion, closer than ``near`` the full motion. Raises
    :class:`NoFaceError` when the target does not look like a face."""
    c = correspondences
    if len(c.flame_points) < 4:
        raise InputError(f"{len(c.flame_points)} correspondences; need at least 4 spread-out points "
                         f"(eye corners, nose tip, mouth corners, chin)")
    sim, inl = robust_similarity(c.flame_points, c.target_points)
    mapped = sim.apply(c.flame_points[inl])
    tp = c.target_points[inl]
    spread = np.sqrt(np.mean(np.sum((tp - tp.mean(0)) ** 2, 1)))
    lres = float(np.sqrt(np.mean(np.sum((mapped - tp) ** 2, 1))) / max(spread, 1e-20))
    log.info("landmark similarity fit: scale %.4g, residual %.3f of landmark spread (%d of %d pairs)", sim.scale,
             lres, int(inl.sum()), len(inl))
    if lres > MAX_LANDMARK_RESIDUAL:
        raise NoFaceError(f"'{target.name}' does not look like a face: its landmarks match the FLAME face only "
                          f"to {100 * lres:.0f}% of their spread (limit {100 * MAX_LANDMARK_RESIDUAL:.0f}%); "
                          f"pick the character's head mesh or fix the correspondences")
    flame_v = np.asarray(result["head_vertices"], np.float64)
    flame_f = np.asarray(result["head_faces"], np.int64)
    x = sim.apply(flame_v)
    x_rigid = x
    region = _face_region(result)
    head_size = float(np.linalg.norm(np.ptp(x, axis=0)))
    if nonrigid:
        lm_idx = c.flame_vertex_index
        lm_pts = c.target_points
        if lm_idx is None:  # points: bind them to their nearest FLAME vertex
            lm_idx = np.argmin(np.sum((flame_v[None] - c.flame_points[:, None]) ** 2, -1), axis=1)
        nr = nonrigid_icp(x, flame_f, target.vertices, target.faces, lm_idx, lm_pts, stiffness=stiffness,
                          region=region)
        x = nr.vertices
    cp_face = closest_points(x[region], target.vertices, target.faces)
    sres = float(np.sqrt(np.mean(cp_face.distance ** 2)) / max(head_size, 1e-20))
    log.info("surface registration residual: %.4f of head size", sres)
    if sres > MAX_SURFACE_RESIDUAL:
        raise NoFaceError(f"'{target.name}' does not look like a face: after registration the FLAME face is "
                          f"{100 * sres:.1f}% of the head size from its surface (limit "
                          f"{100 * MAX_SURFACE_RESIDUAL:.0f}%); pick the character's head mesh")
    bind = closest_points(target.vertices, x, flame_f)
    near, far = falloff[0] * head_size, falloff[1] * head_size
    weight = np.clip((far - bind.distance) / max(far - near, 1e-20), 0.0, 1.0)
    local = None
    if nonrigid:
        loc_v = local_affines(x_rigid, x, flame_f)                      # (V, 3, 3)
        corner = flame_f[bind.face, np.argmax(bind.bary, axis=1)]
        local = loc_v[corner]
    return Registration(similarity=sim, registered=x, face=bind.face, bary=bind.bary, weight=weight,
                        landmark_residual=lres, surface_residual=sres, flame_faces=flame_f, local=local)


@dataclass
class ShapeKeyAnimation:
    """Solved key values: names (K,), weights (T, K) after gain/offset/limits, raw (T, K) as solved,
    residual (T,) RMS fit error per frame (target units), frame_index (T,), fps; ``driven``: the keys set
    from pose features (jaw opening, eye closure, gaze) rather than solved."""

    names: list[str]
    weights: np.ndarray
    raw: np.ndarray
    residual: np.ndarray
    frame_index: np.ndarray
    fps: float
    registration: Registration | None = None
    driven: list[str] = field(default_factory=list)
    timings: dict = field(default_factory=dict)

    def arkit(self) -> dict[str, np.ndarray]:
        """Canonical ARKit name → (T,) for the keys that are ARKit variants."""
        m = match_arkit_names(self.names)
        return {m[n]: self.weights[:, k] for k, n in enumerate(self.names) if n in m}


@dataclass
class CharacterBasis:
    """A character's keys and the take's FLAME feature basis in the character's space, as normal equations:
    G = AᵀA (K, K), P = AᵀΦ (K, F), Q = ΦᵀΦ (F, F), M = rows of A. Built once per (character, take head);
    every frame's solve then needs only its features (F,)."""

    names: list[str]
    G: np.ndarray
    P: np.ndarray
    Q: np.ndarray
    M: int
    phi_flame: np.ndarray = field(repr=False)     # (V, 3, F) the take's basis on the FLAME head


def character_basis(result: TrackingResult, target: ShapeKeyTarget, registration: Registration,
                    keys: list[str] | None = None) -> CharacterBasis:
    """The keys that move the face (all, or ``keys``) and the feature basis carried onto the character."""
    from .features import feature_basis
    names = list(target.key_names) if keys is None else list(keys)
    missing = [n for n in names if n not in target.key_names]
    if missing:
        raise InputError(f"'{target.name}' has no shape key(s) {missing[:5]}; available: {target.key_names[:8]}...")
    idx = [target.key_names.index(n) for n in names]
    basis = target.key_deltas[idx] * registration.weight[None, :, None]
    moving = np.linalg.norm(basis.reshape(len(idx), -1), axis=1) > 1e-9 * max(target.size, 1e-12)
    if not moving.any():
        raise InputError(f"none of the shape keys of '{target.name}' moves its face; check that the keys are "
                         f"on the head mesh and are not empty")
    names = [n for n, m in zip(names, moving) if m]
    A = basis[moving].reshape(int(moving.sum()), -1).T                       # (3N, K)
    phi = feature_basis(result)                                               # (V, 3, F)
    Pc = registration.transfer(np.moveaxis(phi, 2, 0)).reshape(phi.shape[2], -1).T   # (3N, F)
    return CharacterBasis(names=names, G=A.T @ A, P=A.T @ Pc, Q=Pc.T @ Pc, M=A.shape[0], phi_flame=phi)


def retarget_shape_keys(result: TrackingResult, target: ShapeKeyTarget,
                        correspondences: Correspondences | None = None, *,
                        registration: Registration | None = None, channels: ChannelMap | None = None,
                        solve: SolveConfig = SolveConfig(), keys: list[str] | None = None,
                        flame_albedo: np.ndarray | None = None, split_jaw: bool = True, drive: bool = True,
                        basis: CharacterBasis | None = None,
                        progress: ProgressCallback | None = None) -> ShapeKeyAnimation:
    """Solve the target's shape-key values for every frame of ``result``.

    ``keys`` restricts the solve to these key names (default: all keys that move the face). Without
    ``correspondences``/``registration`` the automatic landmark detection runs (:func:`auto_correspondences`;
    ``flame_albedo`` (V, 3) colours the FLAME head's renders); :func:`.calibrate.calibrate` does the same with
    a cache. ``split_jaw`` (default) transfers the jaw's deformation and the closed-jaw expression
    deformation separately, as a linear shape-key rig composes them, through the linear feature basis
    (:mod:`.features`; no per-frame vertex work); False transfers FLAME's full posed deformation frame by
    frame (slow; for comparison). ``drive`` (default) sets ARKit jawOpen, eyeBlink* and eyeLook* from the
    take's mouth opening, eye closure and gaze (:mod:`.drive`), holds the character's lip gap to the source's
    (:func:`.drive.mouth_gap_row`) and solves the other keys around them."""
    import time
    from .drive import driven_values, mouth, mouth_gap_row
    from .features import frame_features
    from .solve import NormalEquations, normal_equations, solve_normal, with_row

    channels = channels or ChannelMap()
    t0 = time.perf_counter()
    if registration is None:
        if correspondences is None:
            if progress:
                progress("calibrate", 0.0, "detecting landmarks on the target")
            correspondences = auto_correspondences(result, target, flame_albedo=flame_albedo, progress=progress)
        if progress:
            progress("calibrate", 0.9, "registering FLAME onto the target")
        registration = register_target(result, target, correspondences)
    t1 = time.perf_counter()
    if progress:
        progress("solve", 0.0, "carrying the FLAME deformation basis onto the character")
    cb = basis if basis is not None else character_basis(result, target, registration, keys)
    names = cb.names
    T = result.n_frames
    feats = frame_features(result)
    t2 = time.perf_counter()
    if split_jaw:
        ne = NormalEquations(G=cb.G, B=feats @ cb.P.T, dd=np.einsum("tf,fg,tg->t", feats, cb.Q, feats), M=cb.M)
    else:
        from .deform import face_displacements
        idx = [target.key_names.index(n) for n in names]
        kb = target.key_deltas[idx] * registration.weight[None, :, None]
        targets = np.empty((T, len(target.vertices), 3))
        for s in range(0, T, 128):
            targets[s:s + 128] = registration.transfer(face_displacements(result, np.arange(s, min(s + 128, T))))
        ne = normal_equations(kb, targets)
    pinned = {}
    if drive:
        lips = mouth(result, target, registration, names, cb.phi_flame, feats)
        pinned = driven_values(result, target, names, cb.phi_flame, feats, lips, correspondences)
        if lips is not None:
            ne = with_row(ne, *mouth_gap_row(lips, target, names), MOUTH_GAP_WEIGHT * ne.M)
    lo, hi = channels.bounds(names)
    t_drive = time.perf_counter()
    if progress:
        progress("solve", 0.5, f"solving {len(names)} keys over {T} frames")
    sol = solve_normal(ne, lo, hi, solve, pinned={names.index(n): v for n, v in pinned.items()})
    out = channels.apply(names, sol.weights)
    t3 = time.perf_counter()
    if progress:
        progress("solve", 1.0, "done")
    return ShapeKeyAnimation(names=names, weights=out, raw=sol.weights, residual=sol.residual,
                             frame_index=np.asarray(result["frame_index"]), fps=result.fps,
                             registration=registration, driven=sorted(pinned),
                             timings={"calibrate_s": t1 - t0, "basis_s": t2 - t1, "drive_s": t_drive - t2,
                                      "solve_s": t3 - t_drive,
                                      "iterations": sol.iterations})


def auto_correspondences(result: TrackingResult, target: ShapeKeyTarget, target_axes: str = "blender", *,
                         flame_albedo: np.ndarray | None = None, target_albedo: np.ndarray | None = None,
                         config=None, progress: ProgressCallback | None = None) -> Correspondences:
    """MediaPipe landmarks self-calibrated on renders of both neutral meshes (``flamecap.binding.mediapipe``), paired by
    landmark id. ``target_axes``: "blender" (+Z up, −Y front: what the add-on exports) or "flame" (+Y up, +Z
    front). The target is centred and scaled to the FLAME head's size for rendering, the points mapped back.

    ``flame_albedo`` (V, 3) / ``target_albedo`` (N, 3) in [0, 1]: per-vertex colours for the renders (default:
    ``target.albedo`` when set, else a uniform skin tone) — heads whose shape alone is not enough for the
    detector (e.g. the synthetic head) need their colours. ``config``: an
    :class:`flamecap.binding.mediapipe.CalibrationConfig` (views, lights). Landmarks kept on only one side are
    dropped. Raises :class:`NoFaceError` when no face is detected on the target."""
    from ..contract.conventions import blender_to_flame_points, flame_to_blender_points
    from ..binding.mediapipe import CalibrationConfig, calibrate_mediapipe_embedding  # heavy: renderer + MediaPipe

    if target_axes not in ("blender", "flame"):
        raise InputError(f"target_axes must be 'blender' or 'flame' (got '{target_axes}')")
    config = config or CalibrationConfig()
    fv = np.asarray(result["head_vertices"], np.float64)
    target_albedo = target.albedo if target_albedo is None else target_albedo
    for what, alb, n in (("FLAME", flame_albedo, len(fv)), ("target", target_albedo, len(target.vertices))):
        if alb is not None and np.shape(alb) != (n, 3):
            raise InputError(f"{what} albedo has shape {np.shape(alb)}; expected ({n}, 3) colours in 0..1")

    def sub(lo, hi):
        if progress is None:
            return None
        return lambda stage, frac, msg: progress("embedding", lo + (hi - lo) * frac, msg)

    try:
        flame = calibrate_mediapipe_embedding(fv, np.asarray(result["head_faces"], np.int64), flame_albedo, config,
                                              sub(0.0, 0.5)).positions
    except NoFaceError:
        raise NoFaceError("no face found on renders of the tracked FLAME head; pass its model's vertex albedo "
                          "(flame_albedo) or give correspondences by hand") from None
    tv = blender_to_flame_points(target.vertices) if target_axes == "blender" else target.vertices
    c_t = 0.5 * (tv.min(0) + tv.max(0))
    c_f = 0.5 * (fv.min(0) + fv.max(0))
    k = np.linalg.norm(np.ptp(fv, 0)) / max(np.linalg.norm(np.ptp(tv, 0)), 1e-20)
    up = "+Z up, facing -Y" if target_axes == "blender" else "+Y up, facing +Z"
    try:
        tp = calibrate_mediapipe_embedding((tv - c_t) * k + c_f, target.faces, target_albedo, config,
                                           sub(0.5, 1.0)).positions
    except NoFaceError:
        raise NoFaceError(f"no face found on renders of '{target.name}'; it does not look like a face (check "
                          f"that it is {up}), or give correspondences by hand") from None
    tp = (tp - c_f) / k + c_t
    tp = flame_to_blender_points(tp) if target_axes == "blender" else tp
    ok = np.all(np.isfinite(flame), 1) & np.all(np.isfinite(tp), 1)
    if ok.sum() < 8:
        raise NoFaceError(f"only {int(ok.sum())} face landmarks found on '{target.name}'; give correspondences "
                          f"by hand (landmark vertices)")
    log.info("automatic correspondences: %d MediaPipe landmarks on both meshes", int(ok.sum()))
    return Correspondences(flame_points=flame[ok], target_points=tp[ok], source="auto",
                           landmark_id=np.nonzero(ok)[0], flame_landmarks=flame)
