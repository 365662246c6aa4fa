"""Reference baseline: fit every frame independently with many Adam steps, the way common research trackers do.

Each frame gets its own shape, expression, jaw, neck, rotation and translation, initialised at zero/front and
optimised for ``steps`` Adam iterations on the σ-weighted squared reprojection error of the bound points plus
small Gaussian priors. Frames are optimised side by side in one batch (still independent: no shared or temporal
terms), so the timing is the baseline at its fastest. The focal length is given (no per-clip estimation).

Used by ``flamecap bench`` (it loads this file by path) and runnable alone:
``python benchmarks/baseline_adam.py LANDMARKS.npz --model MODEL``.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np
import torch

from flamecap.contract.conventions import DEFAULT_CAM_R
from flamecap.flame.layer import FlameLayer, FlameParams, barycentric_points


@dataclass
class BaselineResult:
    params: dict[str, np.ndarray]   # per-frame FLAME parameters, (T, ...)
    points_2d: np.ndarray           # (T, R, 2) projected bound points
    seconds: float                  # wall time of the optimisation


def fit_adam_per_frame(points: np.ndarray, sigma: np.ndarray, valid: np.ndarray, point_index: np.ndarray,
                       face_idx: np.ndarray, bary: np.ndarray, model, focal: float, image_size: tuple[int, int],
                       steps: int = 500, lr: float = 0.01, n_shape: int = 50, n_expr: int = 50,
                       distance_m: float = 0.6) -> BaselineResult:
    """points (T, K, 2) px, sigma (T, K) px, valid (T,); binding rows (R,) into the K points."""
    torch.manual_seed(0)
    layer = FlameLayer(model, n_shape=n_shape, n_expr=n_expr)
    T = points.shape[0]
    obs = torch.as_tensor(points[:, point_index], dtype=torch.float32)
    sig = torch.as_tensor(np.nan_to_num(sigma[:, point_index].astype(np.float32), nan=1e6), dtype=torch.float32).clamp_min(0.5)
    w = torch.isfinite(obs).all(-1) & torch.as_tensor(valid)[:, None]
    obs = torch.nan_to_num(obs)
    fi = torch.as_tensor(face_idx, dtype=torch.long)
    bc = torch.as_tensor(bary, dtype=torch.float32)
    width, height = image_size
    cx, cy = width / 2.0, height / 2.0
    R = torch.as_tensor(DEFAULT_CAM_R, dtype=torch.float32)
    p = {k: torch.zeros(T, d, requires_grad=True) for k, d in
         (("shape", layer.n_shape), ("expr", layer.n_expr), ("jaw_pose", 3), ("neck_pose", 3), ("global_rot", 3))}
    transl0 = torch.zeros(T, 3)
    transl0[:, 2] = -distance_m
    p["transl"] = transl0.clone().requires_grad_(True)
    opt = torch.optim.Adam(list(p.values()), lr=lr)
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad()
        out = layer(FlameParams(**p))
        lm = barycentric_points(out.vertices, layer.faces, fi, bc) @ R.T
        uv = torch.stack([focal * lm[..., 0] / lm[..., 2] + cx, focal * lm[..., 1] / lm[..., 2] + cy], -1)
        res = ((uv - obs) / sig[..., None]) ** 2
        loss = (res.sum(-1) * w).sum() + 1e-2 * (p["shape"] ** 2).sum() + 1e-2 * (p["expr"] ** 2).sum() \
            + 10.0 * (p["jaw_pose"][:, 1:] ** 2).sum()
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        out = layer(FlameParams(**p))
        lm = barycentric_points(out.vertices, layer.faces, fi, bc) @ R.T
        uv = torch.stack([focal * lm[..., 0] / lm[..., 2] + cx, focal * lm[..., 1] / lm[..., 2] + cy], -1)
    params = {k: v.detach().numpy() for k, v in p.items()}
    params["eye_pose"] = np.zeros((T, 6), np.float32)
    return BaselineResult(params=params, points_2d=uv.numpy(), seconds=seconds)


def main() -> None:
    from flamecap.binding.mediapipe import mediapipe_binding
    from flamecap.flame.io import load_model
    from flamecap.landmarks.base import LandmarkTrack
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("landmarks")
    ap.add_argument("--model", default=None)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--fov", type=float, default=40.0)
    a = ap.parse_args()
    track = LandmarkTrack.load(a.landmarks)
    model = load_model(a.model)
    b = mediapipe_binding(model)
    w, h = track.image_size
    focal = (w / 2) / np.tan(np.radians(a.fov) / 2)
    r = fit_adam_per_frame(track.points, track.sigma, track.valid, b.point_index, b.face_idx, b.bary, model,
                           focal, track.image_size, steps=a.steps)
    obs = track.points[:, b.point_index]
    err = np.nanmean(np.linalg.norm(r.points_2d - obs, axis=-1))
    print(f"frames={track.n_frames} steps={a.steps} seconds={r.seconds:.2f} "
          f"fps={track.n_frames / r.seconds:.2f} mean_reproj_px={err:.3f}")


if __name__ == "__main__":
    main()
