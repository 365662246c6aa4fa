"""Ground truth rendered with Blender Cycles: FLAME-format heads driven by known parameters, tracked with
``flamecap track`` using the same head as the model, and scored on what an artist sees.

Rigs (:func:`make_rig`):

- ``synthetic``: FlameCap's own synthetic head (:func:`flamecap.flame.synthetic.make_synthetic_model`;
  not FLAME topology);
- ``test``: the FLAME-topology test head (the one ``flamecap bench`` uses);
- ``alt``: the FLAME-topology head with a *different expression basis and jaw skinning*, standing in for a
  user's FLAME release that differs from the project's test head: the test head built with another seed
  (other random expression modes and pose correctives), its expression basis mixed by a random orthogonal
  matrix (each coefficient now moves several regions at once, as in a PCA basis), and jaw weights raised to the
  power 0.5 (a softer, wider jaw falloff: cheeks and mouth corners follow the jaw more).

Motion: :func:`flamecap.synth.motion_sequence` (talking jaw up to 20°, expressions, eyelid blinks, gaze steps,
yaw sweep to ±40°, pitch/roll), 1280×720, the camera at a distance that keeps the head ~⅔ of the frame height
for each lens. Appearance: the rig's painted albedo (brows, lips, lash lines, iris and pupil) with a dark mouth interior
(:func:`render_albedo`), dark back faces through the open mouth, key and fill area lights
(:mod:`blender_addon.gt_render`), over a smooth textured backdrop of random colours.

Clips are cached in ``REFDATA/renders/NAME-KEY/`` (frames, ``gt.npz``, the rig ``model.npz``) keyed by the clip
spec and the render settings, so re-tracking after a fitter change needs no rendering.

Metrics per clip and quality: jaw opening ratio (least-squares slope of fitted on true opening angle), jaw,
head (camera frame) and eye rotation errors, gaze direction error (camera frame), per-frame Procrustes face
error (similarity-aligned face-region vertices, mm) next to the neutral template's, relative focal error, SSME,
and the true reprojection error of the visible face next to the result's stored ``landmark_residual_px``.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..contract.model_format import FlameModelData
from ..errors import FlameCapError, InputError
from .tracking import DEFAULT_TRACK_CMD, ensure_result, write_report, result_vertices

REPORT_FORMAT = "flamecap.reference-renders"
RENDER_VERSION = 2          # bump when the scene or the ground truth written changes
RIGS = ("synthetic", "test", "alt")
ALT_SEED = 7
ALT_JAW_POWER = 0.5
JAW = 2                     # joint index (root, neck, jaw, eye_l, eye_r)


@dataclass(frozen=True)
class RenderClip:
    name: str
    rig: str
    focal_px: float
    n_frames: int = 32
    yaw_max_deg: float = 40.0
    seed: int = 0


@dataclass(frozen=True)
class RenderSettings:
    width: int = 1280
    height: int = 720
    fps: float = 25.0
    samples: int = 4             # Cycles samples per pixel (2 shared CPU cores: keep it cheap), then a 3×3 blur
    denoise: bool = False        # OpenImageDenoise triples the time per frame here
    threads: int = 2
    head_frac: float = 0.62      # head height (≈0.24 m) over the frame height: sets the camera distance


DEFAULT_CLIPS = (                       # three rigs first, then a long lens
    RenderClip("synthetic_f1000", "synthetic", 1000.0, seed=11),
    RenderClip("testhead_f900", "test", 900.0, seed=12),
    RenderClip("altrig_f1400", "alt", 1400.0, seed=14),
    RenderClip("testhead_f2000", "test", 2000.0, seed=13),
)


def select_render_clips(spec: str) -> tuple[RenderClip, ...]:
    """``all`` or comma-separated names of :data:`DEFAULT_CLIPS`."""
    if spec == "all":
        return DEFAULT_CLIPS
    by_name = {c.name: c for c in DEFAULT_CLIPS}
    names = [n.strip() for n in spec.split(",") if n.strip()]
    bad = [n for n in names if n not in by_name]
    if bad or not names:
        raise InputError(f"--render-clips: unknown clip {', '.join(bad) or spec!r}; use all or some of "
                         f"{', '.join(by_name)}")
    return tuple(by_name[n] for n in names)


def make_rig(name: str, ref_dir: Path) -> FlameModelData:
    """The head of a rig name (see the module docstring)."""
    from ..flame.synthetic import flame_reference_head, make_synthetic_model
    if name == "synthetic":
        return make_synthetic_model()
    if name == "test":
        return flame_reference_head(ref_dir)
    if name != "alt":
        raise InputError(f"unknown rig '{name}'; use {', '.join(RIGS)}")
    base = flame_reference_head(ref_dir, seed=ALT_SEED)
    a = {k: np.array(v) for k, v in base.arrays.items()}
    E = a["exprdirs"].shape[2]
    q, r = np.linalg.qr(np.random.default_rng(ALT_SEED).normal(size=(E, E)))
    q = q * np.sign(np.diag(r))                                       # a proper random orthogonal mix
    a["exprdirs"] = np.einsum("vce,ef->vcf", a["exprdirs"].astype(np.float64), q).astype(np.float32)
    w = a["weights"].astype(np.float64)
    jaw = np.clip(w[:, JAW], 0.0, 1.0)
    jaw_new = jaw ** ALT_JAW_POWER
    rest = 1.0 - jaw
    scale = np.where(rest > 1e-9, (1.0 - jaw_new) / np.maximum(rest, 1e-9), 0.0)
    w = w * scale[:, None]
    w[:, JAW] = jaw_new
    a["weights"] = (w / w.sum(1, keepdims=True)).astype(np.float32)
    meta = dict(base.meta, release="flame-topology-alt-rig", alt_seed=ALT_SEED, alt_jaw_power=ALT_JAW_POWER)
    return FlameModelData(arrays=a, meta=meta)


def camera_distance(focal_px: float, s: RenderSettings) -> float:
    return float(focal_px) * 0.24 / (s.head_frac * s.height)


def clip_key(clip: RenderClip, s: RenderSettings) -> str:
    text = json.dumps({"clip": asdict(clip), "settings": asdict(s), "version": RENDER_VERSION}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def ground_truth(rig: FlameModelData, clip: RenderClip, s: RenderSettings) -> dict[str, np.ndarray]:
    """Parameters, vertices (T, V, 3) FLAME world, camera, 2D points and per-vertex visibility of a clip."""
    import torch

    from ..contract.conventions import DEFAULT_CAM_R, DEFAULT_CAM_T
    from ..flame.layer import FlameLayer, FlameParams
    from ..render import project, vertex_visibility
    from ..synth import SynthConfig, motion_sequence
    cfg = SynthConfig(n_frames=clip.n_frames, fps=s.fps, width=s.width, height=s.height,
                      yaw_max_deg=clip.yaw_max_deg, distance_m=camera_distance(clip.focal_px, s), seed=clip.seed)
    params = motion_sequence(rig, cfg)
    with torch.no_grad():
        verts = FlameLayer(rig)(FlameParams(**{k: torch.from_numpy(v) for k, v in params.items()})).vertices
    verts = verts.numpy().astype(np.float64)
    K = np.array([[clip.focal_px, 0, s.width / 2.0], [0, clip.focal_px, s.height / 2.0], [0, 0, 1.0]])
    cam = verts @ DEFAULT_CAM_R.T + DEFAULT_CAM_T
    vis = np.stack([vertex_visibility(c, rig.faces, K, (s.width, s.height)) for c in cam])
    return {**params, "vertices": verts.astype(np.float32), "vertices_cam": cam.astype(np.float32),
            "points_2d": project(cam, K).astype(np.float32), "visible": vis, "K": K, "cam_R": DEFAULT_CAM_R,
            "cam_t": DEFAULT_CAM_T, "image_size": np.array([s.width, s.height]),
            "face_mask": np.asarray(rig["face_mask"], bool)}


MOUTH_INTERIOR = np.array([0.16, 0.05, 0.05])


def render_albedo(rig: FlameModelData, open_rad: float = 0.35, stretch: float = 1.8) -> np.ndarray:
    """The rig's albedo with the mouth interior painted dark. The rigs paint everything inside the outer-lip
    contour as lip, and their smooth jaw weights stretch the lips' inner surfaces into a sheet across the opening,
    so an open mouth rendered as a pink plug. Interior = vertices near the mouth whose adjacent triangles grow
    more than ``stretch``× in area when the jaw opens by ``open_rad`` (lips themselves barely stretch)."""
    import torch

    from ..flame.layer import FlameLayer, FlameParams
    albedo = np.array(rig["vertex_albedo"], np.float64)
    faces = np.asarray(rig.faces)
    jaw = torch.zeros(2, 3)
    jaw[1, 0] = open_rad
    with torch.no_grad():
        verts = FlameLayer(rig)(FlameParams(jaw_pose=jaw)).vertices.numpy().astype(np.float64)
    area = [np.linalg.norm(np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]]), axis=1)
            for v in verts]
    ratio = area[1] / np.maximum(area[0], 1e-15)
    grow = np.zeros(len(albedo))
    np.maximum.at(grow, faces.ravel(), np.repeat(ratio, 3))
    tri = verts[0][faces[np.asarray(rig["lmk68_face_idx"])]]
    lmk = np.einsum("kcd,kc->kd", tri, np.asarray(rig["lmk68_bary"], float))
    centre, half_w = lmk[48:68].mean(0), 0.5 * np.linalg.norm(lmk[54] - lmk[48])
    interior = (np.linalg.norm(verts[0] - centre, axis=1) < 1.2 * half_w) & (grow > stretch)
    albedo[interior] = MOUTH_INTERIOR
    return albedo


def render_boxes(points_2d: np.ndarray, s: RenderSettings, margin: float = 12.0) -> np.ndarray:
    """Per-frame box (T, 4: x0, y0, x1, y1 px) around the projected head, the only region Cycles traces."""
    lo = np.floor(np.nanmin(points_2d, axis=1) - margin)
    hi = np.ceil(np.nanmax(points_2d, axis=1) + margin)
    box = np.concatenate([lo, hi], 1)
    return np.clip(box, 0, [s.width, s.height, s.width, s.height])


def composite(frames_rgba: Path, out: Path, seed: int, s: RenderSettings) -> int:
    """Head renders (RGBA PNG; a 3×3 blur takes the edge off the few-sample noise) over a smooth, textured
    backdrop (:func:`flamecap.synth._background`) → JPEG frames in ``out``; returns how many."""
    import cv2

    from ..synth import _background
    bg = _background(np.random.default_rng(seed + 1000), s.width, s.height).astype(np.float32)[..., ::-1]
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for p in sorted(frames_rgba.glob("*.png")):
        im = cv2.imread(str(p), cv2.IMREAD_UNCHANGED).astype(np.float32) / 255.0   # straight alpha
        im[..., :3] *= im[..., 3:4]                                                 # premultiplied, then blurred
        im = cv2.GaussianBlur(im, (3, 3), 0)
        rgb = 255.0 * im[..., :3] + bg * (1.0 - im[..., 3:4])
        cv2.imwrite(str(out / f"{p.stem}.jpg"), np.clip(rgb + 0.5, 0, 255).astype(np.uint8),
                    [cv2.IMWRITE_JPEG_QUALITY, 92])
        n += 1
    return n


def render_clip(clip: RenderClip, s: RenderSettings, ref_dir: Path, cache: Path, reuse_only: bool = False,
                blender_python: str = "", progress=None) -> Path:
    """The cached clip folder (``frames/``, ``gt.npz``, ``model.npz``), rendered now when missing."""
    from ..contract.model_format import save_model_npz
    from ..headless_blender import run_job
    d = cache / f"{clip.name}-{clip_key(clip, s)}"
    if (d / "done.json").is_file():
        return d
    if reuse_only:
        raise InputError(f"--reuse-renders: {clip.name} is not rendered in {cache} (run once without it)")
    rig = make_rig(clip.rig, ref_dir)
    tmp = cache / f".{d.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        gt = ground_truth(rig, clip, s)
        scene = {"vertices_cam": gt["vertices_cam"], "faces": np.asarray(rig.faces),
                 "albedo": render_albedo(rig).astype(np.float32), "K": gt["K"], "image_size": gt["image_size"],
                 "samples": np.array(s.samples), "threads": np.array(s.threads), "denoise": np.array(s.denoise),
                 "border": render_boxes(gt["points_2d"], s)}
        np.savez(tmp / "scene.npz", **scene)
        t0 = time.perf_counter()
        if progress:
            progress("reference", 0.0, f"{clip.name}: rendering {clip.n_frames} frames with Cycles")
        run_job(["gtrender", str(tmp / "scene.npz"), str(tmp / "rgba")], python=blender_python,
                timeout_s=120 * clip.n_frames + 300, what=f"render of {clip.name}")
        n = composite(tmp / "rgba", tmp / "frames", clip.seed, s)
        if n != clip.n_frames:
            raise FlameCapError(f"render of {clip.name}: {n} of {clip.n_frames} frames written")
        shutil.rmtree(tmp / "rgba")
        (tmp / "scene.npz").unlink()
        np.savez_compressed(tmp / "gt.npz", **{k: v for k, v in gt.items() if k != "vertices_cam"})
        save_model_npz(tmp / "model.npz", rig)
        (tmp / "done.json").write_text(json.dumps({"clip": asdict(clip), "settings": asdict(s),
                                                   "render_s": time.perf_counter() - t0}), encoding="utf-8")
        if d.exists():
            shutil.rmtree(d)
        os.replace(tmp, d)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return d


# ------------------------------------------------------------------------------------------------- metrics
def similarity_align(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``src`` (N, 3) moved by the least-squares similarity (rotation, uniform scale, translation) onto ``dst``
    (Umeyama 1991)."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    U, S, Vt = np.linalg.svd(b.T @ a)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    R = U @ D @ Vt
    scale = np.trace(np.diag(S) @ D) / max((a ** 2).sum(), 1e-18)
    return scale * a @ R.T + md


def procrustes_error_mm(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-frame mean vertex distance (mm) after similarity alignment: pred (T, N, 3) or (N, 3), gt (T, N, 3)."""
    pred = np.broadcast_to(pred, gt.shape)
    return np.array([np.linalg.norm(similarity_align(p, g) - g, axis=1).mean() for p, g in zip(pred, gt)]) * 1000


