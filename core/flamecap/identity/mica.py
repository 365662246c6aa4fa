"""MICA: metrical FLAME identity from face images (Zielonka, Bolkart, Thies, ECCV 2022).

    aligned RGB crop (B, 3, 112, 112) in [-1, 1]
      → ArcFace IResNet-100 → (B, 512), L2-normalised
      → mapping network: Linear 512→300, 3 × Linear 300→300 (each + LeakyReLU 0.2), Linear 300→300
      → (B, 300) FLAME 2020 shape coefficients; decoded with zero expression and pose the mesh is in metres.

:func:`estimate_shape_from_footage` is what ``flamecap track --identity mica`` calls: it scores sampled
frames by sharpness × frontality, runs MICA on the best ``k`` and averages their shape codes.
"""
from __future__ import annotations

import heapq
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..contract.events import ProgressCallback
from ..contract.model_format import FlameModelData
from ..errors import FootageError, InputError, NoFaceError, WeightsError
from .arcface import IRESNET100_LAYERS, IRESNET_WIDTHS, IResNet
from .checkpoint import MicaWeights, load_into, read_weights, resolve_weights

log = logging.getLogger(__name__)

MICA_N_SHAPE = 300
MICA_EMBED_DIM = 512
MICA_HIDDEN = 300
MICA_MAPPING_LAYERS = 3
LEAKY_SLOPE = 0.2
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class MappingNetwork(nn.Module):
    """MICA's mapping MLP: ``network`` = [Linear(z, h)] + n_hidden × [Linear(h, h)], each followed by
    LeakyReLU(0.2); ``output`` = Linear(h, out) (no activation). (B, z) → (B, out)."""

    def __init__(self, z_dim: int = MICA_EMBED_DIM, hidden: int = MICA_HIDDEN, out_dim: int = MICA_N_SHAPE,
                 n_hidden: int = MICA_MAPPING_LAYERS):
        super().__init__()
        self.network = nn.ModuleList([nn.Linear(z_dim, hidden)] +
                                     [nn.Linear(hidden, hidden) for _ in range(n_hidden)])
        self.output = nn.Linear(hidden, out_dim)
        for layer in self.network:
            nn.init.kaiming_normal_(layer.weight, a=LEAKY_SLOPE, mode="fan_in", nonlinearity="leaky_relu")
        with torch.no_grad():
            self.output.weight.mul_(0.25)  # small initial shape codes, as in MICA

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = z
        for layer in self.network:
            h = F.leaky_relu(layer(h), negative_slope=LEAKY_SLOPE)
        return self.output(h)


@dataclass
class MicaOutput:
    embedding: torch.Tensor  # (B, 512) L2-normalised ArcFace identity embedding
    shape: torch.Tensor      # (B, 300) FLAME 2020 shape coefficients


