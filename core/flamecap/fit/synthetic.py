"""Synthetic fitting problems for tests and benchmarks: a FLAME-format head, a surface binding of many
points, a known parameter sequence and its noisy 2D projection (numpy + torch).

The head is ``flamecap.flame.synthetic.make_synthetic_model`` (the project's one synthetic FLAME-format
generator).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..contract.model_format import FlameModelData
from ..flame.synthetic import make_synthetic_model
from ..binding.base import SurfaceBinding
from ..landmarks.base import LandmarkTrack


def default_test_model(seed: int = 0, n_shape: int = 100, n_expr: int = 50, subdivisions: int = 4) -> FlameModelData:
    """The project's synthetic FLAME-format head (:func:`flamecap.flame.synthetic.make_synthetic_model`)."""
    return make_synthetic_model(n_shape=n_shape, n_expr=n_expr, subdivisions=subdivisions, seed=seed)


def sample_binding(model: FlameModelData, n_points: int = 300, seed: int = 0, iris: bool = True) -> SurfaceBinding:
    """Bind ``n_points`` points spread over the front of the face (random triangles, random barycentric
    coordinates), plus iris-like points on each eyeball front when the model has eye-weighted vertices."""
    rng = np.random.default_rng(seed)
    V, F, W = model["v_template"], model["faces"], model["weights"]
    cen = V[F].mean(1)
    span = V.max(0) - V.min(0)
    mid = (V.max(0) + V.min(0)) / 2
    face_w = W[F].mean(1)
    if "face_mask" in model:
        front = model["face_mask"][F].all(1) & (face_w[:, 3:].sum(1) < 0.5)
    else:
        front = (cen[:, 2] > mid[2] + 0.1 * span[2]) & (face_w[:, 3:].sum(1) < 0.5)
    cand = np.flatnonzero(front)
    fidx = [rng.choice(cand, size=min(n_points, cand.size), replace=False)]
    if iris:
        for k in (3, 4):
            eye_f = np.flatnonzero(face_w[:, k] > 0.99)
            if eye_f.size:
                ec = cen[eye_f]
                eye_front = eye_f[np.argsort(-ec[:, 2])[:5]]
                fidx.append(eye_front)
    fidx = np.concatenate(fidx)
    b = rng.dirichlet(np.ones(3) * 2.0, size=fidx.size)
    return SurfaceBinding(point_index=np.arange(fidx.size), face_idx=fidx, bary=b, source="synthetic")


@dataclass
class SyntheticClip:
    """Ground truth and observations of a synthetic clip. params: per-frame arrays (T, ...) + 'shape' (S,)."""

    model: FlameModelData
    binding: SurfaceBinding
    track: LandmarkTrack
    params: dict
    focal: float
    vertices: np.ndarray     # (T, V, 3) ground-truth world vertices


def make_clip(model: FlameModelData, binding: SurfaceBinding, n_frames: int = 30, image_size=(640, 480),
              fov_deg: float = 35.0, noise_px: float = 0.5, outlier_frac: float = 0.05, seed: int = 1,
              n_shape: int | None = None, n_expr: int | None = None, fps: float = 25.0,
              yaw_deg: float = 25.0, jaw_deg: float = 15.0) -> SyntheticClip:
    """A smooth random performance: head yaw/pitch sweep, jaw opening, expressions, eyes, blinks; projected
    through a pinhole with the fitter's camera; Gaussian noise and gross outliers (20–60 px) added."""
    import torch

    from ..flame.layer import FlameLayer, FlameParams, barycentric_points

    rng = np.random.default_rng(seed)
    S = min(n_shape or model.n_shape, model.n_shape)
    E = min(n_expr or model.n_expr, model.n_expr)
    T = n_frames
    t = np.arange(T) / fps
    w, h = image_size
    f = (w / 2) / np.tan(np.radians(fov_deg) / 2)

    def wave(amp, freq, phase=0.0):
        return amp * np.sin(2 * np.pi * freq * t + phase)

    shape = rng.normal(size=S) * 0.8
    gr = np.stack([wave(np.radians(8), 0.4, 1.0), wave(np.radians(yaw_deg), 0.25), wave(np.radians(4), 0.3, 2.0)], 1)
    jaw = np.stack([np.radians(jaw_deg) * 0.5 * (1 - np.cos(2 * np.pi * 0.7 * t)), wave(0.02, 0.5), np.zeros(T)], 1)
    expr = np.stack([wave(1.0, 0.2 + 0.05 * k, k) for k in range(E)], 1) * (rng.uniform(0.3, 1.0, E) * (0.9 ** np.arange(E)))
    eye = np.zeros((T, 6))
    eye[:, 0] = eye[:, 3] = wave(np.radians(8), 0.5)
    eye[:, 1] = eye[:, 4] = wave(np.radians(12), 0.35, 0.5)
    eyelids = np.zeros((T, 2))
    blink = np.exp(-((t[:, None] - t[T // 2]) / 0.06) ** 2)
    eyelids[:] = blink
    transl = np.stack([wave(0.01, 0.2), wave(0.008, 0.15), -0.6 + wave(0.03, 0.1)], 1)
    params = {"shape": shape, "global_rot": gr, "jaw_pose": jaw, "expr": expr, "eye_pose": eye,
              "neck_pose": np.zeros((T, 3)), "transl": transl}
    layer = FlameLayer(model, n_shape=S, n_expr=E, dtype=torch.float64)
    has_lids = "eyelid_dirs" in model
    if has_lids:
        params["eyelids"] = eyelids
    tt = lambda x: torch.as_tensor(x, dtype=torch.float64)  # noqa: E731
    fp = FlameParams(shape=tt(shape), expr=tt(expr), global_rot=tt(gr), neck_pose=tt(params["neck_pose"]),
                     jaw_pose=tt(jaw), eye_pose=tt(eye), transl=tt(transl),
                     eyelids=tt(eyelids) if has_lids else None)
    with torch.no_grad():
        verts = layer(fp).vertices
        pts = barycentric_points(verts, layer.faces, torch.as_tensor(binding.face_idx),
                                 tt(binding.bary)).numpy()
    uv = np.stack([-f * pts[..., 0] / pts[..., 2] + w / 2, f * pts[..., 1] / pts[..., 2] + h / 2], -1)
    K = uv.shape[1]
    obs = uv + rng.normal(size=uv.shape) * noise_px
    n_out = int(round(outlier_frac * K))
    for i in range(T):
        idx = rng.choice(K, size=n_out, replace=False)
        ang = rng.uniform(0, 2 * np.pi, n_out)
        mag = rng.uniform(20, 60, n_out)
        obs[i, idx] += np.stack([np.cos(ang), np.sin(ang)], 1) * mag[:, None]
    track = LandmarkTrack(points=obs.astype(np.float32), sigma=np.full((T, K), max(noise_px, 0.3), np.float32),
                          valid=np.ones(T, bool), visible=np.ones((T, K), bool),
                          frame_index=np.arange(T), time_s=t, image_size=(w, h), fps=fps, scheme="custom")
    return SyntheticClip(model=model, binding=binding, track=track, params=params, focal=float(f),
                         vertices=verts.numpy())

