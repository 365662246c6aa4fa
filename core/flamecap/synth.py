"""Synthetic ground-truth clips: a FLAME-format head driven by known parameters, rendered with the core's
rasterizer, saved as a video plus everything a metric needs (parameters, per-frame vertices, camera, per-vertex
visibility, 2D positions and screen-space flow).

Motion is talking-like: jaw opening from a sum of syllable-rate bumps, a few smooth expressions, blinks, head
rotation up to ±``yaw_max_deg`` yaw with smaller pitch/roll, and slow translation.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .contract.conventions import DEFAULT_CAM_R, DEFAULT_CAM_T, intrinsics_from_fov
from .contract.events import ProgressCallback
from .contract.model_format import FlameModelData
from .contract.npzio import read_npz, write_npz_atomic
from .errors import InputError

log = logging.getLogger(__name__)

GT_FORMAT = "flamecap.synth-gt"


@dataclass(frozen=True)
class SynthConfig:
    n_frames: int = 75
    fps: float = 25.0
    width: int = 480
    height: int = 360
    fov_x_deg: float = 35.0
    distance_m: float = 0.75        # camera to head distance
    yaw_max_deg: float = 30.0
    seed: int = 0

    def __post_init__(self):
        if self.n_frames < 1:
            raise InputError(f"n_frames must be ≥ 1, got {self.n_frames}")
        if not (16 <= self.width <= 4096 and 16 <= self.height <= 4096):
            raise InputError(f"image size {self.width}x{self.height} must be between 16 and 4096 px")
        if not 0 <= self.yaw_max_deg <= 80:
            raise InputError(f"yaw_max_deg must be within 0..80, got {self.yaw_max_deg}")
        if self.fps <= 0 or self.distance_m <= 0.1:
            raise InputError("fps must be > 0 and distance_m > 0.1")


def motion_sequence(model: FlameModelData, cfg: SynthConfig) -> dict[str, np.ndarray]:
    """Per-frame FLAME parameters (float32): talking jaw, expressions, blinks, head motion. Deterministic."""
    rng = np.random.default_rng(cfg.seed)
    T = cfg.n_frames
    t = np.arange(T) / cfg.fps
    # jaw: syllables ~4 Hz with random amplitudes, never negative
    centres = np.arange(0.1, t[-1] + 0.3, 0.25)
    centres = centres + rng.uniform(-0.05, 0.05, size=len(centres))
    amps = rng.uniform(0.05, 0.3, size=len(centres))
    jaw = (amps[None] * np.exp(-0.5 * ((t[:, None] - centres[None]) / 0.06) ** 2)).sum(1)
    jaw_pose = np.zeros((T, 3))
    jaw_pose[:, 0] = np.clip(jaw, 0.0, 0.35)
    # expressions: smooth random walks on the first components, bounded
    n_expr = model.n_expr
    expr = np.zeros((T, n_expr))
    k = min(10, n_expr)
    for i in range(k):
        phase, freq = rng.uniform(0, 2 * np.pi), rng.uniform(0.2, 0.8)
        expr[:, i] = rng.uniform(0.3, 1.2) * np.sin(2 * np.pi * freq * t + phase)
    # head: yaw sweep to ±yaw_max, small pitch/roll
    yaw = np.radians(cfg.yaw_max_deg) * np.sin(2 * np.pi * t / max(t[-1], 1e-6) + rng.uniform(0, 0.5)) if T > 1 \
        else np.zeros(T)
    pitch = np.radians(8.0) * np.sin(2 * np.pi * 0.35 * t + rng.uniform(0, 6))
    roll = np.radians(5.0) * np.sin(2 * np.pi * 0.25 * t + rng.uniform(0, 6))
    global_rot = np.stack([pitch, yaw, roll], -1)
    neck_pose = np.stack([0.3 * pitch, 0.2 * yaw, 0.3 * roll], -1)
    global_rot = global_rot - neck_pose  # the neck carries part of the motion
    transl = np.zeros((T, 3))
    transl[:, 0] = 0.01 * np.sin(2 * np.pi * 0.2 * t)
    transl[:, 1] = 0.005 * np.sin(2 * np.pi * 0.3 * t + 1.0)
    transl[:, 2] = -cfg.distance_m + 0.02 * np.sin(2 * np.pi * 0.15 * t)
    # eyes: saccade-like steps; blinks every ~2.5 s
    eye = np.zeros((T, 6))
    gaze = np.repeat(rng.uniform(-0.15, 0.15, size=(T // 12 + 1, 2)), 12, axis=0)[:T]
    eye[:, 0], eye[:, 1] = gaze[:, 1], gaze[:, 0]
    eye[:, 3], eye[:, 4] = gaze[:, 1], gaze[:, 0]
    blink = np.zeros(T)
    for c in np.arange(0.8, t[-1] + 1e-9, 2.5):
        blink = np.maximum(blink, np.exp(-0.5 * ((t - c) / 0.05) ** 2))
    out = {"expr": expr, "jaw_pose": jaw_pose, "neck_pose": neck_pose, "eye_pose": eye,
           "global_rot": global_rot, "transl": transl, "shape": rng.normal(0, 0.8, model.n_shape) *
           (np.arange(model.n_shape) < 20)}
    if "eyelid_dirs" in model:
        out["eyelids"] = np.stack([blink, blink], -1)
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A smooth, slightly textured backdrop (uint8 (H, W, 3))."""
    import cv2
    c0, c1 = rng.uniform(40, 200, 3), rng.uniform(40, 200, 3)
    ramp = np.linspace(0, 1, h)[:, None, None]
    img = c0 * (1 - ramp) + c1 * ramp + np.zeros((h, w, 3))
    noise = cv2.GaussianBlur(rng.normal(0, 25, (h, w, 3)).astype(np.float32), (0, 0), 6)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def render_clip(model: FlameModelData, out_dir: str | os.PathLike, cfg: SynthConfig = SynthConfig(),
                progress: ProgressCallback | None = None) -> Path:
    """Render a clip into ``out_dir`` (``clip.mp4`` + ``gt.npz``); returns the ground-truth path.

    gt.npz holds the parameters, vertices (T, V, 3) m, points_2d (T, V, 2) px, visible (T, V), flow (T−1, V, 2)
    px (motion of each vertex to the next frame), K, cam_R, cam_t, image_size, face_mask."""
    import cv2
    import torch

    from .flame.layer import FlameLayer, FlameParams
    from .render import project, rasterize, render_rgb, vertex_visibility

    out_dir = Path(out_dir)
    from .contract.npzio import check_output_path
    check_output_path(out_dir / "gt.npz", what="synth output")  # a folder we can write, made if missing
    params = motion_sequence(model, cfg)
    layer = FlameLayer(model)
    with torch.no_grad():
        fp = FlameParams(**{k: torch.from_numpy(v) for k, v in params.items()})
        verts = layer(fp).vertices.numpy().astype(np.float64)          # (T, V, 3) FLAME world
    K = intrinsics_from_fov(cfg.width, cfg.height, cfg.fov_x_deg)
    cam = verts @ DEFAULT_CAM_R.T + DEFAULT_CAM_T                          # OpenCV camera space
    faces = np.asarray(model.faces)
    albedo = model["vertex_albedo"] if "vertex_albedo" in model else None
    rng = np.random.default_rng(cfg.seed + 1)
    bg = _background(rng, cfg.width, cfg.height)
    T = cfg.n_frames
    vis = np.zeros((T, model.n_vertices), bool)
    video_tmp = out_dir / ".clip.tmp.mp4"
    writer = cv2.VideoWriter(str(video_tmp), cv2.VideoWriter_fourcc(*"mp4v"), cfg.fps, (cfg.width, cfg.height))
    if not writer.isOpened():
        raise InputError(f"cannot write a video in {out_dir}: OpenCV has no mp4v encoder here")
    light = np.array([0.4, -0.5, -1.0])
    try:
        for i in range(T):
            frags = rasterize(cam[i], faces, K, (cfg.width, cfg.height))
            img = render_rgb(cam[i], faces, K, (cfg.width, cfg.height), albedo=albedo, light_dir=light,
                             ambient=0.35, diffuse=0.75, specular=0.05, background=bg, fragments=frags)
            vis[i] = vertex_visibility(cam[i], faces, K, (cfg.width, cfg.height), fragments=frags)
            writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            if progress:
                progress("render", (i + 1) / T, f"frame {i + 1}/{T}")
    except BaseException:
        writer.release()
        video_tmp.unlink(missing_ok=True)  # no partial clip left behind
        raise
    finally:
        writer.release()
    os.replace(video_tmp, out_dir / "clip.mp4")
    pts = project(cam, K).astype(np.float32)
    arrays = {**params, "vertices": verts.astype(np.float32), "points_2d": pts, "visible": vis,
              "flow": (pts[1:] - pts[:-1]) if T > 1 else np.zeros((0, model.n_vertices, 2), np.float32),
              "K": K, "cam_R": DEFAULT_CAM_R, "cam_t": DEFAULT_CAM_T,
              "image_size": np.array([cfg.width, cfg.height])}
    if "face_mask" in model:
        arrays["face_mask"] = np.asarray(model["face_mask"], bool)
    meta = {"format": GT_FORMAT, "fps": cfg.fps, "model_release": model.release,
            "topology_hash": model.topology, "config": cfg.__dict__, "video": "clip.mp4"}
    return write_npz_atomic(out_dir / "gt.npz", arrays, meta)


def load_ground_truth(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    arrays, meta = read_npz(path, what="ground-truth file")
    if meta.get("format") != GT_FORMAT:
        raise InputError(f"{path} is not a FlameCap synthetic ground-truth file")
    return arrays, meta
