"""Training MICA's mapping network on (face image, FLAME shape) pairs a user provides.

Loss (MICA): region-weighted per-vertex L1 between the meshes decoded from the predicted and the
ground-truth shape codes (zero expression and pose), ×1000 (metres → millimetres scale):

    L = 1000 · mean_{b,v,c} w_v · |V(ŝ_b) − V(s_b)|,   w = 150 on the face, 1 elsewhere, 0.01 on eyeballs and ears

Optimiser AdamW(lr 1e-5, weight decay 2e-4). The ArcFace encoder stays frozen by default (MICA keeps its
stem and stages 1–3 frozen; ``train_encoder_head=True`` also trains stage 4 + fc like MICA does).

Data: :class:`ShapePairDataset` (image files + shape ``.npy`` files / arrays; images that are not already
112×112 ArcFace crops are detected and aligned) or :func:`tensor_pairs` (in-memory tensors).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ..contract.events import ProgressCallback
from ..contract.model_format import FlameModelData
from ..errors import InputError, NoFaceError
from .mica import MicaNet

log = logging.getLogger(__name__)

#: Joint indices of FLAME's eyes in the model's skinning weights (root, neck, jaw, eye_l, eye_r).
EYE_JOINTS = (3, 4)


@dataclass(frozen=True)
class TrainConfig:
    """Mapping-network training settings (defaults = MICA's). ``steps`` optimiser steps of ``batch_size``."""

    lr: float = 1e-5
    weight_decay: float = 2e-4
    steps: int = 1000
    batch_size: int = 8
    face_weight: float = 150.0
    whole_weight: float = 1.0
    eyes_weight: float = 0.01
    ears_weight: float = 0.01
    train_encoder_head: bool = False
    encoder_lr: float = 1e-5
    seed: int = 0
    log_every: int = 10

    def __post_init__(self):
        for name in ("lr", "encoder_lr"):
            if not getattr(self, name) > 0:
                raise InputError(f"training: {name} must be > 0, got {getattr(self, name)}")
        if self.weight_decay < 0:
            raise InputError(f"training: weight_decay must be >= 0, got {self.weight_decay}")
        if self.steps < 1 or self.batch_size < 1:
            raise InputError(f"training: steps and batch_size must be >= 1, got {self.steps}, {self.batch_size}")
        for name in ("face_weight", "whole_weight", "eyes_weight", "ears_weight"):
            if getattr(self, name) < 0:
                raise InputError(f"training: {name} must be >= 0, got {getattr(self, name)}")


@dataclass
class TrainResult:
    losses: list[float] = field(default_factory=list)  # per step (weighted L1 ×1000)
    steps: int = 0


def _as_vertex_mask(x, V: int, name: str) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype == bool:
        if a.shape != (V,):
            raise InputError(f"mask '{name}' has shape {a.shape}, expected ({V},)")
        return a
    idx = a.astype(np.int64).ravel()
    if idx.size and (idx.min() < 0 or idx.max() >= V):
        raise InputError(f"mask '{name}' indexes outside 0..{V - 1}")
    m = np.zeros(V, bool)
    m[idx] = True
    return m


def region_masks(model: FlameModelData, masks: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """Boolean (V,) masks ``face``, ``eyes``, ``ears`` for the loss weights.

    ``masks`` may give vertex index arrays or boolean masks named as in FLAME's ``FLAME_masks.pkl``
    (``face``, ``left_eyeball``/``right_eyeball``, ``left_ear``/``right_ear``) or ``eyes``/``ears``.
    Otherwise the model's own arrays are used: ``face_mask``; ``eyeball_mask``/``ear_mask`` when present;
    eyeballs from the skinning weights (vertices driven > 50 % by the eye joints). Missing regions are
    empty (logged)."""
    V = model.n_vertices
    masks = dict(masks or {})
    out = {k: np.zeros(V, bool) for k in ("face", "eyes", "ears")}
    groups = {"face": ("face",), "eyes": ("eyes", "left_eyeball", "right_eyeball"),
              "ears": ("ears", "left_ear", "right_ear")}
    for region, names in groups.items():
        for n in names:
            if n in masks:
                out[region] |= _as_vertex_mask(masks[n], V, n)
    a = model.arrays
    if not out["face"].any() and "face_mask" in a:
        out["face"] = _as_vertex_mask(np.asarray(a["face_mask"]).astype(bool), V, "face_mask")
    if not out["eyes"].any():
        if "eyeball_mask" in a:
            out["eyes"] = _as_vertex_mask(np.asarray(a["eyeball_mask"]).astype(bool), V, "eyeball_mask")
        elif "weights" in a and np.asarray(a["weights"]).shape[1] > max(EYE_JOINTS):
            out["eyes"] = np.asarray(a["weights"])[:, list(EYE_JOINTS)].sum(1) > 0.5
    if not out["ears"].any() and "ear_mask" in a:
        out["ears"] = _as_vertex_mask(np.asarray(a["ear_mask"]).astype(bool), V, "ear_mask")
    for region, m in out.items():
        if not m.any():
            log.info("MICA loss: no '%s' vertices known for this model; that region gets the default weight",
                     region)
    return out


def region_weights(model: FlameModelData, masks: Mapping[str, np.ndarray] | None = None,
                   config: TrainConfig = TrainConfig()) -> np.ndarray:
    """Per-vertex loss weights (V,) float32: whole head ``whole_weight``, eyeballs ``eyes_weight``, ears
    ``ears_weight``, face ``face_weight`` (applied in that order, as MICA does: the face wins overlaps)."""
    r = region_masks(model, masks)
    w = np.full(model.n_vertices, config.whole_weight, np.float32)
    w[r["eyes"]] = config.eyes_weight
    w[r["ears"]] = config.ears_weight
    w[r["face"]] = config.face_weight
    return w


class ShapeDecoder(torch.nn.Module):
    """Shape codes (B, S) → neutral vertices (B, V, 3) metres (template + shapedirs·s; zero expr/pose)."""

    def __init__(self, model: FlameModelData, n_shape: int | None = None):
        super().__init__()
        k = min(n_shape or model.n_shape, model.n_shape)
        self.n_shape = k
        self.register_buffer("v_template", torch.as_tensor(np.asarray(model["v_template"], np.float32)))
        self.register_buffer("shapedirs", torch.as_tensor(np.asarray(model["shapedirs"][:, :, :k], np.float32)))

    def forward(self, shape: torch.Tensor) -> torch.Tensor:
        s = shape[:, : self.n_shape]
        if s.shape[1] < self.n_shape:
            s = torch.nn.functional.pad(s, (0, self.n_shape - s.shape[1]))
        return self.v_template + torch.einsum("vck,bk->bvc", self.shapedirs, s.to(self.v_template.dtype))


def weighted_vertex_l1(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """MICA's loss: 1000 · mean(w_v · |pred − target|). pred/target (B, V, 3) m, weights (V,)."""
    return (torch.abs(pred - target) * weights[None, :, None]).mean() * 1000.0


def tensor_pairs(images: torch.Tensor | np.ndarray, shapes: torch.Tensor | np.ndarray) -> TensorDataset:
    """In-memory pairs: images (N, 3, 112, 112) float in [-1, 1], shapes (N, S) FLAME coefficients."""
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images).float()
    s = torch.as_tensor(np.asarray(shapes) if not isinstance(shapes, torch.Tensor) else shapes).float()
    if x.dim() != 4 or x.shape[1] != 3:
        raise InputError(f"training images must be (N, 3, H, W), got {tuple(x.shape)}")
    if s.dim() != 2 or s.shape[0] != x.shape[0]:
        raise InputError(f"training shapes must be (N, S) with N = {x.shape[0]}, got {tuple(s.shape)}")
    if not (torch.isfinite(x).all() and torch.isfinite(s).all()):
        raise InputError("training data contains NaN or infinite values")
    return TensorDataset(x, s)


class ShapePairDataset(Dataset):
    """(image file, FLAME shape) pairs. ``shapes``: paths to ``.npy`` files with (S,) coefficients, or an
    (N, S) array. Images already 112×112 are taken as aligned ArcFace crops; others are detected and
    aligned with MediaPipe (a face must be found). Items: (x (3, 112, 112) float32 in [-1, 1], shape (S,))."""

    def __init__(self, image_paths: Sequence[str | os.PathLike], shapes: Sequence[str | os.PathLike] | np.ndarray):
        self.image_paths = [Path(p) for p in image_paths]
        if isinstance(shapes, np.ndarray):
            if shapes.ndim != 2 or shapes.shape[0] != len(self.image_paths):
                raise InputError(f"shapes must be (N, S) with N = {len(self.image_paths)}, got {shapes.shape}")
            self._shapes = [np.asarray(s, np.float32) for s in shapes]
        else:
            if len(shapes) != len(self.image_paths):
                raise InputError(f"{len(self.image_paths)} images but {len(shapes)} shape files")
            self._shapes = [Path(p) for p in shapes]
        for p in self.image_paths:
            if not p.is_file():
                raise InputError(f"training image not found: {p}")
        self._detector = None

    def __len__(self) -> int:
        return len(self.image_paths)

    def _shape(self, i: int) -> np.ndarray:
        s = self._shapes[i]
        if isinstance(s, Path):
            try:
                s = np.load(s, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise InputError(f"cannot read shape file {self._shapes[i]} ({exc}); save (S,) floats with np.save") from None
        s = np.asarray(s, np.float32).reshape(-1)
        if not np.all(np.isfinite(s)):
            raise InputError(f"shape for {self.image_paths[i]} has NaN or infinite values")
        return s

    def __getitem__(self, i: int):
        from .mica import _read_rgb
        from .preprocess import ARCFACE_SIZE, FivePointDetector, align_face, to_arcface_input

        rgb = _read_rgb(self.image_paths[i])
        if rgb.shape[:2] != (ARCFACE_SIZE, ARCFACE_SIZE):
            if self._detector is None:
                self._detector = FivePointDetector()
            pts = self._detector.detect(rgb)
            if pts is None:
                raise NoFaceError(f"no face found in training image {self.image_paths[i]}; remove it or "
                                  f"supply an aligned 112x112 crop")
            rgb = align_face(rgb, pts).image
        return torch.from_numpy(to_arcface_input(rgb)[0]), torch.from_numpy(self._shape(i))


def _trainable(net: MicaNet, config: TrainConfig) -> list[dict]:
    for p in net.arcface.parameters():
        p.requires_grad_(False)
    for p in net.mapping.parameters():
        p.requires_grad_(True)
    groups = [{"params": list(net.mapping.parameters()), "lr": config.lr}]
    if config.train_encoder_head:
        head = [p for m in (net.arcface.layer4, net.arcface.bn2, net.arcface.fc) for p in m.parameters()]
        head += [net.arcface.features.bias]
        for p in head:
            p.requires_grad_(True)
        groups.append({"params": head, "lr": config.encoder_lr})
    return groups


def _forward_shapes(net: MicaNet, x: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    net.arcface.eval()  # BatchNorm statistics stay those of the pretrained encoder
    net.mapping.train()
    if config.train_encoder_head:
        with torch.no_grad():
            h = net.arcface.trunk(x)
        z = torch.nn.functional.normalize(net.arcface.head(h), dim=1)
    else:
        with torch.no_grad():
            z = net.embed(x)
    return net.mapping(z)


@torch.no_grad()
def evaluate_loss(net: MicaNet, dataset: Dataset, model: FlameModelData, weights: np.ndarray | None = None,
                  batch_size: int = 16, masks: Mapping[str, np.ndarray] | None = None) -> float:
    """Mean weighted vertex L1 (×1000) of ``net`` over ``dataset`` (eval mode)."""
    dev = next(net.parameters()).device
    w = torch.as_tensor(region_weights(model, masks) if weights is None else weights, device=dev)
    dec = ShapeDecoder(model).to(dev)
    was = net.training
    net.eval()
    total, n = 0.0, 0
    try:
        for x, s in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            x, s = x.to(dev), s.to(dev)
            pred = net(x).shape
            total += float(weighted_vertex_l1(dec(pred), dec(s), w)) * x.shape[0]
            n += x.shape[0]
    finally:
        net.train(was)
    return total / max(n, 1)


@torch.no_grad()
def embed_dataset(net: MicaNet, dataset: Dataset, batch_size: int = 32, num_workers: int = 0) -> TensorDataset:
    """Frozen-encoder embeddings of a whole dataset: → TensorDataset(z (N, 512) unit-norm, shapes (N, S)).
    Exact for training the mapping alone (the encoder is deterministic in eval mode), and far cheaper."""
    dev = next(net.parameters()).device
    net.arcface.eval()
    zs, ss = [], []
    for x, s in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers):
        zs.append(net.embed(x.to(dev, torch.float32)).cpu())
        ss.append(torch.as_tensor(s, dtype=torch.float32).reshape(len(s), -1))
    return TensorDataset(torch.cat(zs), torch.cat(ss))


def train_mapping(net: MicaNet, dataset: Dataset, model: FlameModelData, config: TrainConfig = TrainConfig(),
                  masks: Mapping[str, np.ndarray] | None = None, progress: ProgressCallback | None = None,
                  num_workers: int = 0) -> TrainResult:
    """Train ``net.mapping`` (and optionally the encoder head) for ``config.steps`` AdamW steps on
    ``dataset`` ((image (3, 112, 112), shape (S,)) items) against ``model``'s shape space. Ground-truth codes
    are truncated / zero-padded to the model's ``n_shape``. With the encoder frozen, embeddings are computed
    once (:func:`embed_dataset`). Returns the per-step losses; ``net`` is updated in place, left in eval mode."""
    if len(dataset) == 0:
        raise InputError("training dataset is empty")
    dev = next(net.parameters()).device
    cached = not config.train_encoder_head
    if cached:
        dataset = embed_dataset(net, dataset, num_workers=num_workers)
        num_workers = 0
    gen = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True, drop_last=False,
                        generator=gen, num_workers=num_workers)
    w = torch.as_tensor(region_weights(model, masks, config), device=dev)
    dec = ShapeDecoder(model).to(dev)
    opt = torch.optim.AdamW(_trainable(net, config), lr=config.lr, weight_decay=config.weight_decay)
    result = TrainResult()
    it = iter(loader)
    for step in range(config.steps):
        try:
            x, s = next(it)
        except StopIteration:
            it = iter(loader)
            x, s = next(it)
        x, s = x.to(dev, torch.float32), s.to(dev, torch.float32)
        opt.zero_grad(set_to_none=True)
        if cached:
            net.mapping.train()
            pred = net.mapping(x)
        else:
            pred = _forward_shapes(net, x, config)
        loss = weighted_vertex_l1(dec(pred), dec(s), w)
        value = float(loss.detach())
        if not np.isfinite(value):
            raise InputError(f"training diverged at step {step} (loss {value}); lower the learning rate")
        loss.backward()
        opt.step()
        result.losses.append(value)
        result.steps = step + 1
        if progress:
            progress("fit", (step + 1) / config.steps, f"step {step + 1}/{config.steps} loss {value:.4f}")
        if config.log_every and (step + 1) % config.log_every == 0:
            log.info("MICA mapping: step %d/%d loss %.4f", step + 1, config.steps, value)
    net.eval()
    return result
