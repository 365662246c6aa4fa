"""``flamecap bench``: accuracy and speed of FlameCap against ground truth, real footage and a per-frame Adam
baseline. Every number in the report comes from the run.

Synthetic set (ground truth): clips rendered with :mod:`flamecap.synth` (talking jaw, expressions, blinks, yaw
sweeps up to ±45°) of the FLAME-topology test head (``--reference``), else the registered FLAME model, else
FlameCap's synthetic head. Each clip is tracked with MediaPipe, then fitted by FlameCap (``fast`` and
``production``) and by the baseline. Metrics (:mod:`flamecap.metrics`):

- SSME per gap and its mean (px): predicted screen-space motion = projection of the fitted mesh's vertices with
  the fitted camera, on the face-region vertices visible in the ground truth (``face_mask`` ∧ ``visible``);
- face-region 3D vertex error (mm, no alignment: a fitted camera/scale that differs from the truth counts);
- jaw rotation error and head rotation error (deg; head = root ∘ neck, the head's world orientation);
- relative focal error.

Real footage (``--grid``, default ``../shared/data/footage/grid``): raw MediaPipe jitter vs the jitter of the
fitted model's projected landmarks (ratio), reprojection NME (inter-ocular normalised) and lag (frames) of the
fitted landmarks behind the raw ones.

Speed: frames/s of the landmarks stage, of each fit and end to end, and the fit speed ratio vs the baseline.
Outputs ``report.json``, ``report.md`` and PNG plots (errors over time, overlays of the tracked mesh).
"""
from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .contract.events import ProgressCallback
from .contract.model_format import FlameModelData
from .errors import FitError, InputError
from .resources import bench_baseline

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_REFERENCE = REPO_ROOT.parent / "shared" / "data" / "flame_reference"
DEFAULT_GRID = REPO_ROOT.parent / "shared" / "data" / "footage" / "grid"
# the baseline script: the wheel's copy or the checkout's benchmarks/ (flamecap.resources); None: pass --baseline
DEFAULT_BASELINE = bench_baseline()
REPORT_FORMAT = "flamecap.bench-report"
REPORT_VERSION = 1
FLAMECAP_METHODS = ("fast", "production")
BASELINE = "adam"
VIDEO_EXTS = (".mp4", ".mpg", ".mpeg", ".avi", ".mov", ".mkv", ".webm")


@dataclass(frozen=True)
class SynthClipSpec:
    """One ground-truth clip: frames, maximum yaw (deg), seed."""

    name: str
    n_frames: int
    yaw_max_deg: float
    seed: int


@dataclass(frozen=True)
class BenchConfig:
    """What the bench runs. ``full()`` and ``quick()`` are the two presets the CLI uses."""

    synth_clips: tuple[SynthClipSpec, ...]
    width: int = 480
    height: int = 360
    grid_clips: int = 10             # how many real clips (sorted by name); 0 = none
    grid_frames: int | None = None   # frames per real clip (None = all)
    baseline_steps: int = 500
    baseline_grid_clips: int = 10    # real clips the (slow) baseline also fits (the first ones)
    production_grid_clips: int = 10  # real clips FlameCap production also fits (fast fits all)
    overlay_frames: int = 4
    quick: bool = False

    def __post_init__(self):
        if not self.synth_clips:
            raise InputError("the bench needs at least one synthetic clip")
        if self.baseline_steps < 1:
            raise InputError(f"baseline steps must be ≥ 1, got {self.baseline_steps}")
        if self.grid_clips < 0 or (self.grid_frames is not None and self.grid_frames < 3):
            raise InputError("grid clips must be ≥ 0 and grid frames ≥ 3")

    @classmethod
    def full(cls) -> "BenchConfig":
        return cls(synth_clips=(SynthClipSpec("talk_yaw30", 60, 30.0, 0), SynthClipSpec("talk_yaw45", 60, 45.0, 1),
                                SynthClipSpec("talk_yaw45b", 60, 45.0, 2)),
                   baseline_steps=500, baseline_grid_clips=1, production_grid_clips=10)

    @classmethod
    def quick_preset(cls) -> "BenchConfig":
        return cls(synth_clips=(SynthClipSpec("talk_yaw45", 10, 45.0, 1),), width=256, height=192, grid_clips=1,
                   grid_frames=10, baseline_steps=30, baseline_grid_clips=1, production_grid_clips=0, overlay_frames=2,
                   quick=True)


