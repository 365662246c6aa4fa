"""MediaPipe → head-mesh binding, self-calibrated for any head mesh.

The official FLAME MediaPipe embedding covers 105 of the 478 points and is licensed non-commercially, so
FlameCap calibrates its own for the model at hand:

1. Render the neutral mesh (``v_template``; Lambert-shaded with ``vertex_albedo`` when the model has it,
   else a skin tone, on a grey background) with the software rasterizer from a spread of views (yaw ×
   pitch) under several lights.
2. Run MediaPipe FaceMesh (static image mode, refine) on every render.
3. Back-project each detected 2D point onto the surface: the rasterizer's face id + barycentrics at that
   pixel give a point on the mesh (its depth is the z-buffer's). Samples where the surface is seen at a
   grazing angle (cos < ``min_cos``) or that fall on the background are discarded.
   The inner-lip points are calibrated on a second set of renders with the jaw open
   (``open_jaw_deg``, FLAME skinning): on the closed neutral mouth the upper and lower inner lip points
   coincide in the image and would both land on the upper lip, and the fitted mouth could never open them.
4. Combine per point across views robustly: the geometric median (Weiszfeld) of the 3D samples; its
   spread is the median distance of the samples to it. A point is kept when it was seen in at least
   ``min_views`` renders and its spread is at most ``max_spread_mm``; points that slide with the view
   (silhouette/jawline contour points) are dropped. Kept points are re-bound to the closest surface
   point (triangle + barycentrics).

Results are cached under ``paths.cache_dir('embeddings')`` keyed by the topology hash, a hash of
``v_template`` (and albedo), and the calibration settings. ``source="official"`` uses the model's
``mp_*`` arrays instead (never silently preferred).
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field

import numpy as np

from .contract.events import ProgressCallback
from .contract.model_format import MODEL_SCHEMA, FlameModelData, topology_hash
from .contract.npzio import read_npz, write_npz_atomic
from .errors import ModelError, NoFaceError
from .geometry import closest_barycentric
from .landmarks.base import SurfaceBinding

log = logging.getLogger(__name__)

N_MP = 478
CALIB_VERSION = 2   # 2: inner lips from open-mouth renders
SKIN_RGB = (0.87, 0.68, 0.58)
# MediaPipe's inner lip contour (FACEMESH_LIPS, inner ring): bound from the open-mouth renders
INNER_LIPS = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 191, 80, 81, 82, 13, 312, 311, 310, 415)


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
    _, nn = cKDTree(v).query(q, k=min(k_vertices, len(v)))
    nn = np.atleast_2d(nn)
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


def surface_points(vertices: np.ndarray, faces: np.ndarray, face_idx: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """Points (R, 3) at barycentrics ``bary`` (R, 3) of triangles ``face_idx`` (R,)."""
    tri = np.asarray(vertices)[np.asarray(faces)[np.asarray(face_idx)]]
    return np.einsum("rk,rkc->rc", np.asarray(bary, np.float64), tri)


def _view_rotation(yaw_deg: float, pitch_deg: float) -> np.ndarray:
    from .contract.conventions import axis_angle_to_matrix
    Ry = axis_angle_to_matrix(np.array([0.0, np.radians(yaw_deg), 0.0]))
    Rx = axis_angle_to_matrix(np.array([np.radians(pitch_deg), 0.0, 0.0]))
    return Rx @ Ry


def _render_samples(fm, v_rest: np.ndarray, v_pose: np.ndarray, f: np.ndarray, col: np.ndarray,
                    yaws, pitches, config: CalibrationConfig):
    """Render ``v_pose`` from each view and light; per render yield None (no face) or a list of (MediaPipe
    index, rest-space surface point) for the points that land on the mesh at a usable angle. The face id
    and barycentrics under a point are the same on the posed and the rest mesh, so samples are rest-space."""
    from .landmarks.mediapipe_aligner import MediaPipeAligner
    from .render import rasterize, render_rgb
    centre = 0.5 * (v_pose.min(0) + v_pose.max(0))
    vc0 = v_pose - centre
    fn = np.cross(v_pose[f[:, 1]] - v_pose[f[:, 0]], v_pose[f[:, 2]] - v_pose[f[:, 0]])
    fn /= np.maximum(np.linalg.norm(fn, axis=1, keepdims=True), 1e-15)
    S = config.image_size
    K = np.array([[config.focal_px, 0, S / 2], [0, config.focal_px, S / 2], [0, 0, 1.0]])
    flip = np.array([1.0, -1.0, -1.0])  # FLAME world → OpenCV camera (DEFAULT_CAM_R)
    for yaw in yaws:
        for pitch in pitches:
            R = _view_rotation(yaw, pitch)
            v_cam = (vc0 @ R.T) * flip + np.array([0.0, 0.0, config.distance_m])
            frags = rasterize(v_cam, f, K, (S, S))
            n_cam = (fn @ R.T) * flip
            for light in config.lights:
                img = render_rgb(v_cam, f, K, (S, S), albedo=col, light_dir=light,
                                 background=(config.background,) * 3, fragments=frags)
                faces_px = MediaPipeAligner._faces_px(fm.process(img), S, S)
                if not faces_px:
                    log.debug("no face on render yaw=%s pitch=%s light=%s", yaw, pitch, light)
                    yield None
                    continue
                xy = faces_px[0][:, :2]
                colp = np.floor(xy[:, 0]).astype(np.int64)
                rowp = np.floor(xy[:, 1]).astype(np.int64)
                inside = (colp >= 0) & (colp < S) & (rowp >= 0) & (rowp < S)
                found = []
                for j in np.nonzero(inside)[0]:
                    fid = frags.face_id[rowp[j], colp[j]]
                    if fid < 0:
                        continue
                    b = frags.bary[rowp[j], colp[j]].astype(np.float64)
                    p_cam = b @ v_cam[f[fid]]
                    cos = -float(n_cam[fid] @ p_cam) / max(float(np.linalg.norm(p_cam)), 1e-12)
                    if cos >= config.min_cos:
                        found.append((int(j), b @ v_rest[f[fid]]))
                yield found


def open_jaw_vertices(model: FlameModelData, degrees: float) -> np.ndarray | None:
    """``v_template`` with the jaw opened by ``degrees`` (FLAME skinning with pose correctives), (V, 3);
    None for a mesh without FLAME's rig (e.g. a bare template: not all of the model format's required arrays)."""
    if not all(k in model for k, (_, _, required) in MODEL_SCHEMA.items() if required):
        return None
    import torch

    from .flame.layer import FlameLayer, FlameParams
    layer = FlameLayer(model, dtype=torch.float64)
    jaw = torch.tensor([[np.radians(degrees), 0.0, 0.0]], dtype=torch.float64)
    with torch.no_grad():
        return layer(FlameParams(jaw_pose=jaw)).vertices[0].numpy()


def calibrate_mediapipe_embedding(vertices: np.ndarray, faces: np.ndarray, albedo: np.ndarray | None = None,
                                  config: CalibrationConfig = CalibrationConfig(),
                                  progress: ProgressCallback | None = None,
                                  open_mouth_vertices: np.ndarray | None = None) -> EmbeddingReport:
    """Self-calibrate the 478-point MediaPipe binding of the mesh ``vertices`` (V, 3) metres (FLAME world
    axes: +Y up, +Z toward the viewer), ``faces`` (F, 3) (see module docstring). ``open_mouth_vertices``
    (V, 3): the same mesh with the jaw open; when given, the inner-lip points come from its renders."""
    from mediapipe.python.solutions import face_mesh

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
    with face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True, max_num_faces=1,
                            min_detection_confidence=0.3) as fm:
        for v_pose, yaws, pitches, which in passes:
            for found in _render_samples(fm, v, v_pose, f, col, yaws, pitches, config):
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
    face_idx, bary = closest_surface_binding(positions[idx], v, f)
    positions[~kept] = np.nan
    binding = SurfaceBinding(point_index=idx, face_idx=face_idx, bary=bary,
                             topology_hash=topology_hash(f, len(v)), source="self-calibrated")
    rep = EmbeddingReport(binding=binding, positions=positions, n_views=n_views, spread_mm=spread, kept=kept,
                          n_renders=n_total, n_detected=n_detected,
                          stats={"min_views": config.min_views, "max_spread_mm": config.max_spread_mm})
    log.info("self-calibrated MediaPipe embedding: %d kept, %d dropped (%d/%d renders with a face)",
             rep.n_kept, rep.n_dropped, n_detected, n_total)
    return rep


def _cache_key(model: FlameModelData, config: CalibrationConfig) -> str:
    h = hashlib.sha256(np.ascontiguousarray(model["v_template"], dtype=np.float32).tobytes())
    if "vertex_albedo" in model:
        h.update(np.ascontiguousarray(model["vertex_albedo"], dtype=np.float32).tobytes())
    return f"mp478_v{CALIB_VERSION}_{model.topology}_{h.hexdigest()[:16]}_{config.key()}"


def mediapipe_embedding_report(model: FlameModelData, config: CalibrationConfig = CalibrationConfig(),
                               cache: bool = True, progress: ProgressCallback | None = None) -> EmbeddingReport:
    """Self-calibrated MediaPipe embedding of ``model`` with its report; cached (see module docstring)."""
    from .paths import cache_dir
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
        except Exception as exc:  # a corrupt cache is rebuilt, never fatal
            log.warning("ignoring unreadable embedding cache %s (%s)", path, exc)
    albedo = model["vertex_albedo"] if "vertex_albedo" in model else None
    rep = calibrate_mediapipe_embedding(model["v_template"], model.faces, albedo, config, progress,
                                        open_mouth_vertices=open_jaw_vertices(model, config.open_jaw_deg))
    if cache:
        b = rep.binding
        write_npz_atomic(path, {"point_index": b.point_index, "face_idx": b.face_idx, "bary": b.bary,
                                "positions": rep.positions, "n_views": rep.n_views, "spread_mm": rep.spread_mm,
                                "kept": rep.kept},
                         {"n_renders": rep.n_renders, "n_detected": rep.n_detected, "stats": rep.stats,
                          "topology_hash": model.topology, "calib_version": CALIB_VERSION})
    return rep


def official_binding(model: FlameModelData) -> SurfaceBinding:
    """The model's own MediaPipe embedding (``mp_face_idx``, ``mp_bary``, ``mp_landmark_indices``)."""
    if not all(k in model for k in ("mp_face_idx", "mp_bary", "mp_landmark_indices")):
        raise ModelError("this model carries no official MediaPipe embedding (mp_face_idx/mp_bary/"
                         "mp_landmark_indices); use the self-calibrated one (the default)")
    return SurfaceBinding(point_index=np.asarray(model["mp_landmark_indices"], dtype=np.int64),
                          face_idx=np.asarray(model["mp_face_idx"], dtype=np.int64),
                          bary=np.asarray(model["mp_bary"], dtype=np.float64), topology_hash=model.topology,
                          source="official-embedding")


def mediapipe_binding(model: FlameModelData, source: str = "self-calibrated", cache: bool = True,
                      config: CalibrationConfig = CalibrationConfig(),
                      progress: ProgressCallback | None = None) -> SurfaceBinding:
    """How the 478 MediaPipe points bind to ``model``: ``source="self-calibrated"`` (default) or
    ``"official"`` (the model's ``mp_*`` arrays; :class:`ModelError` when absent)."""
    if source in ("official", "official-embedding"):
        return official_binding(model)
    if source != "self-calibrated":
        raise ModelError(f"unknown embedding source '{source}'; use 'self-calibrated' or 'official'")
    return mediapipe_embedding_report(model, config, cache, progress).binding


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
