"""Synthetic training data for the dense aligner: a streamed, seeded supply of rendered face crops with
ground-truth per-vertex 2D positions and visibility.

Each sample draws a random FLAME head (shape, expression, jaw/neck/eye pose, eyelids, head rotation),
a camera (distance, field of view), lighting, a procedural skin albedo (skin tone, low-frequency
blotches, darker eyes and brows), a random background (solid, gradient, smooth noise or clutter) and,
sometimes, occluders (ellipses / polygons over the face; vertices under them are not visible), then
renders with the core's software rasterizer (:mod:`flamecap.render`).

Framing matches inference: the crop is the square around the projected vertices' bounding box, side =
``margin`` × the box's larger side, centred on the box — jittered in scale and position. It is realised
exactly by choosing the intrinsics (a crop + resize of a pinhole image is a pinhole image with other
intrinsics), so rendering happens directly at crop resolution.

Sample ``i`` of a stream with seed ``s`` depends only on ``(s, i)`` (``numpy.random.default_rng([s, i])``):
streams are reproducible, resumable at any index, and split across DataLoader workers without overlap.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..contract.conventions import DEFAULT_CAM_R, axis_angle_to_matrix
from ..contract.model_format import FlameModelData
from ..errors import ModelError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SynthConfig:
    """Randomisation ranges. Angles in degrees; ``*_std`` are standard deviations of the model's unit
    coefficients; ``margin`` is the crop side over the projected box side of the framing vertices
    (:func:`framing_vertices`)."""

    image_size: int = 256
    yaw_deg: float = 45.0
    pitch_deg: float = 25.0
    roll_deg: float = 15.0
    shape_std: float = 1.0
    expr_std: float = 1.0
    jaw_open_max: float = 0.35
    fov_deg: tuple[float, float] = (12.0, 50.0)
    margin: float = 1.5
    scale_jitter: float = 0.12
    shift_jitter: float = 0.08
    occluder_prob: float = 0.3
    noise_std: float = 4.0
    randomize: bool = True   # False: fixed neutral lighting/colours (debugging)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SynthConfig":
        known = set(cls.__dataclass_fields__)
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items() if k in known})


@dataclass
class Sample:
    """image (S, S, 3) uint8 RGB; points (V, 2) float32 crop px; visible (V,) bool; K (3, 3) used."""

    image: np.ndarray
    points: np.ndarray
    visible: np.ndarray
    K: np.ndarray


def framing_vertices(model: FlameModelData) -> np.ndarray:
    """Indices of the vertices whose 2D bounding box defines the crop: the model's face region
    (``face_mask``) when it has one with at least 10 vertices, else all vertices."""
    if "face_mask" in model and int(np.asarray(model["face_mask"]).sum()) >= 10:
        return np.nonzero(np.asarray(model["face_mask"], dtype=bool))[0]
    return np.arange(model.n_vertices)


def crop_box(points: np.ndarray, margin: float) -> tuple[float, float, float]:
    """Square crop (centre x, centre y, side) px around 2D points (N, 2): centred on their bounding box,
    side = ``margin`` × its larger side. The same rule frames training renders and inference crops."""
    lo, hi = np.nanmin(points, 0), np.nanmax(points, 0)
    c = (lo + hi) / 2
    return float(c[0]), float(c[1]), float(np.max(hi - lo)) * margin


def check_model(model: FlameModelData) -> None:
    if "vertex_uv" not in model:
        raise ModelError("the dense aligner needs a model with 'vertex_uv' (per-vertex UV coordinates); "
                         "convert a FLAME release that ships UVs or use the synthetic model")


class SyntheticRenderer:
    """Draws :class:`Sample` s for one head model (FLAME layer built once)."""

    def __init__(self, model: FlameModelData, cfg: SynthConfig):
        from ..flame.layer import FlameLayer

        check_model(model)
        self.model = model
        self.cfg = cfg
        self.layer = FlameLayer(model, dtype=torch.float64)
        self.faces = np.asarray(model.faces, dtype=np.int64)
        self.frame_idx = framing_vertices(model)
        vt = np.asarray(model["v_template"], dtype=np.float64)
        self.extent = float(np.max(vt.max(0) - vt.min(0)))
        self.template = vt
        j = np.asarray(model["J_regressor"]) @ vt
        self.eyes = j[3:5]
        # vertices that make up / surround the eyes and brows (by distance to the eye joints)
        d_eye = np.linalg.norm(vt[:, None] - self.eyes[None], axis=-1).min(1)
        self.eye_mask = d_eye < 0.09 * self.extent
        above = vt[:, 1] - self.eyes[:, 1].mean()
        lateral = np.abs(np.abs(vt[:, 0] - j[0, 0]) - np.abs(self.eyes[0, 0] - j[0, 0]))
        front = vt[:, 2] > np.median(vt[:, 2])
        self.brow_mask = front & (above > 0.07 * self.extent) & (above < 0.13 * self.extent) & \
            (lateral < 0.12 * self.extent) & ~self.eye_mask

    # -- pieces -------------------------------------------------------------------------------------
    def _params(self, rng: np.random.Generator):
        from ..flame.layer import FlameParams

        c = self.cfg
        t = lambda x: torch.as_tensor(np.asarray(x, dtype=np.float64))[None]  # noqa: E731
        rot = np.radians([rng.uniform(-c.pitch_deg, c.pitch_deg), rng.uniform(-c.yaw_deg, c.yaw_deg),
                          rng.uniform(-c.roll_deg, c.roll_deg)])
        R = axis_angle_to_matrix(np.array([0.0, rot[1], 0.0])) @ axis_angle_to_matrix(np.array([rot[0], 0, 0])) \
            @ axis_angle_to_matrix(np.array([0.0, 0.0, rot[2]]))
        from ..contract.conventions import matrix_to_axis_angle
        jaw = [rng.uniform(0.0, c.jaw_open_max), rng.normal(0, 0.03), rng.normal(0, 0.03)]
        eye = np.tile(rng.normal(0, 0.15, 3) * [1, 1, 0], 2)
        return FlameParams(shape=t(rng.normal(0, c.shape_std, self.model.n_shape)),
                           expr=t(rng.normal(0, c.expr_std, self.model.n_expr)),
                           global_rot=t(matrix_to_axis_angle(R)), neck_pose=t(rng.normal(0, 0.08, 3)),
                           jaw_pose=t(jaw), eye_pose=t(eye), eyelids=t(rng.uniform(0, 1, 2) * (rng.random() < 0.3)))

    def _albedo(self, rng: np.random.Generator, verts: np.ndarray) -> np.ndarray:
        tones = np.array([[0.96, 0.80, 0.69], [0.90, 0.70, 0.56], [0.78, 0.57, 0.44], [0.55, 0.38, 0.28],
                          [0.36, 0.24, 0.18]])
        w = rng.dirichlet(np.ones(len(tones)) * 0.5)
        base = w @ tones * rng.uniform(0.85, 1.1, 3)
        x = (self.template - self.template.mean(0)) / self.extent
        noise = np.zeros(len(x))
        for _ in range(4):  # low-frequency blotches: random plane waves
            k = rng.normal(0, 6.0, 3)
            noise += np.sin(x @ k + rng.uniform(0, 2 * np.pi)) * rng.uniform(0.02, 0.07)
        if "vertex_albedo" in self.model:  # the model's own albedo, re-toned to the drawn skin colour
            own = np.asarray(self.model["vertex_albedo"], dtype=np.float64)[:, :3]
            skin = np.median(own[np.asarray(self.model["face_mask"], bool)] if "face_mask" in self.model else own, 0)
            alb = own * (base / np.maximum(skin, 1e-3))[None] * (1.0 + noise[:, None])
            return np.clip(alb + rng.normal(0, 0.015, alb.shape), 0.0, 1.0)
        alb = base[None] * (1.0 + noise[:, None]) + rng.normal(0, 0.015, (len(x), 3))
        hair = rng.uniform(0.05, 0.45) * np.array([1.0, 0.8, 0.6])
        alb[self.brow_mask] = hair * rng.uniform(0.8, 1.2)
        iris = rng.uniform(0.05, 0.4, 3)
        alb[self.eye_mask] = 0.3 * alb[self.eye_mask] + 0.7 * iris
        return np.clip(alb, 0.0, 1.0)

    @staticmethod
    def _background(rng: np.random.Generator, S: int) -> np.ndarray:
        import cv2

        kind = rng.integers(4)
        if kind == 0:
            bg = np.broadcast_to(rng.uniform(0, 255, 3), (S, S, 3)).copy()
        elif kind == 1:
            a, b = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
            t = np.linspace(0, 1, S)[:, None, None]
            bg = a + (b - a) * (t if rng.random() < 0.5 else t.transpose(1, 0, 2))
            bg = np.broadcast_to(bg, (S, S, 3)).copy()
        elif kind == 2:
            g = int(rng.integers(2, 8))
            small = rng.uniform(0, 255, (g, g, 3)).astype(np.float32)
            bg = cv2.resize(small, (S, S), interpolation=cv2.INTER_CUBIC)
        else:
            bg = np.broadcast_to(rng.uniform(0, 255, 3), (S, S, 3)).copy().astype(np.float32)
            for _ in range(int(rng.integers(3, 10))):
                p0 = rng.integers(0, S, 2)
                p1 = p0 + rng.integers(S // 10, S // 2, 2)
                cv2.rectangle(bg, tuple(int(v) for v in p0), tuple(int(v) for v in p1),
                              tuple(float(v) for v in rng.uniform(0, 255, 3)), -1)
        return np.clip(bg, 0, 255).astype(np.uint8)

    @staticmethod
    def _occluders(rng: np.random.Generator, S: int, points: np.ndarray) -> np.ndarray:
        """(S, S) uint8 mask of 1–2 occluders placed over the face's box."""
        import cv2

        mask = np.zeros((S, S), np.uint8)
        lo, hi = points.min(0), points.max(0)
        for _ in range(int(rng.integers(1, 3))):
            c = lo + (hi - lo) * rng.uniform(0.1, 0.9, 2)
            size = (hi - lo) * rng.uniform(0.1, 0.35, 2)
            if rng.random() < 0.5:
                cv2.ellipse(mask, (int(c[0]), int(c[1])), (max(int(size[0]), 1), max(int(size[1]), 1)),
                            float(rng.uniform(0, 180)), 0, 360, 1, -1)
            else:
                ang = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 7))))
                pts = c + np.stack([np.cos(ang), np.sin(ang)], 1) * size * rng.uniform(0.6, 1.4, (len(ang), 1))
                cv2.fillPoly(mask, [pts.astype(np.int32)], 1)
        return mask

    # -- one sample ---------------------------------------------------------------------------------
    def sample(self, rng: np.random.Generator) -> Sample:
        import cv2
        from ..render import rasterize, render_rgb, vertex_visibility

        c = self.cfg
        S = c.image_size
        with torch.no_grad():
            verts = self.layer(self._params(rng)).vertices[0].numpy()
        fov = np.radians(rng.uniform(*c.fov_deg))
        # distance so that the head spans roughly 20–45% of the frame width at this field of view
        span = rng.uniform(0.2, 0.45)
        dist = self.extent / (2 * np.tan(fov / 2) * span)
        vcam = (verts + np.array([0.0, 0.0, -dist])) @ DEFAULT_CAM_R.T
        xy = vcam[self.frame_idx, :2] / vcam[self.frame_idx, 2:3]     # normalised image coordinates
        lo, hi = xy.min(0), xy.max(0)
        side = float(np.max(hi - lo)) * c.margin * float(np.exp(rng.normal(0, c.scale_jitter)))
        centre = (lo + hi) / 2 + rng.uniform(-c.shift_jitter, c.shift_jitter, 2) * side
        f = S / side
        K = np.array([[f, 0, S / 2 - f * centre[0]], [0, f, S / 2 - f * centre[1]], [0, 0, 1.0]])
        frags = rasterize(vcam, self.faces, K, (S, S))
        light = np.array([rng.uniform(-1, 1), rng.uniform(-1, 0.5), -rng.uniform(0.3, 1.0)])
        bg = self._background(rng, S)
        img = render_rgb(vcam, self.faces, K, (S, S), albedo=self._albedo(rng, verts), light_dir=light,
                         ambient=rng.uniform(0.2, 0.5), diffuse=rng.uniform(0.5, 0.9),
                         specular=rng.uniform(0.0, 0.25), background=bg, fragments=frags)
        points = (vcam @ K.T)[:, :2] / vcam[:, 2:3]
        visible = vertex_visibility(vcam, self.faces, K, (S, S), fragments=frags)
        if rng.random() < c.occluder_prob:
            occ = self._occluders(rng, S, points[visible] if visible.any() else points)
            colour = rng.uniform(0, 255, 3)
            tex = np.clip(colour + rng.normal(0, 20, (S, S, 3)), 0, 255)
            img = np.where(occ[..., None] > 0, tex, img).astype(np.uint8)
            col = np.clip(np.floor(points[:, 0]).astype(int), 0, S - 1)
            row = np.clip(np.floor(points[:, 1]).astype(int), 0, S - 1)
            visible &= occ[row, col] == 0
        img = img.astype(np.float32)
        img = img * rng.uniform(0.7, 1.3) + rng.uniform(-25, 25)            # exposure / brightness
        if rng.random() < 0.3:
            img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.2))
        img = img + rng.normal(0, c.noise_std * rng.random(), img.shape)
        return Sample(image=np.clip(img, 0, 255).astype(np.uint8), points=points.astype(np.float32),
                      visible=visible, K=K)