class MicaNet(nn.Module):
    """ArcFace encoder (``arcface``) + mapping network (``mapping``). ``forward(x)`` with x (B, 3, 112, 112)
    in [-1, 1] → :class:`MicaOutput`."""

    def __init__(self, arcface: IResNet, mapping: MappingNetwork):
        super().__init__()
        self.arcface = arcface
        self.mapping = mapping
        #: FLAME 2020 (v_template (V, 3), shapedirs (V, 3, 300)) from mica.tar, for :func:`convert_shape`.
        self.flame_basis: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def n_shape(self) -> int:
        return int(self.mapping.output.out_features)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) → (B, 512) unit-norm identity embedding."""
        return F.normalize(self.arcface(x), dim=1)

    def forward(self, x: torch.Tensor) -> MicaOutput:
        z = self.embed(x)
        return MicaOutput(embedding=z, shape=self.mapping(z))


def build_mica(layers: Sequence[int] = IRESNET100_LAYERS, widths: Sequence[int] = IRESNET_WIDTHS,
               n_shape: int = MICA_N_SHAPE, mapping_layers: int = MICA_MAPPING_LAYERS,
               hidden: int = MICA_HIDDEN, embed_dim: int = MICA_EMBED_DIM, input_size: int = 112) -> MicaNet:
    """The MICA network with random weights. Defaults = the published architecture (IResNet-100 on
    112×112 crops, 512-d, mapping 512→300→(3×300)→300); other ``layers``/``widths``/``input_size`` are for
    tests only."""
    return MicaNet(IResNet(layers, widths, num_features=embed_dim, input_size=input_size),
                   MappingNetwork(embed_dim, hidden, n_shape, mapping_layers))


def load_weights_into(net: MicaNet, weights: MicaWeights) -> MicaNet:
    """Load the parts present in ``weights`` into ``net`` (exact key/shape check)."""
    if weights.arcface is not None:
        load_into(net.arcface, weights.arcface, "ArcFace encoder", weights.path or "weights")
    if weights.mapping is not None:
        load_into(net.mapping, weights.mapping, "MICA mapping network", weights.path or "weights")
    return net


def load_mica(weights_path: str | os.PathLike | None = None, encoder_path: str | os.PathLike | None = None,
              device: str | torch.device | None = None, require_mapping: bool = True) -> MicaNet:
    """Build the r100 MICA network and load user-supplied weights, in eval mode.

    ``weights_path``: ``mica.tar`` (or any MICA-layout file); ``None`` → the installed default.
    ``encoder_path``: optional insightface ``backbone.pth`` that replaces the encoder weights.
    Raises :class:`WeightsError` (one line, with instructions) when a file is missing or does not match."""
    path = resolve_weights(weights_path)
    w = read_weights(path)
    net = build_mica()
    load_weights_into(net, w)
    net.flame_basis = w.flame_basis
    if encoder_path is not None:
        e = read_weights(resolve_weights(encoder_path))
        if e.arcface is None:
            raise WeightsError(f"{encoder_path} holds no ArcFace encoder weights")
        load_into(net.arcface, e.arcface, "ArcFace encoder", str(encoder_path))
    elif w.arcface is None:
        raise WeightsError(f"{path} has no 'arcface' encoder weights; use the full mica.tar or pass an "
                           f"insightface r100 backbone.pth as the encoder")
    if require_mapping and w.mapping is None:
        raise WeightsError(f"{path} holds only ArcFace encoder weights ({w.kind}); MICA also needs its mapping "
                           f"network: use mica.tar or a checkpoint trained with flamecap.identity.train")
    net.eval()
    return net.to(device or default_device())


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def predict_shapes(net: MicaNet, inputs: np.ndarray | torch.Tensor, batch_size: int = 16) -> np.ndarray:
    """Run MICA in eval mode: inputs (B, 3, 112, 112) float in [-1, 1] → shape codes (B, 300) float32."""
    x = torch.as_tensor(np.asarray(inputs) if not isinstance(inputs, torch.Tensor) else inputs)
    if x.dim() != 4 or x.shape[1] != 3:
        raise InputError(f"MICA inputs must be (B, 3, 112, 112), got {tuple(x.shape)}")
    was_training = net.training
    net.eval()
    dev = next(net.parameters()).device
    out = []
    try:
        for i in range(0, x.shape[0], batch_size):
            out.append(net(x[i:i + batch_size].to(dev, torch.float32)).shape.float().cpu())
    finally:
        net.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, net.n_shape), np.float32)


def fit_shape_length(shape: np.ndarray, n_shape: int) -> np.ndarray:
    """Truncate or zero-pad shape codes (..., S) to (..., n_shape) float32."""
    s = np.asarray(shape, dtype=np.float32)
    if s.shape[-1] >= n_shape:
        return np.ascontiguousarray(s[..., :n_shape])
    pad = np.zeros(s.shape[:-1] + (n_shape - s.shape[-1],), np.float32)
    return np.concatenate([s, pad], axis=-1)


DIRECT_RELEASES = ("flame2020", "flame2020-like")


def convert_shape(shape: np.ndarray, model: FlameModelData,
                  flame_basis: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """MICA's FLAME 2020 code (300,) → the model's shape space (n_shape,) float32.

    FLAME 2020 generic (and unknown-but-2020-named) models use the code directly (truncated / padded). For
    another release with the same vertex count (e.g. FLAME 2023 / 2023 Open) and FLAME 2020's basis at hand
    (stored in mica.tar), the code is decoded to the FLAME 2020 neutral mesh and projected onto the model's
    identity basis by least squares. Otherwise the code is used directly, with a warning."""
    s = np.asarray(shape, dtype=np.float64).reshape(-1)
    rel = model.release.lower()
    if rel in DIRECT_RELEASES or "synthetic" in rel:
        return fit_shape_length(s, model.n_shape)
    if flame_basis is None or flame_basis[0].shape[0] != model.n_vertices:
        log.warning("MICA predicts FLAME 2020 identity coefficients; model release '%s' may use another shape "
                    "space and no FLAME 2020 basis is available to convert them: using them as they are",
                    model.release)
        return fit_shape_length(s, model.n_shape)
    v20, d20 = flame_basis
    k = min(s.size, d20.shape[2])
    target = v20 + np.einsum("vck,k->vc", d20[:, :, :k], s[:k])
    A = np.asarray(model["shapedirs"], np.float64).reshape(-1, model.n_shape)
    b = (target - np.asarray(model["v_template"], np.float64)).reshape(-1)
    AtA = A.T @ A
    c = np.linalg.solve(AtA + 1e-9 * np.trace(AtA) / model.n_shape * np.eye(model.n_shape), A.T @ b)
    rms = float(np.sqrt(((A @ c - b) ** 2).mean() * 3))
    log.info("MICA identity converted from FLAME 2020 to '%s' (fit residual %.2f mm rms)", model.release, rms * 1e3)
    return c.astype(np.float32)


def neutral_vertices(model: FlameModelData, shape: np.ndarray) -> np.ndarray:
    """Decode shape codes with zero expression and pose: (S,) or (B, S) → (V, 3) or (B, V, 3) metres."""
    s = fit_shape_length(shape, model.n_shape).astype(np.float64)
    dirs = np.asarray(model["shapedirs"], dtype=np.float64)
    v = np.asarray(model["v_template"], dtype=np.float64) + np.einsum("vck,...k->...vc", dirs, s)
    return v.astype(np.float32)


# ---------------------------------------------------------------------------------------------- footage


@dataclass
class FrameCandidate:
    """One scored frame. crop (112, 112, 3) uint8 aligned; five_points (5, 2) px; score = sharpness ×
    frontality."""

    frame_index: int
    score: float
    sharpness: float
    frontality: float
    five_points: np.ndarray
    crop: np.ndarray


def _read_rgb(path: Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)  # a single photo (flamecap identity IMAGE)
    if img is None:
        raise FootageError(f"cannot read image {path}; use a PNG or JPEG file")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def iter_sampled_frames(footage: str | os.PathLike, max_frames: int = 48) -> Iterator[tuple[int, np.ndarray]]:
    """Yield up to ``max_frames`` (frame_index, RGB (H, W, 3) uint8) evenly strided over footage as
    :func:`flamecap.video.open_footage` reads it (video file, image folder, printf pattern, single image).
    Streams; never holds the clip in memory. Frame numbers are the tracker's."""
    from ..video import open_footage

    if max_frames < 1:
        raise InputError(f"max_frames must be >= 1, got {max_frames}")
    n = open_footage(footage).n_frames
    stride = max(1, -(-n // max_frames)) if n else 1
    clip = open_footage(footage, stride=stride)
    got = 0
    for idx, _t, rgb in clip:
        yield int(idx), rgb
        got += 1
        if got >= max_frames:
            break
    if got == 0:
        raise FootageError(f"{footage} has no readable frames; re-encode it (e.g. to MP4 H.264) or use images")


def score_frame(image: np.ndarray, five_points: np.ndarray) -> tuple[float, float, float]:
    """(score, sharpness, frontality) of a frame: Laplacian variance of the face box × frontality."""
    from .preprocess import frontality, sharpness

    pts = np.asarray(five_points, dtype=np.float64)
    lo, hi = pts.min(0), pts.max(0)
    pad = 0.6 * float(max(hi - lo))
    sharp = sharpness(image, (lo[0] - pad, lo[1] - pad, hi[0] + pad, hi[1] + pad))
    front = float(frontality(pts))
    return sharp * front, sharp, front


def select_frames(footage: str | os.PathLike, k: int = 8, max_candidates: int = 48,
                  min_frontality: float = 0.5, progress: ProgressCallback | None = None) -> list[FrameCandidate]:
    """Sample up to ``max_candidates`` frames, detect the five points, score sharpness × frontality and keep
    the best ``k`` aligned crops (frames below ``min_frontality`` only if nothing better exists).
    Raises :class:`NoFaceError` when no sampled frame has a face."""
    from .preprocess import FivePointDetector, align_face

    if k < 1:
        raise InputError(f"k must be >= 1, got {k}")
    heap: list[tuple[float, int, FrameCandidate]] = []
    seen = 0
    with FivePointDetector() as det:
        for n, (idx, rgb) in enumerate(iter_sampled_frames(footage, max_candidates)):
            seen += 1
            pts = det.detect(rgb)
            if progress:
                progress("identity", 0.8 * (n + 1) / max_candidates, f"scoring frame {idx}")
            if pts is None:
                continue
            score, sharp, front = score_frame(rgb, pts)
            rank = score if front >= min_frontality else score * 1e-6  # usable only as a last resort
            cand = FrameCandidate(idx, float(score), sharp, front, pts, align_face(rgb, pts).image)
            item = (rank, -idx, cand)
            if len(heap) < k:
                heapq.heappush(heap, item)
            elif rank > heap[0][0]:
                heapq.heapreplace(heap, item)
    if not heap:
        raise NoFaceError(f"no face found in {seen} sampled frame(s) of {footage}; MICA needs a visible, "
                          f"roughly frontal face")
    return [c for _, _, c in sorted(heap, key=lambda t: (-t[0], -t[1]))]


def _target_n_shape(model: FlameModelData | int | None) -> int:
    if model is None:
        return MICA_N_SHAPE
    if isinstance(model, FlameModelData):
        return model.n_shape
    return int(model)


def estimate_shape_from_footage(footage_path: str | os.PathLike, model: FlameModelData | int | None,
                                weights_path: str | os.PathLike | None,
                                progress: ProgressCallback | None = None, k: int = 8,
                                max_candidates: int = 48, net: MicaNet | None = None,
                                device: str | torch.device | None = None) -> np.ndarray:
    """MICA identity for a clip: best ``k`` of ``max_candidates`` sampled frames (sharpness × frontality),
    MICA on each, mean shape code, in the model's shape space (:func:`convert_shape`: FLAME 2020 codes
    truncated / zero-padded, other FLAME releases projected) with the model's ``n_shape``.

    ``model``: the head model (its ``n_shape``), an int, or ``None`` (300). ``weights_path``: mica.tar, or
    ``None`` for the installed default. ``net`` overrides the weights (tests). Progress reports stage
    ``'identity'`` with fractions in [0, 1] of this step. Returns (n_shape,) float32.
    Raises :class:`WeightsError` before reading any footage when weights are missing."""
    n_shape = _target_n_shape(model)
    if net is None:
        net = load_mica(weights_path, device=device)   # fail fast, before the slow frame scan
    cands = select_frames(footage_path, k=k, max_candidates=max_candidates, progress=progress)
    from .preprocess import to_arcface_input

    inputs = to_arcface_input(np.stack([c.crop for c in cands]))
    if progress:
        progress("identity", 0.85, f"MICA on {len(cands)} frame(s)")
    shapes = predict_shapes(net, inputs)
    log.info("MICA: frames %s (frontality %s)", [c.frame_index for c in cands],
             [round(c.frontality, 2) for c in cands])
    code = shapes.mean(axis=0)
    out = convert_shape(code, model, net.flame_basis) if isinstance(model, FlameModelData) else \
        fit_shape_length(code, n_shape)
    if progress:
        progress("identity", 1.0, "identity estimated")
    return out


def estimate_shape_from_image(image: np.ndarray, net: MicaNet, n_shape: int = MICA_N_SHAPE,
                              where: str = "image") -> np.ndarray:
    """MICA on one RGB image (H, W, 3) uint8 → (n_shape,) float32."""
    from .preprocess import prepare_image

    x, _, _ = prepare_image(image, where=where)
    return fit_shape_length(predict_shapes(net, x)[0], n_shape)
