"""Synthetic fitting problems for tests and benchmarks: a FLAME-format head, a surface binding of many
points, a known parameter sequence and its noisy 2D projection (numpy + torch).

Uses ``flamecap.flame.synthetic.make_synthetic_model`` when available; otherwise a small built-in head
(a UV-sphere skull with two eyeballs, smooth random identity/expression bases, jaw/neck/eye skinning).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..contract.model_format import FlameModelData, model_meta
from ..landmarks.base import LandmarkTrack, SurfaceBinding


def _sphere(n_lat: int, n_lon: int, center, radii) -> tuple[np.ndarray, np.ndarray]:
    th = np.linspace(0.0, np.pi, n_lat)[1:-1]
    ph = np.linspace(0.0, 2 * np.pi, n_lon, endpoint=False)
    T, P = np.meshgrid(th, ph, indexing="ij")
    # +Z is the front (toward the camera), +Y up
    pts = np.stack([np.sin(T) * np.sin(P), np.cos(T), np.sin(T) * np.cos(P)], -1).reshape(-1, 3)
    verts = np.concatenate([pts, [[0, 1, 0], [0, -1, 0]]]) * np.asarray(radii) + np.asarray(center)
    faces = []
    nl = len(th)
    for i in range(nl - 1):
        for j in range(n_lon):
            a, b = i * n_lon + j, i * n_lon + (j + 1) % n_lon
            c, d = a + n_lon, b + n_lon
            faces += [[a, c, b], [b, c, d]]
    top, bot = nl * n_lon, nl * n_lon + 1
    for j in range(n_lon):
        faces.append([top, j, (j + 1) % n_lon])
        faces.append([bot, (nl - 1) * n_lon + (j + 1) % n_lon, (nl - 1) * n_lon + j])
    return verts, np.asarray(faces, dtype=np.int64)


def _smooth_fields(rng, verts, n, amp, n_centers=12, width=0.05):
    """n smooth random displacement fields (V, 3, n), RBF sums, rms ≈ amp metres."""
    out = np.zeros((verts.shape[0], 3, n))
    for k in range(n):
        c = verts[rng.integers(0, verts.shape[0], n_centers)]
        w = rng.normal(size=(n_centers, 3))
        d2 = ((verts[:, None, :] - c[None]) ** 2).sum(-1)
        field = np.exp(-d2 / (2 * width ** 2)) @ w
        out[:, :, k] = field * amp / (np.sqrt((field ** 2).mean()) + 1e-12)
    return out


def make_fallback_model(n_shape: int = 40, n_expr: int = 30, seed: int = 0, eyelids: bool = True) -> FlameModelData:
    """A small deterministic FLAME-format head (~1.2k vertices), metres, FLAME axes."""
    rng = np.random.default_rng(seed)
    head_v, head_f = _sphere(24, 40, (0.0, 0.0, 0.0), (0.075, 0.10, 0.09))
    eyes = []
    ecs = [(0.032, 0.025, 0.072), (-0.032, 0.025, 0.072)]   # left eye at +X (subject's left)
    for c in ecs:
        eyes.append(_sphere(8, 12, c, (0.012, 0.012, 0.012)))
    verts = [head_v]
    faces = [head_f]
    off = head_v.shape[0]
    eye_ranges = []
    for v, f in eyes:
        verts.append(v)
        faces.append(f + off)
        eye_ranges.append((off, off + v.shape[0]))
        off += v.shape[0]
    V = np.concatenate(verts)
    F = np.concatenate(faces)
    nV = V.shape[0]
    # joints: root, neck, jaw, eye_l, eye_r
    J = np.array([[0, -0.09, -0.01], [0, -0.06, -0.01], [0, -0.02, 0.0], list(ecs[0]), list(ecs[1])])
    # J_regressor: mean of the 8 vertices nearest each joint
    Jreg = np.zeros((5, nV))
    for j in range(5):
        d = np.linalg.norm(V - J[j], axis=1)
        nn = np.argsort(d)[:8]
        Jreg[j, nn] = 1.0 / 8
    weights = np.zeros((nV, 5))
    hv = V[: head_v.shape[0]]
    # jaw: lower front of the head, smooth blend with the neck(head) joint
    s = np.clip((-(hv[:, 1] + 0.015) / 0.03), 0, 1) * np.clip((hv[:, 2] + 0.01) / 0.04, 0, 1)
    weights[: head_v.shape[0], 2] = s
    weights[: head_v.shape[0], 1] = 1 - s
    for k, (a, b) in enumerate(eye_ranges):
        weights[a:b, 3 + k] = 1.0
    shapedirs = _smooth_fields(rng, V, n_shape, 0.004, width=0.06)
    front = np.clip(V[:, 2] / 0.09, 0, 1)[:, None, None]
    exprdirs = _smooth_fields(rng, V, n_expr, 0.003, width=0.03) * front
    for a, b in eye_ranges:  # eyeballs are rigid
        shapedirs[a:b] = shapedirs[a:b].mean(0, keepdims=True)
        exprdirs[a:b] = 0.0
    posedirs = _smooth_fields(rng, V, 36, 0.0005, width=0.05)
    for a, b in eye_ranges:
        posedirs[a:b] = 0.0
    arrays = {"v_template": V, "faces": F, "shapedirs": shapedirs, "exprdirs": exprdirs,
              "posedirs": posedirs, "J_regressor": Jreg, "weights": weights,
              "parents": np.array([-1, 0, 1, 1, 1])}
    if eyelids:
        lid = np.zeros((nV, 3, 2))
        for k, c in enumerate(ecs):
            d = np.linalg.norm(hv - np.asarray(c), axis=1)
            m = np.exp(-(d / 0.015) ** 2) * (hv[:, 1] > c[1])
            lid[: head_v.shape[0], 1, k] = -0.008 * m
        arrays["eyelid_dirs"] = lid
    arrays["face_mask"] = (V[:, 2] > 0.02) & (np.arange(nV) < head_v.shape[0])
    return FlameModelData(arrays=arrays, meta=model_meta("synthetic-fit-fallback"))


def default_test_model(seed: int = 0) -> FlameModelData:
    """The project's synthetic model when available, else :func:`make_fallback_model`."""
    try:
        from ..flame.synthetic import make_synthetic_model  # type: ignore
    except ImportError:
        return make_fallback_model(seed=seed)
    return make_synthetic_model()


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