class SyntheticFaceStream(IterableDataset):
    """Endless (or ``length``-long) seeded stream of samples as dicts of tensors: ``image`` (3, S, S)
    float32 in [0, 1], ``points`` (V, 2) float32 px, ``visible`` (V,) bool, ``index`` int."""

    def __init__(self, model: FlameModelData, cfg: SynthConfig, seed: int = 0, start: int = 0,
                 length: int | None = None):
        check_model(model)
        self.model, self.cfg, self.seed, self.start, self.length = model, cfg, int(seed), int(start), length
        self._renderer: SyntheticRenderer | None = None

    def __iter__(self) -> Iterator[dict]:
        if self._renderer is None:
            self._renderer = SyntheticRenderer(self.model, self.cfg)
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info is not None else (0, 1)
        i = self.start + wid
        while self.length is None or i < self.start + self.length:
            yield sample_to_tensors(self._renderer.sample(np.random.default_rng([self.seed, i])), i)
            i += nw


def sample_to_tensors(s: Sample, index: int = 0) -> dict:
    return {"image": torch.from_numpy(s.image).permute(2, 0, 1).float() / 255.0,
            "points": torch.from_numpy(s.points), "visible": torch.from_numpy(s.visible),
            "index": index}


def fixed_set(model: FlameModelData, cfg: SynthConfig, seed: int, n: int) -> dict:
    """``n`` samples (indices 0..n−1 of stream ``seed``) stacked: image (n, 3, S, S), points (n, V, 2),
    visible (n, V)."""
    r = SyntheticRenderer(model, cfg)
    items = [sample_to_tensors(r.sample(np.random.default_rng([seed, i])), i) for i in range(n)]
    return {k: torch.stack([it[k] for it in items]) if torch.is_tensor(items[0][k]) else
            torch.tensor([it[k] for it in items]) for k in items[0]}