def jaw_opening_ratio(fit_deg: np.ndarray, gt_deg: np.ndarray) -> float:
    """Least-squares slope through the origin of the fitted on the true opening angle (1 = opens as far)."""
    den = float(np.sum(gt_deg ** 2))
    return float(np.sum(fit_deg * gt_deg) / den) if den > 0 else float("nan")


def lip_gap_mm(verts: np.ndarray, rig: FlameModelData) -> np.ndarray:
    """(T,) distance between the inner lip centres (MediaPipe points 13 and 14, bound to the rig the way
    ``flamecap track`` binds them), mm: how far the mouth is open, whatever mix of jaw and expression opens it
    (NaN where the rig binds neither)."""
    from ..binding import bind
    b = bind("mediapipe478", rig)
    rows = [np.flatnonzero(b.point_index == k) for k in (13, 14)]
    if not all(r.size for r in rows):              # a head too coarse for those points to bind
        return np.full(len(verts), np.nan)
    r = np.array([int(x[0]) for x in rows])
    tri = np.asarray(verts)[:, np.asarray(rig["faces"], np.int64)[b.face_idx[r]]]     # (T, 2, 3, 3)
    up, lo = np.moveaxis(np.einsum("rk,trkc->trc", np.asarray(b.bary[r], np.float64), tri), 1, 0)
    return np.linalg.norm(up - lo, axis=-1) * 1000.0


