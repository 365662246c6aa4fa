"""MediaPipe's 478 points → a head mesh, for any head.

Self-calibration (every head):

1. Render the neutral mesh (Lambert-shaded with ``vertex_albedo`` when the model has it; otherwise a skin
   tone with painted eyes — sclera, iris and pupil about each eyeball's forward axis, dark lash lines where
   the lid skin meets the eyeball — and brows above the eyes, all found from the rig, not from a detector)
   with the software rasterizer from a spread of views (yaw × pitch) under several lights.
2. Run MediaPipe FaceMesh (static image mode, refine) on every render.
3. Back-project each detected 2D point onto the surface, restricted to the part of the head the point
   describes (:data:`POINT_PARTS`): iris points onto the eyeballs, lid points onto lid skin (never the
   eyeball the lid margin borders — a lid point bound to the eyeball cannot blink), the lower inner lip onto
   jaw-skinned skin and the upper inner lip onto the rest (both lips bound to one would never open). A hit
   on the wrong part takes the nearest visible vertex of the right part in the image instead. Samples seen
   at a grazing angle (cos < ``min_cos``) or on the background are discarded. The inner lips come from a
   second set of renders with the jaw open (``open_jaw_deg``, FLAME skinning): on the closed neutral mouth
   both lips' points coincide in the image.
4. Combine per point across views robustly: the geometric median (Weiszfeld) of the 3D samples; its spread
   is the median distance of the samples to it. A point is kept when seen in at least ``min_views`` renders
   with a spread of at most ``max_spread_mm`` (points that slide with the view, the silhouette contour,
   are dropped), then re-bound to the closest surface point of its part.

Official embedding: FLAME downloads carry MediaPipe's official embedding for 105 points (``mp_*`` arrays,
see ``flamecap models add --embedding``). ``source="auto"`` (default) binds those 105 points officially and
moves every self-calibrated point (the inner lips among them: the official rows put them on the closed
template's lip line) by the official-minus-calibrated offsets of its official neighbours
(Gaussian weights over rest-space distance), so the bias of MediaPipe on renders (brows, lids) is removed
where the user's download lets it be measured.

Sliding inner lips: the inner-lip rows of ``auto`` and ``self-calibrated`` bindings come with candidate places on their own lip within
``SLIDE_RADIUS_M``; the fitter places them per clip (MediaPipe's inner lip line is a contour whose place on the
lip depends on the opening and on how the face looks, so no one calibrated spot holds on all footage).

Results are cached under ``paths.cache_dir('embeddings')`` keyed by the topology hash, a hash of
``v_template`` (and albedo, skinning), and the calibration settings.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field, replace

import numpy as np

from ..contract.errors import ContractError
from ..contract.events import ProgressCallback
from ..contract.model_format import MODEL_SCHEMA, FlameModelData, topology_hash
from ..contract.npzio import read_npz, write_npz_atomic
from ..errors import ModelError, NoFaceError
from ..geometry import closest_barycentric
from .base import SurfaceBinding, surface_points, with_sliding

log = logging.getLogger(__name__)

N_MP = 478
SLIDE_RADIUS_M = 0.008     # how far an inner-lip point may slide from its calibrated place (lip height ~1 cm)
# 4: points restricted to their part of the head; painted eyes and mouth on models without albedo;
# 5: renders detected by the default (litert) front end instead of the legacy mediapipe package
# 6: painted brows on models without albedo
CALIB_VERSION = 6
SKIN_RGB = (0.87, 0.68, 0.58)
# MediaPipe's inner lip contour (FACEMESH_LIPS, inner ring): bound from the open-mouth renders
UPPER_INNER_LIP = (191, 80, 81, 82, 13, 312, 311, 310, 415)
LOWER_INNER_LIP = (95, 88, 178, 87, 14, 317, 402, 318, 324)
INNER_LIPS = (78, 308) + UPPER_INNER_LIP + LOWER_INNER_LIP
# eye contours (FACEMESH_RIGHT_EYE / FACEMESH_LEFT_EYE; subject's right eye first) and irises
RIGHT_EYE = (33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173)
LEFT_EYE = (263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398)
IRISES = tuple(range(468, 478))
# MediaPipe FaceMesh (478) → iBUG/dlib 68, one MediaPipe point per 68-point: the correspondence commonly used
# to compare the two schemes. Checked against FLAME's two official embeddings on the template: the 51 inner
# points that the 105-point MediaPipe embedding also holds land 0.2–4.9 mm from FLAME's 68-point ones (the two
# annotation conventions differ most on the brows' inner ends and the lower outer lip).
MP_TO_68 = (127, 234, 132, 58, 172, 150, 176, 148, 152, 377, 400, 379, 397, 288, 361, 454, 356,   # jaw line
            70, 63, 105, 66, 107, 336, 296, 334, 293, 300,                                      # brows
            168, 197, 5, 4, 75, 97, 2, 326, 305,                                                # nose
            33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,                          # eyes
            61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,                                # outer mouth
            78, 82, 13, 312, 308, 317, 14, 87)                                                  # inner mouth

# the upper edge of each brow, (lateral, up) from its eye's joint in units of the eye joints' separation: FLAME's
# 68-point brow points (17–21, 22–26) on its template, both sides averaged; and the brow's height
BROW_ARCH = np.array([[-0.200, 0.330], [-0.059, 0.367], [0.100, 0.384], [0.273, 0.347], [0.407, 0.219]])
BROW_HEIGHT = 0.12
# parts of a head (per triangle, from the rig's skinning) and the parts each MediaPipe point may bind to
HEAD, JAW_SKIN, EYEBALL = 0, 1, 2


def _point_parts() -> np.ndarray:
    parts = np.full((N_MP, 3), False)
    parts[:, [HEAD, JAW_SKIN]] = True                      # any skin
    parts[list(IRISES)] = [False, False, True]
    parts[list(RIGHT_EYE + LEFT_EYE)] = [True, True, False]
    parts[list(UPPER_INNER_LIP)] = [True, False, False]
    parts[list(LOWER_INNER_LIP)] = [False, True, False]
    return parts


POINT_PARTS = _point_parts()   # (478, 3) bool: may point k bind to part p


@dataclass(frozen=True)
class CalibrationConfig:
    """Views, lights and robustness thresholds of the self-calibration (see module docstring)."""

    yaws_deg: tuple[float, ...] = (-30.0, -15.0, 0.0, 15.0, 30.0)
    pitches_deg: tuple[float, ...] = (-12.0, 0.0, 12.0)
    lights: tuple[tuple[float, float, float], ...] = ((0.3, -0.4, -1.0), (-0.5, -0.1, -1.0))
    image_size: int = 512
    focal_px: float = 1100.0
    distance_m: float = 0.9
    min_views: int = 3
    max_spread_mm: float = 4.0
    min_cos: float = 0.15
    background: int = 110
    open_jaw_deg: float = 12.0        # jaw opening of the inner-lip renders (models with a jaw)
    open_yaws_deg: tuple[float, ...] = (-20.0, 0.0, 20.0)
    open_pitches_deg: tuple[float, ...] = (-8.0, 8.0)

    def __post_init__(self):
        if not self.yaws_deg or not self.pitches_deg or not self.lights:
            raise ValueError("calibration needs at least one yaw, pitch and light")
        if self.min_views < 1 or self.max_spread_mm <= 0 or self.image_size < 64:
            raise ValueError("min_views >= 1, max_spread_mm > 0 and image_size >= 64 are required")

    @property
    def n_renders(self) -> int:
        return len(self.yaws_deg) * len(self.pitches_deg) * len(self.lights)

    @property
    def n_open_renders(self) -> int:
        return len(self.open_yaws_deg) * len(self.open_pitches_deg) * len(self.lights)

    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.__dict__, sort_keys=True, default=list).encode()).hexdigest()[:8]


@dataclass
class EmbeddingReport:
    """Outcome of a self-calibration. positions (478, 3) model-space metres of the kept points (NaN when
    dropped); n_views (478,) renders that saw each point; spread_mm (478,) median sample distance to the
    robust position (NaN when unseen); kept (478,) bool; binding the kept points' :class:`SurfaceBinding`."""

    binding: SurfaceBinding
    positions: np.ndarray
    n_views: np.ndarray
    spread_mm: np.ndarray
    kept: np.ndarray
    n_renders: int
    n_detected: int
    from_cache: bool = False
    stats: dict = field(default_factory=dict)

    @property
    def n_kept(self) -> int:
        return int(self.kept.sum())

    @property
    def n_dropped(self) -> int:
        return N_MP - self.n_kept

    def summary(self) -> dict:
        seen = self.n_views > 0
        return {"kept": self.n_kept, "dropped": self.n_dropped,
                "dropped_unseen_or_few_views": int((~self.kept & (self.n_views < self.stats.get("min_views", 1))).sum()),
                "dropped_views_disagree": int((~self.kept & seen
                                               & (self.n_views >= self.stats.get("min_views", 1))).sum()),
                "renders": self.n_renders, "renders_with_face": self.n_detected,
                "median_spread_mm_kept": float(np.nanmedian(self.spread_mm[self.kept])) if self.n_kept else None,
                "from_cache": self.from_cache}