# ------------------------------------------------------------------------------------------------------------
# fitting: FlameCap and the baseline behind one shape
# ------------------------------------------------------------------------------------------------------------
@dataclass
class MethodFit:
    """A fit of one clip by one method. params: per-frame FLAME parameters (T, ...) plus ``shape`` ((S,) or
    (T, S)) and optional ``vertex_offsets`` (V, 3); K (3, 3), cam_R (3, 3), cam_t (3,) the fitted camera;
    valid (T,); seconds: fit wall time (landmarks excluded)."""

    method: str
    params: dict[str, np.ndarray]
    K: np.ndarray
    cam_R: np.ndarray
    cam_t: np.ndarray
    valid: np.ndarray
    seconds: float
    landmark_residual_px: float = float("nan")


def load_baseline(path: str | os.PathLike | None = DEFAULT_BASELINE) -> Callable:
    """``fit_adam_per_frame`` from the baseline script, loaded by path."""
    if path is None:
        raise InputError("this FlameCap install carries no baseline script; pass --baseline FILE "
                         "(benchmarks/baseline_adam.py of a checkout)")
    path = Path(path)
    if not path.is_file():
        raise InputError(f"baseline script {path} not found; pass --baseline benchmarks/baseline_adam.py")
    spec = importlib.util.spec_from_file_location("flamecap_bench_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses in the script look their module up
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - a user-supplied script may raise anything: one line saying where
        sys.modules.pop(spec.name, None)
        raise InputError(f"cannot load the baseline {path}: {type(exc).__name__}: {exc}") from None
    fn = getattr(module, "fit_adam_per_frame", None)
    if fn is None:
        raise InputError(f"{path} has no fit_adam_per_frame(...); use benchmarks/baseline_adam.py as the template")
    return fn


def fit_baseline(fn: Callable, track, binding, model: FlameModelData, focal: float, steps: int) -> MethodFit:
    """Run the per-frame Adam baseline on a landmark track (camera: the given focal, principal point at the
    centre, the default extrinsics)."""
    from .contract.conventions import DEFAULT_CAM_R, DEFAULT_CAM_T
    w, h = track.image_size
    r = fn(track.points, track.sigma, track.valid, binding.point_index, binding.face_idx, binding.bary, model,
           float(focal), (w, h), steps=steps)
    K = np.array([[focal, 0, w / 2.0], [0, focal, h / 2.0], [0, 0, 1.0]])
    obs = track.points[:, binding.point_index]
    err = np.linalg.norm(r.points_2d - obs, axis=-1)
    err = float(np.nanmean(err[track.valid])) if track.valid.any() else float("nan")
    return MethodFit(BASELINE, dict(r.params), K, DEFAULT_CAM_R.copy(), DEFAULT_CAM_T.copy(),
                     np.asarray(track.valid, bool), r.seconds, err)


def fit_flamecap(track, model: FlameModelData, binding, quality: str) -> MethodFit:
    """Fit a landmark track with FlameCap's fitter (:func:`flamecap.fit.tracker.fit_track`) at ``quality``
    (fast | production) → :class:`MethodFit`. The time covers the fit only (landmarks are given)."""
    from .contract.conventions import DEFAULT_CAM_R, DEFAULT_CAM_T
    from .fit.config import FitConfig
    from .fit.tracker import fit_track
    t0 = time.perf_counter()
    fo = fit_track(track, binding, model, config=FitConfig.preset(quality))
    seconds = time.perf_counter() - t0
    params = {k: np.asarray(v) for k, v in fo.params.items()}
    params["shape"] = np.asarray(fo.shape)
    if fo.offsets is not None:
        params["vertex_offsets"] = np.asarray(fo.offsets)
    valid = np.asarray(fo.valid, bool)
    fe = np.asarray(fo.landmark_residual_px, float)
    err = float(np.nanmean(fe[valid])) if valid.any() else float("nan")
    return MethodFit(quality, params, np.asarray(fo.K, float), DEFAULT_CAM_R.copy(), DEFAULT_CAM_T.copy(), valid,
                     seconds, err)


# ------------------------------------------------------------------------------------------------------------
# geometry of a fit
# ------------------------------------------------------------------------------------------------------------
def fit_vertices(model: FlameModelData, params: dict[str, np.ndarray], chunk: int = 64) -> np.ndarray:
    """Full-mesh vertices (T, V, 3) metres, FLAME world, of per-frame parameters (FlameLayer)."""
    import torch

    from .flame.layer import FlameLayer, FlameParams
    layer = FlameLayer(model)
    T = int(np.asarray(params["jaw_pose"]).shape[0])
    out = np.empty((T, model.n_vertices, 3), np.float64)
    with torch.no_grad():
        for s in range(0, T, chunk):
            sl = slice(s, min(T, s + chunk))
            kw = {}
            for k in ("expr", "jaw_pose", "neck_pose", "eye_pose", "global_rot", "transl", "eyelids"):
                if k in params:
                    kw[k] = torch.as_tensor(np.nan_to_num(np.asarray(params[k], np.float32)[sl]))
            shape = np.asarray(params.get("shape", np.zeros(1)), np.float32)
            kw["shape"] = torch.as_tensor(shape[sl] if shape.ndim == 2 else shape)
            if "vertex_offsets" in params:
                kw["offsets"] = torch.as_tensor(np.asarray(params["vertex_offsets"], np.float32))
            out[sl] = layer(FlameParams(**kw)).vertices.numpy()
    return out


def to_camera(vertices: np.ndarray, cam_R: np.ndarray, cam_t: np.ndarray) -> np.ndarray:
    """FLAME world (…, 3) → OpenCV camera space."""
    return vertices @ np.asarray(cam_R, float).T + np.asarray(cam_t, float)


def project_points(cam: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pinhole projection of camera-space points (…, 3) → pixels (…, 2); behind-camera points are NaN."""
    z = cam[..., 2:3]
    uv = (cam[..., :2] / np.where(z > 1e-9, z, np.nan)) * np.array([K[0, 0], K[1, 1]]) + np.array([K[0, 2], K[1, 2]])
    return uv


def bound_points(vertices: np.ndarray, faces: np.ndarray, face_idx: np.ndarray, bary: np.ndarray) -> np.ndarray:
    """Barycentric surface points: vertices (T, V, 3) → (T, R, 3)."""
    tri = vertices[:, np.asarray(faces)[face_idx]]            # (T, R, 3, 3)
    return np.einsum("trkc,rk->trc", tri, np.asarray(bary, float))


def head_rotation(global_rot: np.ndarray, neck_pose: np.ndarray) -> np.ndarray:
    """World orientation of the head (T, 3, 3) = R(global_rot) · R(neck_pose)."""
    from .contract.conventions import axis_angle_to_matrix
    return axis_angle_to_matrix(global_rot) @ axis_angle_to_matrix(neck_pose)


def _rot_angle_deg(Ra: np.ndarray, Rb: np.ndarray) -> np.ndarray:
    rel = np.swapaxes(Ra, -1, -2) @ Rb
    return np.degrees(np.arccos(np.clip((np.trace(rel, axis1=-2, axis2=-1) - 1) / 2, -1, 1)))


# ------------------------------------------------------------------------------------------------------------
# the cases
# ------------------------------------------------------------------------------------------------------------
def _finite(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _mean(values) -> float | None:
    v = [float(x) for x in values if x is not None and math.isfinite(float(x))]
    return float(np.mean(v)) if v else None


@dataclass
class _Clip:
    """Book-keeping for plots: per-frame series and a few frames with the fitted mesh."""

    name: str
    series: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)   # metric -> method -> (T,)
    overlays: list[tuple[str, np.ndarray]] = field(default_factory=list)      # (title, rgb)


def _track_clip(video: Path, end: int | None = None):
    from .landmarks import get_aligner, track_footage
    from .video import open_footage
    footage = open_footage(video, end=end)
    t0 = time.perf_counter()
    track = track_footage(footage, get_aligner())
    return track, time.perf_counter() - t0


def _read_frames(video: Path, indices: list[int]) -> dict[int, np.ndarray]:
    from .video import open_footage
    want, out = set(indices), {}
    for fi, _, rgb in open_footage(video, end=max(indices) + 1):
        if fi in want:
            out[fi] = rgb
    return out


def _overlays(clip: _Clip, video: Path, model: FlameModelData, fit: MethodFit, verts: np.ndarray,
              raw: np.ndarray | None, n: int) -> None:
    from .render import overlay_mesh, overlay_points
    T = verts.shape[0]
    idx = sorted({int(round(x)) for x in np.linspace(0, T - 1, n)}) if n > 0 else []
    frames = _read_frames(video, idx) if idx else {}
    for i in idx:
        if i not in frames or not fit.valid[i]:
            continue
        cam = to_camera(verts[i], fit.cam_R, fit.cam_t)
        tint = np.tile(np.array([[0.55, 0.85, 0.55]]), (model.n_vertices, 1))  # green: the fitted mesh
        img = overlay_mesh(frames[i], cam, model.faces, fit.K, alpha=0.5, albedo=tint)
        if raw is not None:
            img = overlay_points(img, raw[i], color=(255, 40, 40), radius=1)
        clip.overlays.append((f"{clip.name} frame {i} ({fit.method})", img))


def run_synthetic_clip(spec: SynthClipSpec, cfg: BenchConfig, model: FlameModelData, binding, baseline: Callable,
                       workdir: Path, progress: ProgressCallback | None = None) -> tuple[dict, _Clip, dict]:
    """Render, track and fit one ground-truth clip; returns (metrics, plot data, timings)."""
    from . import metrics as M
    from .synth import SynthConfig, load_ground_truth, render_clip
    cdir = workdir / spec.name
    scfg = SynthConfig(n_frames=spec.n_frames, width=cfg.width, height=cfg.height, yaw_max_deg=spec.yaw_max_deg,
                       seed=spec.seed)
    gt_path = render_clip(model, cdir, scfg)
    gt, _ = load_ground_truth(gt_path)
    track, lm_s = _track_clip(cdir / "clip.mp4")
    T = track.n_frames
    if T != spec.n_frames:
        raise FitError(f"{spec.name}: read {T} of {spec.n_frames} rendered frames; the video encoder lost frames")
    face = np.asarray(gt["face_mask"], bool) if "face_mask" in gt else np.ones(model.n_vertices, bool)
    gt_vis = np.asarray(gt["visible"], bool)
    gt_head = head_rotation(gt["global_rot"], gt["neck_pose"])
    f_gt = float(gt["K"][0, 0])
    out = {"name": spec.name, "n_frames": T, "yaw_max_deg": spec.yaw_max_deg, "size": [cfg.width, cfg.height],
           "landmarks_valid_frames": int(track.valid.sum()), "landmarks_s": lm_s, "methods": {}}
    clip = _Clip(spec.name)
    timings = {"frames": T, "landmarks_s": lm_s}
    fits: list[MethodFit] = []
    for q in FLAMECAP_METHODS:
        if progress:
            progress("bench", 0.0, f"{spec.name}: FlameCap {q}")
        fits.append(fit_flamecap(track, model, binding, q))
    if progress:
        progress("bench", 0.0, f"{spec.name}: baseline ({cfg.baseline_steps} Adam steps per frame)")
    fits.append(fit_baseline(baseline, track, binding, model, f_gt, cfg.baseline_steps))
    for fit in fits:
        verts = fit_vertices(model, fit.params)
        pred2d = project_points(to_camera(verts, fit.cam_R, fit.cam_t), fit.K)
        ok = fit.valid
        vis = gt_vis & ok[:, None]
        s = M.ssme(gt["points_2d"], pred2d, visible=vis, vertex_mask=face)
        d_mm = np.linalg.norm(verts - gt["vertices"], axis=-1)[:, face].mean(1) * 1000.0      # (T,)
        # the same after removing each frame's face-centroid offset (no rotation, no scale): shape/expression
        cen = (verts[:, face] - verts[:, face].mean(1, keepdims=True)) - \
            (gt["vertices"][:, face] - gt["vertices"][:, face].mean(1, keepdims=True))
        d_c = np.linalg.norm(cen, axis=-1).mean(1) * 1000.0
        jaw = M.rotation_error_deg(fit.params["jaw_pose"], gt["jaw_pose"])
        head = _rot_angle_deg(head_rotation(fit.params["global_rot"], fit.params["neck_pose"]), gt_head)
        out["methods"][fit.method] = {
            "ssme_px": {str(g): v for g, v in s.per_gap.items()}, "ssme_mean_px": _finite(s.mean),
            "vertex_error_mm": _finite(d_mm[ok].mean()) if ok.any() else None,
            "vertex_error_centred_mm": _finite(d_c[ok].mean()) if ok.any() else None,
            "jaw_error_deg": _finite(jaw[ok].mean()) if ok.any() else None,
            "head_rot_error_deg": _finite(head[ok].mean()) if ok.any() else None,
            "focal_error_rel": _finite(M.focal_error_rel(float(fit.K[0, 0]), f_gt)),
            "landmark_residual_px": _finite(fit.landmark_residual_px), "valid_frames": int(ok.sum()),
            "fit_s": fit.seconds, "fit_fps": T / max(fit.seconds, 1e-9),
        }
        timings[fit.method] = fit.seconds
        clip.series.setdefault("vertex error (mm)", {})[fit.method] = np.where(ok, d_mm, np.nan)
        clip.series.setdefault("jaw error (deg)", {})[fit.method] = np.where(ok, jaw, np.nan)
        if fit.method == "production":
            _overlays(clip, cdir / "clip.mp4", model, fit, verts, None, cfg.overlay_frames)
    clip.series["jaw opening (deg)"] = {"ground truth": np.degrees(gt["jaw_pose"][:, 0]),
                                        **{f.method: np.degrees(f.params["jaw_pose"][:, 0]) for f in fits}}
    return out, clip, timings


def run_grid_clip(video: Path, cfg: BenchConfig, model: FlameModelData, binding, baseline: Callable | None,
                  methods: tuple[str, ...] = FLAMECAP_METHODS, focal_fallback_fov: float = 40.0
                  ) -> tuple[dict, _Clip, dict]:
    """Track and fit one real clip; jitter / NME / lag of the fitted landmarks against raw MediaPipe."""
    from . import metrics as M
    track, lm_s = _track_clip(video, end=cfg.grid_frames)
    T = track.n_frames
    valid = np.asarray(track.valid, bool)
    name = video.stem
    out = {"name": name, "n_frames": T, "valid_frames": int(valid.sum()), "landmarks_s": lm_s, "methods": {}}
    clip = _Clip(name)
    timings = {"frames": T, "landmarks_s": lm_s}
    if valid.sum() < 3:
        out["skipped"] = f"MediaPipe found a face on {int(valid.sum())} of {T} frames"
        return out, clip, timings
    pidx = np.asarray(binding.point_index)
    raw = np.asarray(track.points, float)
    raw_b = raw[:, pidx]
    iod = M.inter_ocular_distance(raw)
    out["raw_jitter_px"] = _finite(M.jitter(raw_b, valid))
    fits = [fit_flamecap(track, model, binding, q) for q in methods]
    if baseline is not None:
        w, _ = track.image_size
        f = float(fits[-1].K[0, 0]) if fits else (w / 2) / math.tan(math.radians(focal_fallback_fov) / 2)
        fits.append(fit_baseline(baseline, track, binding, model, f, cfg.baseline_steps))
    for fit in fits:
        verts = fit_vertices(model, fit.params)
        pts = project_points(to_camera(bound_points(verts, model.faces, binding.face_idx, binding.bary),
                                       fit.cam_R, fit.cam_t), fit.K)
        ok = valid & fit.valid
        jit = M.jitter(pts, ok)
        per_frame = np.nanmean(np.linalg.norm(pts - raw_b, axis=-1), axis=1) / iod
        out["methods"][fit.method] = {
            "jitter_px": _finite(jit), "jitter_ratio_vs_raw": _finite(jit / out["raw_jitter_px"])
            if out["raw_jitter_px"] else None,
            "nme": _finite(M.reprojection_nme(pts, raw_b, iod, ok)),
            "lag_frames": int(M.lag_frames(raw_b[ok], pts[ok])) if ok.sum() > 3 else None,
            "landmark_residual_px": _finite(fit.landmark_residual_px), "fit_s": fit.seconds, "fit_fps": T / max(fit.seconds, 1e-9),
        }
        timings[fit.method] = fit.seconds
        clip.series.setdefault("NME (inter-ocular)", {})[fit.method] = np.where(ok, per_frame, np.nan)
        if fit is fits[len(methods) - 1]:
            _overlays(clip, video, model, fit, verts, raw_b, cfg.overlay_frames)
    # the jitter signal over time: second difference magnitude of raw vs fitted, mean over points
    acc = lambda p: np.r_[np.nan, np.nanmean(np.linalg.norm(p[2:] - 2 * p[1:-1] + p[:-2], axis=-1), 1), np.nan]  # noqa
    clip.series["landmark acceleration (px/frame²)"] = {"raw MediaPipe": acc(raw_b)}
    return out, clip, timings


# ------------------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------------------
def resolve_model(reference: str | os.PathLike | None) -> tuple[FlameModelData, str]:
    """The bench head: ``reference`` folder → FLAME-topology test head; None → the default reference folder when
    present, else the registered FLAME model, else FlameCap's synthetic head."""
    from .flame.synthetic import flame_reference_head, make_synthetic_model
    if reference is not None:
        ref = Path(reference)
        if not ref.is_dir():
            raise InputError(f"--reference {ref} is not a folder of FLAME reference data")
        return flame_reference_head(ref), f"FLAME-topology test head ({ref})"
    if DEFAULT_REFERENCE.is_dir():
        return flame_reference_head(DEFAULT_REFERENCE), f"FLAME-topology test head ({DEFAULT_REFERENCE})"
    from .errors import ModelError
    from .flame.io import load_model
    try:
        return load_model(None), "registered FLAME model"
    except ModelError:
        return make_synthetic_model(), "FlameCap synthetic head"


def _grid_videos(grid: Path | None, n: int) -> list[Path]:
    if grid is None or n == 0:
        return []
    return sorted(p for p in grid.iterdir() if p.suffix.lower() in VIDEO_EXTS)[:n]


def _summaries(clips: list[dict], keys: tuple[str, ...]) -> dict:
    methods = sorted({m for c in clips for m in c.get("methods", {})}, key=lambda m: (m == BASELINE, m))
    return {m: {k: _mean(c["methods"][m].get(k) for c in clips if m in c.get("methods", {})) for k in keys}
            for m in methods}


def _speed(timings: list[dict]) -> dict:
    frames = sum(t["frames"] for t in timings)
    lm = sum(t["landmarks_s"] for t in timings)
    out = {"frames": frames, "landmarks_s": lm, "landmarks_fps": frames / max(lm, 1e-9), "methods": {}}
    base = sum(t.get(BASELINE, 0.0) for t in timings if BASELINE in t)
    base_frames = sum(t["frames"] for t in timings if BASELINE in t)
    for m in (*FLAMECAP_METHODS, BASELINE):
        rows = [t for t in timings if m in t]
        if not rows:
            continue
        fr = sum(t["frames"] for t in rows)
        fs = sum(t[m] for t in rows)
        lms = sum(t["landmarks_s"] for t in rows)
        d = {"frames": fr, "fit_s": fs, "fit_fps": fr / max(fs, 1e-9), "end_to_end_fps": fr / max(fs + lms, 1e-9)}
        if base_frames and m != BASELINE:
            # speed ratio on the clips both methods fitted
            both = [t for t in rows if BASELINE in t]
            fb, tb, tm = sum(t["frames"] for t in both), sum(t[BASELINE] for t in both), sum(t[m] for t in both)
            lb = sum(t["landmarks_s"] for t in both)
            if fb:
                d["speed_ratio_vs_adam"] = (fb / max(tm, 1e-9)) / (fb / max(tb, 1e-9))
                d["end_to_end_ratio_vs_adam"] = (tb + lb) / max(tm + lb, 1e-9)
        out["methods"][m] = d
    if base_frames:
        out["baseline_fps"] = base_frames / max(base, 1e-9)
    return out


def _fmt(x, nd=2) -> str:
    if x is None:
        return "–"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    return f"{x:.{nd}f}" if abs(x) >= 10 ** -nd or x == 0 else f"{x:.2e}"


def headline_table(report: dict) -> str:
    """The headline figures as a Markdown table (also used for README.md)."""
    syn = report["synthetic"]["summary"]
    real = report.get("real", {}).get("summary", {})
    sp = report["speed"]["methods"]
    rows = ["| method | SSME mean (px) | face vertex error (mm) | centred (mm) | jaw err (deg) | head rot err (deg) | "
            "GRID NME | GRID jitter / raw MediaPipe | fit frames/s | end-to-end frames/s | fit speed vs Adam |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    names = {"fast": "FlameCap fast", "production": "FlameCap production", BASELINE: "per-frame Adam baseline"}
    for m in (*FLAMECAP_METHODS, BASELINE):
        if m not in syn:
            continue
        s, r, p = syn[m], real.get(m, {}), sp.get(m, {})
        ratio = "1×" if m == BASELINE else (f"{p['speed_ratio_vs_adam']:.2f}×" if p.get("speed_ratio_vs_adam")
                                             else "–")
        rows.append(f"| {names[m]} | {_fmt(s.get('ssme_mean_px'))} | {_fmt(s.get('vertex_error_mm'))} | "
                    f"{_fmt(s.get('vertex_error_centred_mm'))} | "
                    f"{_fmt(s.get('jaw_error_deg'))} | {_fmt(s.get('head_rot_error_deg'))} | "
                    f"{_fmt(r.get('nme'), 4)} | {_fmt(r.get('jitter_ratio_vs_raw'))} | {_fmt(p.get('fit_fps'), 1)} | "
                    f"{_fmt(p.get('end_to_end_fps'), 1)} | {ratio} |")
    return "\n".join(rows)


def write_markdown(report: dict, path: Path) -> None:
    syn = report["synthetic"]
    lines = [f"# FlameCap benchmark{' (quick)' if report['quick'] else ''}", "",
             f"Head: {report['model']['description']} ({report['model']['n_vertices']} vertices). "
             f"Machine: {report['machine']['platform']}, torch threads {report['machine']['torch_threads']}. "
             f"Baseline: {report['config']['baseline_steps']} Adam steps per frame, frames batched, true focal on "
             f"synthetic clips, FlameCap's estimated focal on real clips.", "", "## Headline", "",
             headline_table(report), "",
             f"MediaPipe landmarks: {report['speed']['landmarks_fps']:.1f} frames/s. SSME on face-region vertices "
             "visible in the ground truth; vertex error without alignment (a fitted camera distance / scale that "
             "differs from the truth is counted); 'centred' removes each frame's face-centroid offset (no rotation or "
             "scale), isolating shape and expression. NME and jitter: projected bound landmarks vs raw MediaPipe on "
             "real footage.", "", "## Synthetic clips (ground truth)", "",
             "| clip | frames | yaw max | method | SSME " + " | ".join(f"g{g}" for g in report["ssme_gaps"]) +
             " | SSME mean | vertex mm | centred mm | jaw deg | head deg | focal rel | fit px | fit s |",
             "|---|---|---|---|" + "---|" * (len(report["ssme_gaps"]) + 9)]
    for c in syn["clips"]:
        for m, v in c["methods"].items():
            gaps = " | ".join(_fmt(v["ssme_px"].get(str(g))) for g in report["ssme_gaps"])
            lines.append(f"| {c['name']} | {c['n_frames']} | {c['yaw_max_deg']:.0f}° | {m} | {gaps} | "
                         f"{_fmt(v['ssme_mean_px'])} | {_fmt(v['vertex_error_mm'])} | "
                         f"{_fmt(v['vertex_error_centred_mm'])} | "
                         f"{_fmt(v['jaw_error_deg'])} | "
                         f"{_fmt(v['head_rot_error_deg'])} | {_fmt(v['focal_error_rel'], 3)} | "
                         f"{_fmt(v['landmark_residual_px'])} | {_fmt(v['fit_s'])} |")
    real = report.get("real", {})
    lines += ["", "## Real footage (GRID)", ""]
    if real.get("skipped"):
        lines.append(f"Skipped: {real['skipped']}.")
    else:
        lines += ["| clip | frames | face found | raw jitter px | method | jitter px | ratio | NME | lag | fit s |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for c in real["clips"]:
            if c.get("skipped"):
                lines.append(f"| {c['name']} | {c['n_frames']} | {c['valid_frames']} | – | skipped: {c['skipped']} "
                             f"| | | | | |")
            for m, v in c["methods"].items():
                lines.append(f"| {c['name']} | {c['n_frames']} | {c['valid_frames']} | {_fmt(c['raw_jitter_px'], 3)} "
                             f"| {m} | {_fmt(v['jitter_px'], 3)} | {_fmt(v['jitter_ratio_vs_raw'])} | "
                             f"{_fmt(v['nme'], 4)} | {v['lag_frames']} | {_fmt(v['fit_s'])} |")
    lines += ["", "## Speed", "",
              "| method | frames | fit s | fit frames/s | end-to-end frames/s | fit speed vs Adam |",
              "|---|---|---|---|---|---|"]
    for m, v in report["speed"]["methods"].items():
        lines.append(f"| {m} | {v['frames']} | {_fmt(v['fit_s'])} | {_fmt(v['fit_fps'], 1)} | "
                     f"{_fmt(v['end_to_end_fps'], 1)} | {_fmt(v.get('speed_ratio_vs_adam'), 1)} |")
    lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({p})" for p in report["plots"]]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_plots(clips: list[_Clip], out_dir: Path) -> list[str]:
    """Error-over-time figure per clip and one overlay sheet per clip; returns file names (relative)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = []
    for c in clips:
        if c.series:
            fig, axes = plt.subplots(len(c.series), 1, figsize=(8, 2.4 * len(c.series)), squeeze=False)
            for ax, (title, per) in zip(axes[:, 0], c.series.items()):
                for label, y in per.items():
                    ax.plot(np.arange(len(y)), y, label=label, lw=1.2)
                ax.set_ylabel(title, fontsize=8)
                ax.legend(fontsize=7, loc="upper right")
                ax.grid(alpha=0.3)
            axes[-1, 0].set_xlabel("frame")
            fig.suptitle(f"{c.name}: over time", fontsize=10)
            fig.tight_layout()
            name = f"{c.name}_over_time.png"
            _save_fig(fig, out_dir / name)
            plt.close(fig)
            names.append(name)
        if c.overlays:
            n = len(c.overlays)
            fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.0), squeeze=False)
            for ax, (title, img) in zip(axes[0], c.overlays):
                ax.imshow(img)
                ax.set_title(title, fontsize=7)
                ax.axis("off")
            fig.tight_layout()
            name = f"{c.name}_overlay.png"
            _save_fig(fig, out_dir / name)
            plt.close(fig)
            names.append(name)
    return names


def _save_fig(fig, path: Path) -> None:
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=90)
    os.replace(tmp, path)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)


def run_bench(out_dir: str | os.PathLike, cfg: BenchConfig, grid: str | os.PathLike | None = None,
              reference: str | os.PathLike | None = None, baseline: str | os.PathLike | None = DEFAULT_BASELINE,
              progress: ProgressCallback | None = None) -> dict:
    """Run the bench and write ``report.json``, ``report.md`` and plots into ``out_dir``; returns the report.

    grid: a folder of real clips (None → ``../shared/data/footage/grid`` when present, else none)."""
    import torch

    from .binding import bind
    from .metrics import SSME_GAPS
    from .optional import require
    require("matplotlib", "flamecap bench (its plots)")     # the plots come last: fail before the slow part
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    if grid is not None and not Path(grid).is_dir():
        raise InputError(f"--grid {grid} is not a folder of video clips")
    grid_dir = Path(grid) if grid is not None else (DEFAULT_GRID if DEFAULT_GRID.is_dir() else None)
    videos = _grid_videos(grid_dir, cfg.grid_clips)
    if grid is not None and cfg.grid_clips and not videos:
        raise InputError(f"--grid {grid} holds no video clips ({', '.join(VIDEO_EXTS)})")
    baseline_fn = load_baseline(baseline)
    prog = progress or (lambda *a: None)
    prog("bench", 0.0, "loading the head model")
    model, model_desc = resolve_model(reference)
    prog("bench", 0.02, "binding MediaPipe points to the head (self-calibration, cached)")
    binding = bind("mediapipe478", model)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_steps = len(cfg.synth_clips) + len(videos)
    done = 0
    syn_clips, real_clips, plot_clips, syn_t, real_t = [], [], [], [], []
    with tempfile.TemporaryDirectory(prefix="flamecap_bench_") as td:
        work = Path(td)
        for spec in cfg.synth_clips:
            prog("bench", done / n_steps, f"synthetic clip {spec.name}")
            m, c, t = run_synthetic_clip(spec, cfg, model, binding, baseline_fn, work, prog)
            syn_clips.append(m)
            plot_clips.append(c)
            syn_t.append(t)
            done += 1
        for k, v in enumerate(videos):
            prog("bench", done / n_steps, f"real clip {v.name}")
            m, c, t = run_grid_clip(v, cfg, model, binding, baseline_fn if k < cfg.baseline_grid_clips else None,
                                    FLAMECAP_METHODS if k < cfg.production_grid_clips else ("fast",))
            real_clips.append(m)
            if k < 2:
                plot_clips.append(c)
            real_t.append(t)
            done += 1
        prog("bench", 0.98, "writing plots")
        plots = write_plots(plot_clips, out_dir)
    syn_keys = ("ssme_mean_px", "vertex_error_mm", "vertex_error_centred_mm", "jaw_error_deg", "head_rot_error_deg",
                "focal_error_rel",
                "landmark_residual_px")
    real_keys = ("jitter_px", "jitter_ratio_vs_raw", "nme", "lag_frames", "landmark_residual_px")
    report: dict[str, Any] = {
        "format": REPORT_FORMAT, "version": REPORT_VERSION, "quick": cfg.quick,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {"platform": platform.platform(), "processor": platform.machine(), "cpus": os.cpu_count(),
                    "torch_threads": torch.get_num_threads()},
        "config": asdict(cfg),
        "model": {"description": model_desc, "release": model.release, "n_vertices": model.n_vertices,
                  "binding_points": int(len(binding.point_index))},
        "ssme_gaps": list(SSME_GAPS),
        "synthetic": {"clips": syn_clips, "summary": _summaries(syn_clips, syn_keys)},
        "real": ({"clips": real_clips, "summary": _summaries([c for c in real_clips if not c.get("skipped")],
                                                               real_keys)}
                 if videos else {"skipped": "no real footage (pass --grid DIR)" if grid_dir is None
                                 else "no real clips requested", "clips": [], "summary": {}}),
        "speed": _speed(syn_t + [t for t in real_t if len(t) > 2]),
        "plots": plots,
    }
    report["speed"]["synthetic"] = _speed(syn_t)
    report["total_s"] = time.perf_counter() - t_start
    text = json.dumps(report, indent=2, default=_json_default, allow_nan=False)
    tmp = out_dir / ".report.json.tmp"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, out_dir / "report.json")
    tmp = out_dir / ".report.md.tmp"
    write_markdown(report, tmp)
    os.replace(tmp, out_dir / "report.md")
    prog("bench", 1.0, f"wrote {out_dir / 'report.json'}")
    return report