def _world_rot(rotvec_chain: list[np.ndarray]) -> np.ndarray:
    from ..contract.conventions import axis_angle_to_matrix
    R = axis_angle_to_matrix(rotvec_chain[0])
    for r in rotvec_chain[1:]:
        R = R @ axis_angle_to_matrix(r)
    return R


def _angle_deg(Ra: np.ndarray, Rb: np.ndarray) -> np.ndarray:
    rel = np.swapaxes(Ra, -1, -2) @ Rb
    return np.degrees(np.arccos(np.clip((np.trace(rel, axis1=-2, axis2=-1) - 1) / 2, -1, 1)))


def _f(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def clip_metrics(gt: dict[str, np.ndarray], rig: FlameModelData, result) -> dict[str, Any]:
    """Every figure of one tracked clip (see the module docstring)."""
    from ..bench import project_points, to_camera
    from ..metrics import ssme
    from .metrics68 import amplitude_ratio, correlation
    ok = np.asarray(result["valid"], bool)
    face = np.asarray(gt["face_mask"], bool)
    verts = result_vertices(result, rig)
    cam_R, cam_t, K = (np.asarray(result[k], float) for k in ("cam_R", "cam_t", "K"))
    pred2d = project_points(to_camera(verts, cam_R, cam_t), K)
    gt2d = np.asarray(gt["points_2d"], float)
    vis = np.asarray(gt["visible"], bool) & ok[:, None] & face[None]
    reproj = np.linalg.norm(pred2d - gt2d, axis=-1)
    jaw_fit, jaw_gt = np.degrees(result["jaw_pose"][:, 0]), np.degrees(gt["jaw_pose"][:, 0])
    jaw_err = _angle_deg(_world_rot([result["jaw_pose"]]), _world_rot([gt["jaw_pose"]]))
    head_fit = cam_R @ _world_rot([result["global_rot"], result["neck_pose"]])
    head_gt = np.asarray(gt["cam_R"], float) @ _world_rot([gt["global_rot"], gt["neck_pose"]])
    eyes = {}
    for side, sl in (("left", slice(0, 3)), ("right", slice(3, 6))):
        e_fit = head_fit @ _world_rot([result["eye_pose"][:, sl]])
        e_gt = head_gt @ _world_rot([gt["eye_pose"][:, sl]])
        gaze = np.degrees(np.arccos(np.clip(np.sum(e_fit[..., :, 2] * e_gt[..., :, 2], -1), -1, 1)))
        local = _angle_deg(_world_rot([result["eye_pose"][:, sl]]), _world_rot([gt["eye_pose"][:, sl]]))
        eyes[side] = (gaze, local)
    gt_face = np.asarray(gt["vertices"], float)[:, face]
    proc = procrustes_error_mm(verts[:, face], gt_face)
    neutral = procrustes_error_mm(np.asarray(rig["v_template"], float)[face], gt_face)
    s = ssme(gt2d, pred2d, visible=np.asarray(gt["visible"], bool) & ok[:, None], vertex_mask=face)
    f_gt = float(gt["K"][0, 0])
    gt_cam = to_camera(np.asarray(gt["vertices"], float), gt["cam_R"], gt["cam_t"])
    depth_fit = np.mean(to_camera(verts[ok], cam_R, cam_t)[:, face, 2]) if ok.any() else np.nan
    depth_gt = np.mean(gt_cam[ok][:, face, 2]) if ok.any() else np.nan
    m = lambda x: _f(np.mean(x[ok])) if ok.any() else None  # noqa: E731
    out = {"valid_frames": int(ok.sum()), "frames": int(len(ok)),
           "jaw_opening_ratio": _f(jaw_opening_ratio(jaw_fit[ok], jaw_gt[ok])),
           "jaw_opening_corr": _f(correlation(jaw_fit, jaw_gt, ok)),
           "jaw_open_max_deg": {"fit": _f(jaw_fit[ok].max()), "true": _f(jaw_gt.max())},
           "jaw_error_deg": m(jaw_err), "head_rot_error_deg": m(_angle_deg(head_fit, head_gt)),
           "gaze_error_deg": m((eyes["left"][0] + eyes["right"][0]) / 2),
           "eye_rot_error_deg": m((eyes["left"][1] + eyes["right"][1]) / 2),
           "procrustes_face_mm": m(proc), "neutral_template_procrustes_mm": m(neutral),
           "procrustes_ratio_vs_neutral": _f(np.mean(proc[ok]) / np.mean(neutral[ok])) if ok.any() else None,
           "focal_px": {"fit": float(K[0, 0]), "true": f_gt},
           "focal_error_pct": _f(100.0 * abs(float(K[0, 0]) - f_gt) / f_gt),
           "focal_observable": (getattr(result, "meta", {}).get("fit") or {}).get("focal_observable"),
           "depth_error_pct": _f(100.0 * (depth_fit / depth_gt - 1.0)) if ok.any() else None,
           "ssme_mean_px": _f(s.mean), "ssme_px": {str(g): v for g, v in s.per_gap.items()},
           "true_reprojection_px": _f(reproj[vis].mean()) if vis.any() else None,
           "stored_residual_px": _f(np.nanmean(np.asarray(result["landmark_residual_px"], float)[ok])) if ok.any()
           else None}
    gap_fit, gap_gt = lip_gap_mm(verts, rig), lip_gap_mm(np.asarray(gt["vertices"], float), rig)
    out["mouth_opening_ratio"] = _f(amplitude_ratio(gap_fit, gap_gt, ok))
    out["mouth_opening_corr"] = _f(correlation(gap_fit, gap_gt, ok))
    if "eyelids" in gt and "eyelids" in result:
        out["eyelid_corr"] = _f(correlation(np.asarray(result["eyelids"], float).mean(1),
                                            np.asarray(gt["eyelids"], float).mean(1), ok))
    return out


SUMMARY_KEYS = ("jaw_opening_ratio", "jaw_opening_corr", "mouth_opening_ratio", "mouth_opening_corr", "jaw_error_deg", "head_rot_error_deg", "gaze_error_deg",
                "eye_rot_error_deg",
                "procrustes_face_mm", "neutral_template_procrustes_mm", "procrustes_ratio_vs_neutral",
                "focal_error_pct", "depth_error_pct", "ssme_mean_px", "true_reprojection_px", "stored_residual_px",
                "eyelid_corr")


def summarise(clips: list[dict]) -> dict[str, dict]:
    qs = list(dict.fromkeys(q for c in clips for q in c["qualities"]))
    out = {}
    for q in qs:
        rows = [c["qualities"][q] for c in clips if q in c["qualities"]]
        out[q] = {}
        for k in SUMMARY_KEYS:
            v = [r[k] for r in rows if r.get(k) is not None]
            out[q][k] = float(np.mean(v)) if v else None
    return out


def _fmt(x, nd=2) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


COLUMNS = (("jaw ratio", "jaw_opening_ratio", 3), ("jaw r", "jaw_opening_corr", 2),
           ("mouth ratio", "mouth_opening_ratio", 2), ("mouth r", "mouth_opening_corr", 2), ("jaw °", "jaw_error_deg", 2),
           ("head °", "head_rot_error_deg", 2),
           ("gaze °", "gaze_error_deg", 2), ("eye rot °", "eye_rot_error_deg", 2),
           ("Procrustes mm", "procrustes_face_mm", 2), ("neutral mm", "neutral_template_procrustes_mm", 2),
           ("ratio", "procrustes_ratio_vs_neutral", 3), ("focal err %", "focal_error_pct", 1),
           ("depth err %", "depth_error_pct", 1), ("SSME px", "ssme_mean_px", 2),
           ("true reproj px", "true_reprojection_px", 2), ("stored fit px", "stored_residual_px", 2),
           ("eyelid r", "eyelid_corr", 2))


def markdown(report: dict) -> str:
    head = "| clip | rig | focal | quality | fitted focal | " + " | ".join(t for t, _, _ in COLUMNS) + " |"
    sep = "|" + "---|" * (len(COLUMNS) + 5)
    lines = [f"# Rendered ground truth (Blender Cycles, {report['settings']['width']}×{report['settings']['height']}, "
             f"{report['settings']['samples']} samples{' + denoise' if report['settings']['denoise'] else ''})", "",
             report["notes"], "", head, sep]
    for c in report["clips"]:
        for q, v in c["qualities"].items():
            obs = {True: "", False: " (not observable)", None: ""}[v.get("focal_observable")]
            lines.append(f"| {c['name']} | {c['rig']} | {c['focal_px']:.0f} | {q} | {v['focal_px']['fit']:.0f}{obs} | " +
                         " | ".join(_fmt(v.get(k), nd) for _, k, nd in COLUMNS) + " |")
    lines += ["", "## Mean over clips", "", "| quality | " + " | ".join(t for t, _, _ in COLUMNS) + " |",
              "|" + "---|" * (len(COLUMNS) + 1)]
    for q, v in report["summary"].items():
        lines.append(f"| {q} | " + " | ".join(_fmt(v.get(k), nd) for _, k, nd in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


NOTES = ("Tracked with `flamecap track` (estimated focal; '(not observable)' where the result says the clip "
         "does not determine it) using the rendering rig as the model. jaw ratio: "
         "least-squares slope of fitted on true jaw opening (x rotation); jaw r: their correlation. mouth ratio: "
         "std of the fitted inner-lip gap (MediaPipe points 13–14 on the mesh) over the true one; mouth r: their "
         "correlation. Rotation "
         "errors: geodesic, mean over "
         "valid frames; head in the camera frame; gaze: angle between fitted and true eye forward axes in the "
         "camera frame; eye rot: the eye joints' own rotation. Procrustes: per frame, face-region vertices "
         "similarity-aligned to the truth, mean distance; neutral = the rig's template with no fit. depth err: mean "
         "face depth over the true one − 1. true reproj: projected face vertices (visible in the truth) vs their "
         "true positions; stored fit px: the result's landmark_residual_px (a residual to the detector's points).")


def run_render_reference(out_dir: Path, qualities: tuple[str, ...] = ("fast",), refdata: Path | None = None,
                         results_dir: Path | None = None, track_cmd: str = DEFAULT_TRACK_CMD,
                         reference: Path | None = None, reuse_renders: bool = False,
                         clips: tuple[RenderClip, ...] = DEFAULT_CLIPS, settings: RenderSettings = RenderSettings(),
                         blender_python: str = "", progress=None) -> dict:
    """Render (or reuse), track and score the ground-truth clips; writes ``reference_renders.json`` / ``.md``."""
    from ..bench import DEFAULT_REFERENCE
    from ..contract.model_format import load_model_npz
    from ..contract.result import load_result
    from .paths import default_refdata
    t_start = time.perf_counter()
    refdata = Path(refdata) if refdata else default_refdata()
    ref_dir = Path(reference) if reference else DEFAULT_REFERENCE
    if any(c.rig != "synthetic" for c in clips) and not ref_dir.is_dir():
        raise InputError(f"FLAME reference folder {ref_dir} not found; pass --reference DIR")
    prog = progress or (lambda *a: None)
    cache = refdata / "renders"
    out_dir = Path(out_dir)
    reuse = results_dir is not None
    rdir = Path(results_dir) if reuse else out_dir / "results"
    clips_out = []
    for k, clip in enumerate(clips):
        prog("reference", k / len(clips), f"{clip.name}: render")
        cdir = render_clip(clip, settings, ref_dir, cache, reuse_only=reuse_renders, blender_python=blender_python,
                           progress=prog)
        out_dir.mkdir(parents=True, exist_ok=True)
        rig = load_model_npz(cdir / "model.npz")
        with np.load(cdir / "gt.npz") as z:
            gt = {key: z[key] for key in z.files}
        row = {"name": clip.name, "rig": clip.rig, "focal_px": clip.focal_px, "frames": clip.n_frames,
               "yaw_max_deg": clip.yaw_max_deg, "render_dir": str(cdir), "qualities": {}}
        for q in qualities:
            prog("reference", k / len(clips), f"{clip.name}: track ({q})")
            path, secs = ensure_result(rdir, clip.name, q, cdir / "frames", cdir / "model.npz", track_cmd, reuse)
            row["qualities"][q] = clip_metrics(gt, rig, load_result(path))
            row["qualities"][q]["track_wall_s"] = secs
        clips_out.append(row)
    report = {"format": REPORT_FORMAT, "version": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "notes": NOTES, "settings": asdict(settings), "render_version": RENDER_VERSION,
              "track_cmd": track_cmd, "results_dir": str(rdir), "clips": clips_out, "summary": summarise(clips_out)}
    report["total_s"] = time.perf_counter() - t_start
    out_dir.mkdir(parents=True, exist_ok=True)
    write_report(out_dir, "reference_renders", report, markdown)
    prog("reference", 1.0, f"wrote {out_dir / 'reference_renders.json'}")
    return report