def _geometric_median(x: np.ndarray, iters: int = 30) -> np.ndarray:
    """Weiszfeld geometric median of samples (n, 3)."""
    m = np.median(x, axis=0)
    for _ in range(iters):
        d = np.maximum(np.linalg.norm(x - m, axis=1), 1e-9)
        w = 1.0 / d
        m_new = (w[:, None] * x).sum(0) / w.sum()
        if np.linalg.norm(m_new - m) < 1e-8:
            return m_new
        m = m_new
    return m


def closest_surface_binding(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray,
                            k_vertices: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Closest surface point on the mesh for each point (N, 3) → (face_idx (N,), bary (N, 3)).

    Candidates are the triangles touching the ``k_vertices`` nearest vertices (exact for points near the
    surface, which is what bindings need)."""
    from scipy.spatial import cKDTree
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    q = np.asarray(points, np.float64).reshape(-1, 3)
    if len(q) == 0:
        return np.zeros(0, np.int64), np.zeros((0, 3))
    # vertex → incident triangles (CSR)
    order = np.argsort(f.ravel(), kind="stable")
    counts = np.bincount(f.ravel(), minlength=len(v))
    starts = np.r_[0, np.cumsum(counts)]
    tri_of = order // 3
    # Only vertices of the given faces are candidates: a subset of the mesh (one part) leaves the rest
    # without triangles.
    used = np.flatnonzero(counts)
    _, nn = cKDTree(v[used]).query(q, k=min(k_vertices, len(used)))
    nn = used[np.atleast_2d(nn).reshape(len(q), -1)]
    best_f = np.zeros(len(q), np.int64)
    best_b = np.zeros((len(q), 3))
    for i in range(len(q)):
        cand = np.unique(np.concatenate([tri_of[starts[j]:starts[j + 1]] for j in nn[i]]))
        tri = v[f[cand]]
        bc = closest_barycentric(np.broadcast_to(q[i], (len(cand), 3)), tri[:, 0], tri[:, 1], tri[:, 2])
        cp = np.einsum("nk,nkc->nc", bc, tri)
        j = int(np.argmin(np.linalg.norm(cp - q[i], axis=1)))
        best_f[i], best_b[i] = cand[j], bc[j]
    best_b = np.clip(best_b, 0.0, None)
    best_b /= best_b.sum(1, keepdims=True)
    return best_f, best_b


def _view_rotation(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    from ..contract.conventions import axis_angle_to_matrix
    Ry = axis_angle_to_matrix(np.array([0.0, np.radians(yaw_deg), 0.0]))
    Rx = axis_angle_to_matrix(np.array([np.radians(pitch_deg), 0.0, 0.0]))
    return Rx @ Ry


def face_parts(faces: np.ndarray, weights: np.ndarray | None) -> np.ndarray | None:
    """Part of each triangle (F,): EYEBALL when its vertices follow the eye joints, JAW_SKIN when they follow
    the jaw, HEAD otherwise (FLAME joint order: root, neck, jaw, eye_l, eye_r). None without skinning."""
    if weights is None:
        return None
    w = np.asarray(weights, dtype=np.float64)[np.asarray(faces, dtype=np.int64)].mean(1)    # (F, J)
    parts = np.full(len(w), HEAD, dtype=np.int64)
    parts[w[:, 2] > 0.5] = JAW_SKIN
    parts[w[:, 3:5].sum(1) > 0.5] = EYEBALL
    return parts


def painted_albedo(vertices: np.ndarray, faces: np.ndarray, weights: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """Per-vertex RGB (V, 3) for a head without its own albedo: skin, eyes (sclera, iris, pupil about each
    eyeball's forward +Z axis from its joint), dark lash lines on the lid skin bordering the eyeballs and brows
    above them (:func:`_paint_brows`) — features a face detector needs to see where the eyes and brows are,
    found from the rig alone — and a dark mouth interior: the skin facing away from the viewer behind the lips
    (near the front vertices the jaw and the head share), so the inner lip contour shows where the lips part."""
    from scipy.spatial import cKDTree

    from ..flame.face_regions import IRIS, LASH, MOUTH, PUPIL, SCLERA, smoothstep
    from ..render.raster import vertex_normals
    v = np.asarray(vertices, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    col = np.tile(np.asarray(SKIN_RGB), (len(v), 1))
    normals = vertex_normals(v, faces)
    eyes = w[:, 3:5].sum(1) > 0.5
    front = v[:, 2] > joints[2, 2] + 0.06
    shared = np.flatnonzero((w[:, 2] > 0.2) & (w[:, 2] < 0.8) & front & ~eyes)
    if shared.size:
        d, _ = cKDTree(v[shared]).query(v)
        interior = (d < 0.012) & (normals[:, 2] < 0.2) & ~eyes
        col[interior] = MOUTH
    for j in (3, 4):
        ball = w[:, j] > 0.5
        if not ball.any():
            continue
        c = joints[j]
        p = v[ball] - c
        r = float(np.median(np.linalg.norm(p, axis=1)))
        ang = np.arccos(np.clip(p[:, 2] / np.maximum(np.linalg.norm(p, axis=1), 1e-12), -1, 1))
        w_iris, w_pupil = smoothstep((0.5 - ang) / 0.12), smoothstep((0.2 - ang) / 0.08)
        e = SCLERA * (1 - w_iris[:, None]) + IRIS * w_iris[:, None]
        col[ball] = e * (1 - w_pupil[:, None]) + PUPIL * w_pupil[:, None]
        # lid margin: skin within a couple of millimetres of the eyeball, in front of its centre
        d = np.linalg.norm(v - c, axis=1) - r
        lash = (~ball) & (v[:, 2] > c[2] + 0.3 * r) & (d < 0.003)
        k = 0.9 * smoothstep((0.003 - d) / 0.0015)
        col[lash] = col[lash] * (1 - k[lash, None]) + k[lash, None] * LASH
    _paint_brows(col, v, normals, eyes, joints)
    return col


def _paint_brows(col: np.ndarray, v: np.ndarray, normals: np.ndarray, eyes: np.ndarray, joints: np.ndarray) -> None:
    """Brows above each eye, painted into ``col`` (V, 3): without them a detector guesses the brows on bare skin,
    and the calibrated brow points inherit that guess. The band hangs BROW_HEIGHT below BROW_ARCH, on
    forward-facing skin at most 0.15 eye separations behind the eye joints (the face, not the back of the head)."""
    from ..flame.face_regions import BROW, distance_to_polyline, smoothstep
    centre_x = 0.5 * (joints[3, 0] + joints[4, 0])
    sep = float(np.linalg.norm(joints[3] - joints[4]))
    if sep <= 0:
        return
    line = BROW_ARCH - np.array([0.0, 0.5 * BROW_HEIGHT])
    for j in (3, 4):
        c = joints[j]
        side = 1.0 if c[0] >= centre_x else -1.0
        uw = np.stack([side * (v[:, 0] - c[0]), v[:, 1] - c[1]], 1) / sep
        d = distance_to_polyline(uw, line)
        k = 0.9 * smoothstep((0.6 * BROW_HEIGHT - d) / (0.2 * BROW_HEIGHT))
        k[eyes | (normals[:, 2] < 0.0) | (v[:, 2] < c[2] - 0.15 * sep)] = 0.0
        col[:] = col * (1 - k[:, None]) + k[:, None] * BROW


def _render_samples(detect, v_rest: np.ndarray, v_pose: np.ndarray, f: np.ndarray, col: np.ndarray,
                    parts: np.ndarray | None, yaws, pitches, config: CalibrationConfig):
    """Render ``v_pose`` from each view and light; per render yield None (no face) or a list of (MediaPipe
    index, rest-space surface point) for the points that land on their part of the mesh at a usable angle.
    The face id and barycentrics under a point are the same on the posed and the rest mesh, so samples are
    rest-space."""
    from ..render import rasterize, render_rgb, vertex_visibility
    centre = 0.5 * (v_pose.min(0) + v_pose.max(0))
    vc0 = v_pose - centre
    fn = np.cross(v_pose[f[:, 1]] - v_pose[f[:, 0]], v_pose[f[:, 2]] - v_pose[f[:, 0]])
    fn /= np.maximum(np.linalg.norm(fn, axis=1, keepdims=True), 1e-15)
    S = config.image_size
    K = np.array([[config.focal_px, 0, S / 2], [0, config.focal_px, S / 2], [0, 0, 1.0]])
    flip = np.array([1.0, -1.0, -1.0])  # FLAME world → OpenCV camera (DEFAULT_CAM_R)
    vert_parts = None
    if parts is not None:   # vertex ↦ the parts of its triangles
        vert_parts = np.zeros((len(v_rest), 3), bool)
        for c in range(3):
            vert_parts[f[:, c], parts] = True
    for yaw in yaws:
        for pitch in pitches:
            R = _view_rotation(yaw, pitch)
            v_cam = (vc0 @ R.T) * flip + np.array([0.0, 0.0, config.distance_m])
            frags = rasterize(v_cam, f, K, (S, S))
            n_cam = (fn @ R.T) * flip
            seen = vertex_visibility(v_cam, f, K, (S, S), fragments=frags) if parts is not None else None
            uv_v = v_cam[:, :2] / v_cam[:, 2:3] * config.focal_px + S / 2
            for light in config.lights:
                img = render_rgb(v_cam, f, K, (S, S), albedo=col, light_dir=light,
                                 background=(config.background,) * 3, fragments=frags)
                faces_px = detect(img)
                if not faces_px:
                    log.debug("no face on render yaw=%s pitch=%s light=%s", yaw, pitch, light)
                    yield None
                    continue
                yield list(_back_project(faces_px[0][:, :2], frags, v_cam, v_rest, f, n_cam, parts, vert_parts,
                                         seen, uv_v, config))


def _back_project(xy, frags, v_cam, v_rest, f, n_cam, parts, vert_parts, seen, uv_v, config):
    """(MediaPipe index, rest-space point) for each detected point (see :func:`_render_samples`)."""
    S = config.image_size
    colp = np.floor(xy[:, 0]).astype(np.int64)
    rowp = np.floor(xy[:, 1]).astype(np.int64)
    inside = (colp >= 0) & (colp < S) & (rowp >= 0) & (rowp < S)
    reach = 0.02 * S                                     # how far a wrong-part hit may look for its part
    for j in np.nonzero(inside)[0]:
        fid = int(frags.face_id[rowp[j], colp[j]])
        if fid < 0:
            continue
        if parts is None or POINT_PARTS[j, parts[fid]]:
            b = frags.bary[rowp[j], colp[j]].astype(np.float64)
            p_cam = b @ v_cam[f[fid]]
            cos = -float(n_cam[fid] @ p_cam) / max(float(np.linalg.norm(p_cam)), 1e-12)
            if cos >= config.min_cos:
                yield int(j), b @ v_rest[f[fid]]
            continue
        ok = seen & (vert_parts[:, POINT_PARTS[j]].any(1))
        idx = np.flatnonzero(ok)
        if idx.size:
            d = np.linalg.norm(uv_v[idx] - xy[j], axis=1)
            k = int(np.argmin(d))
            if d[k] <= reach:
                yield int(j), v_rest[idx[k]]


def open_jaw_vertices(model: FlameModelData, degrees: float) -> np.ndarray | None:
    """``v_template`` with the jaw opened by ``degrees`` (FLAME skinning with pose correctives), (V, 3);
    None for a mesh without FLAME's rig (e.g. a bare template: not all of the model format's required arrays)."""
    if not _has_rig(model):
        return None
    import torch

    from ..flame.layer import FlameLayer, FlameParams
    layer = FlameLayer(model, dtype=torch.float64)
    jaw = torch.tensor([[np.radians(degrees), 0.0, 0.0]], dtype=torch.float64)
    with torch.no_grad():
        return layer(FlameParams(jaw_pose=jaw)).vertices[0].numpy()


def _has_rig(model: FlameModelData) -> bool:
    return all(k in model for k, (_, _, required) in MODEL_SCHEMA.items() if required)


def calibrate_mediapipe_embedding(vertices: np.ndarray, faces: np.ndarray, albedo: np.ndarray | None = None,
                                  config: CalibrationConfig = CalibrationConfig(),
                                  progress: ProgressCallback | None = None,
                                  open_mouth_vertices: np.ndarray | None = None,
                                  parts: np.ndarray | None = None) -> EmbeddingReport:
    """Self-calibrate the 478-point MediaPipe binding of the mesh ``vertices`` (V, 3) metres (FLAME world
    axes: +Y up, +Z toward the viewer), ``faces`` (F, 3) (see module docstring). ``open_mouth_vertices``
    (V, 3): the same mesh with the jaw open; when given, the inner-lip points come from its renders.
    ``parts`` (F,): each triangle's part (:func:`face_parts`); None binds every point anywhere."""
    from ..landmarks import DEFAULT_ALIGNER, get_aligner

    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    col = np.tile(SKIN_RGB, (len(v), 1)) if albedo is None else np.asarray(albedo, dtype=np.float64)
    samples: list[list[np.ndarray]] = [[] for _ in range(N_MP)]
    # (mesh to render, yaws, pitches, which points take samples from its renders)
    lips = np.zeros(N_MP, bool)
    if open_mouth_vertices is not None:
        lips[list(INNER_LIPS)] = True
    passes = [(v, config.yaws_deg, config.pitches_deg, ~lips)]
    if open_mouth_vertices is not None:
        passes.append((np.asarray(open_mouth_vertices, dtype=np.float64), config.open_yaws_deg,
                       config.open_pitches_deg, lips))
    n_total = sum(len(y) * len(p) for _, y, p, _ in passes) * len(config.lights)
    n_detected = 0
    done = 0
    with get_aligner(DEFAULT_ALIGNER, max_num_faces=1, min_detection_confidence=0.3).static_detector() as detect:
        # a mesh with no face in its frontal view is no face: say so after one render, not all of them
        front = replace(config, lights=config.lights[:1])
        if all(found is None for found in _render_samples(detect, v, v, f, col, parts, (0.0,), (0.0,), front)):
            raise NoFaceError("MediaPipe found no face on the frontal render of the neutral mesh; the model does "
                              "not look like a human face from the front (check its axes: +Y up, +Z toward the "
                              "viewer)")
        for v_pose, yaws, pitches, which in passes:
            for found in _render_samples(detect, v, v_pose, f, col, parts, yaws, pitches, config):
                done += 1
                if progress is not None:
                    progress("embedding", done / n_total, f"render {done}/{n_total}")
                if found is None:
                    continue
                n_detected += 1
                for j, p_model in found:
                    if which[j]:
                        samples[j].append(p_model)
    if n_detected == 0:
        raise NoFaceError("MediaPipe found no face on any render of the neutral mesh; the model does not look "
                          "like a human face from the front (check its axes: +Y up, +Z toward the viewer)")
    positions = np.full((N_MP, 3), np.nan)
    n_views = np.array([len(s) for s in samples], dtype=np.int64)
    spread = np.full(N_MP, np.nan)
    for j, s in enumerate(samples):
        if not s:
            continue
        x = np.asarray(s)
        m = _geometric_median(x)
        positions[j] = m
        spread[j] = 1000.0 * float(np.median(np.linalg.norm(x - m, axis=1)))
    kept = (n_views >= config.min_views) & (spread <= config.max_spread_mm)
    idx = np.nonzero(kept)[0]
    face_idx, bary = bind_to_parts(positions[idx], idx, v, f, parts)
    positions[~kept] = np.nan
    binding = SurfaceBinding(point_index=idx, face_idx=face_idx, bary=bary,
                             topology_hash=topology_hash(f, len(v)), source="self-calibrated")
    rep = EmbeddingReport(binding=binding, positions=positions, n_views=n_views, spread_mm=spread, kept=kept,
                          n_renders=n_total, n_detected=n_detected,
                          stats={"min_views": config.min_views, "max_spread_mm": config.max_spread_mm})
    log.info("self-calibrated MediaPipe embedding: %d kept, %d dropped (%d/%d renders with a face)",
             rep.n_kept, rep.n_dropped, n_detected, n_total)
    return rep


def bind_to_parts(points: np.ndarray, point_index: np.ndarray, vertices: np.ndarray, faces: np.ndarray,
                  parts: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Closest surface point of each MediaPipe point's own part (``parts`` None: of the whole mesh)
    → (face_idx (N,), bary (N, 3))."""
    if parts is None:
        return closest_surface_binding(points, vertices, faces)
    face_idx = np.zeros(len(points), np.int64)
    bary = np.zeros((len(points), 3))
    allowed = POINT_PARTS[np.asarray(point_index, dtype=np.int64)]          # (N, 3)
    for key in np.unique(allowed, axis=0):
        rows = np.flatnonzero((allowed == key).all(1))
        tri = np.flatnonzero(key[parts])
        fi, b = closest_surface_binding(points[rows], vertices, faces[tri])
        face_idx[rows], bary[rows] = tri[fi], b
    return face_idx, bary


def _calibration_inputs(model: FlameModelData) -> tuple[np.ndarray, np.ndarray | None]:
    """(albedo (V, 3), parts (F,) or None) the calibration renders and binds ``model`` with."""
    if not _has_rig(model):
        return (np.asarray(model["vertex_albedo"]) if "vertex_albedo" in model else None), None
    parts = face_parts(model.faces, model["weights"])
    if "vertex_albedo" in model:
        return np.asarray(model["vertex_albedo"], dtype=np.float64), parts
    joints = np.asarray(model["J_regressor"], dtype=np.float64) @ np.asarray(model["v_template"], dtype=np.float64)
    return painted_albedo(model["v_template"], model.faces, model["weights"], joints), parts


def _cache_key(model: FlameModelData, config: CalibrationConfig) -> str:
    h = hashlib.sha256(np.ascontiguousarray(model["v_template"], dtype=np.float32).tobytes())
    for k in ("vertex_albedo", "weights"):
        if k in model:
            h.update(np.ascontiguousarray(model[k], dtype=np.float32).tobytes())
    return f"mp478_v{CALIB_VERSION}_{model.topology}_{h.hexdigest()[:16]}_{config.key()}"


def mediapipe_embedding_report(model: FlameModelData, config: CalibrationConfig = CalibrationConfig(),
                               cache: bool = True, progress: ProgressCallback | None = None) -> EmbeddingReport:
    """Self-calibrated MediaPipe embedding of ``model`` with its report; cached (see module docstring)."""
    from ..paths import cache_dir
    path = cache_dir("embeddings") / (_cache_key(model, config) + ".npz")
    if cache and path.is_file():
        try:
            a, meta = read_npz(path, what="embedding cache")
            b = SurfaceBinding(point_index=a["point_index"], face_idx=a["face_idx"], bary=a["bary"],
                               topology_hash=model.topology, source="self-calibrated")
            return EmbeddingReport(binding=b, positions=a["positions"], n_views=a["n_views"],
                                   spread_mm=a["spread_mm"], kept=a["kept"].astype(bool),
                                   n_renders=int(meta["n_renders"]), n_detected=int(meta["n_detected"]),
                                   from_cache=True, stats=meta.get("stats", {}))
        except (ContractError, KeyError, ValueError, OSError) as exc:  # a corrupt cache is rebuilt, never fatal
            log.warning("ignoring unreadable embedding cache %s (%s)", path, exc)
    albedo, parts = _calibration_inputs(model)
    rep = calibrate_mediapipe_embedding(model["v_template"], model.faces, albedo, config, progress,
                                        open_mouth_vertices=open_jaw_vertices(model, config.open_jaw_deg),
                                        parts=parts)
    if cache:
        b = rep.binding
        write_npz_atomic(path, {"point_index": b.point_index, "face_idx": b.face_idx, "bary": b.bary,
                                "positions": rep.positions, "n_views": rep.n_views, "spread_mm": rep.spread_mm,
                                "kept": rep.kept},
                         {"n_renders": rep.n_renders, "n_detected": rep.n_detected, "stats": rep.stats,
                          "topology_hash": model.topology, "calib_version": CALIB_VERSION})
    return rep


def has_official_embedding(model: FlameModelData) -> bool:
    return all(k in model for k in ("mp_face_idx", "mp_bary", "mp_landmark_indices"))


def official_binding(model: FlameModelData) -> SurfaceBinding:
    """The model's own MediaPipe embedding (``mp_face_idx``, ``mp_bary``, ``mp_landmark_indices``)."""
    if not has_official_embedding(model):
        raise ModelError("this model carries no official MediaPipe embedding (mp_face_idx/mp_bary/"
                         "mp_landmark_indices); add it with 'flamecap models add FLAME.pkl --embedding "
                         "mediapipe_landmark_embedding.npz', or use the self-calibrated binding (the default)")
    return SurfaceBinding(point_index=np.asarray(model["mp_landmark_indices"], dtype=np.int64),
                          face_idx=np.asarray(model["mp_face_idx"], dtype=np.int64),
                          bary=np.asarray(model["mp_bary"], dtype=np.float64), topology_hash=model.topology,
                          source="official-embedding")


def combined_binding(model: FlameModelData, calibrated: SurfaceBinding, official: SurfaceBinding,
                     radius_m: float = 0.008) -> SurfaceBinding:
    """Official rows for the points the official embedding has, but the inner lips: the official embedding
    binds them on the closed template's lip line, where the upper and lower ones coincide (or cross) and a
    fitted mouth could not open them; those come from the open-mouth calibration like every other calibrated
    point, moved by the Gaussian-weighted (``radius_m``, rest-space distance) official-minus-calibrated
    offsets of the points both bind, then put back on the surface of its part."""
    v, f = np.asarray(model["v_template"], dtype=np.float64), np.asarray(model.faces, dtype=np.int64)
    cal = dict(zip(calibrated.point_index.tolist(), surface_points(v, f, calibrated.face_idx, calibrated.bary)))
    keep = ~np.isin(official.point_index, INNER_LIPS)
    official = SurfaceBinding(point_index=official.point_index[keep], face_idx=official.face_idx[keep],
                              bary=official.bary[keep], topology_hash=official.topology_hash, source=official.source)
    off = dict(zip(official.point_index.tolist(), surface_points(v, f, official.face_idx, official.bary)))
    common = sorted(set(cal) & set(off))
    rest = [k for k in calibrated.point_index.tolist() if k not in off]
    if not common or not rest:
        return official
    c_pos = np.array([cal[k] for k in common])
    delta = np.array([off[k] - cal[k] for k in common])
    p = np.array([cal[k] for k in rest])
    w = np.exp(-0.5 * (np.linalg.norm(p[:, None] - c_pos[None], axis=-1) / radius_m) ** 2)     # (N, C)
    moved = p + (w @ delta) / np.maximum(w.sum(1, keepdims=True), 1e-12) * (w.sum(1, keepdims=True) > 1e-6)
    fi, b = bind_to_parts(moved, np.array(rest), v, f, face_parts(f, model["weights"]) if _has_rig(model) else None)
    return SurfaceBinding(point_index=np.concatenate([official.point_index, np.array(rest, dtype=np.int64)]),
                          face_idx=np.concatenate([official.face_idx, fi]),
                          bary=np.concatenate([official.bary, b]), topology_hash=model.topology,
                          source="official+self-calibrated")


def mediapipe_binding(model: FlameModelData, source: str = "auto", cache: bool = True,
                      config: CalibrationConfig = CalibrationConfig(),
                      progress: ProgressCallback | None = None) -> SurfaceBinding:
    """How the 478 MediaPipe points bind to ``model``: ``"auto"`` (default: official where the model has its
    embedding, self-calibrated and bias-corrected elsewhere), ``"official"`` (only the model's ``mp_*``
    points; :class:`ModelError` when absent) or ``"self-calibrated"``."""
    if source in ("official", "official-embedding"):
        return official_binding(model)
    if source not in ("auto", "self-calibrated"):
        raise ModelError(f"unknown embedding source '{source}'; use 'auto', 'self-calibrated' or 'official'")
    b = mediapipe_embedding_report(model, config, cache, progress).binding
    if source == "auto" and has_official_embedding(model):
        b = combined_binding(model, b, official_binding(model))
    return with_sliding_lips(model, b)


def with_sliding_lips(model: FlameModelData, binding: SurfaceBinding, radius_m: float = SLIDE_RADIUS_M
                      ) -> SurfaceBinding:
    """``binding`` with its inner-lip rows sliding (see :class:`SurfaceBinding`): each may move to any vertex
    or triangle centre of its own part (:data:`POINT_PARTS`) within ``radius_m`` of where it is bound.
    Calibration renders place them at one opening of one rendered look; on footage the lip line sits elsewhere
    on the lip."""
    rows = np.flatnonzero(np.isin(binding.point_index, INNER_LIPS))
    if rows.size == 0:
        return binding
    f = np.asarray(model.faces, dtype=np.int64)
    parts = face_parts(f, model["weights"]) if _has_rig(model) else None
    ok = POINT_PARTS[binding.point_index[rows]][:, parts] if parts is not None else None
    return with_sliding(binding, rows, model["v_template"], f, radius_m, ok)


def compare_bindings(model: FlameModelData, a: SurfaceBinding, b: SurfaceBinding) -> dict:
    """3D distances (mm, on ``v_template``) between two bindings over the points both bind."""
    v, f = model["v_template"], model.faces
    pa = dict(zip(a.point_index.tolist(), surface_points(v, f, a.face_idx, a.bary)))
    pb = dict(zip(b.point_index.tolist(), surface_points(v, f, b.face_idx, b.bary)))
    common = sorted(set(pa) & set(pb))
    d = np.array([1000.0 * np.linalg.norm(pa[k] - pb[k]) for k in common])
    return {"n_a": len(pa), "n_b": len(pb), "n_common": len(common),
            "only_in_b": sorted(set(pb) - set(pa)),
            "mean_mm": float(d.mean()) if d.size else None, "median_mm": float(np.median(d)) if d.size else None,
            "max_mm": float(d.max()) if d.size else None,
            "per_point_mm": dict(zip(common, d.round(3).tolist()))}
