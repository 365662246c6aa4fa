"""FlowFace-style dense alignment network (Taubner et al., CVPR 2024): every head-model vertex's 2D
position in a face crop plus a per-vertex uncertainty.

Pipeline: MiT encoder (:mod:`.segformer`) → image features at 1/8; learned UV textures (:mod:`.uv_branch`)
→ UV features, context, initial GRU state and initial positions; RAFT-style iterations (:mod:`.raft`)
refine a UV → image position map (R × R texels, each a 2D image position) and a log-scale map. Per-vertex
positions and scales are bilinear samples of those maps at each vertex's UV coordinate.

Loss — Laplace negative log-likelihood (chosen over the Gaussian). Per visible vertex and axis,
``|x − μ| / b + log(2b)``, summed over iterations with RAFT's weights γ^(N−1−i). Why Laplace: (1) its
gradient w.r.t. μ has bounded magnitude 1/b, like RAFT's L1 loss, so the far-off early iterations and
the occasional mislabelled vertex (occluder edges, grazing-angle visibility) do not dominate training the
way squared errors do; (2) the optimal b is the mean absolute error, which stays informative for the
heavy-tailed errors dense alignment makes (a whole region slipping), where a Gaussian σ would be inflated
by a few outliers; (3) the fitter uses σ with a robust kernel, which matches a heavy-tailed error model.
Reported σ is the per-axis standard deviation of that Laplace, σ = √2·b (pixels), so a Gaussian-minded
consumer gets the right spread.

Units: crop pixels (continuous, contract convention); the input crop is square, ``image_size`` px.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .raft import CorrPyramid, UpdateBlock
from .segformer import MIT_CONFIGS, MiTFeatures
from .uv_branch import UVBranch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LOG_B_MIN, LOG_B_MAX = -3.0, 6.0
STRIDE = 8


@dataclass(frozen=True)
class DenseNetConfig:
    """Network hyper-parameters. ``encoder`` names a :data:`~.segformer.MIT_CONFIGS` entry."""

    encoder: str = "b0"
    image_size: int = 256
    uv_res: int = 32
    feat_dim: int = 128
    ctx_dim: int = 64
    hidden_dim: int = 64
    motion_dim: int = 64
    corr_levels: int = 3
    corr_radius: int = 3
    iters: int = 6
    uv_levels: int = 3

    def __post_init__(self):
        if self.encoder not in MIT_CONFIGS:
            raise ValueError(f"unknown encoder '{self.encoder}'; choose one of {sorted(MIT_CONFIGS)}")
        if self.image_size % 32 or self.image_size < 32:
            raise ValueError(f"image_size must be a positive multiple of 32, got {self.image_size}")
        if self.uv_res < 4 or self.iters < 1 or self.corr_levels < 1 or self.corr_radius < 1:
            raise ValueError(f"invalid DenseNetConfig {self}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DenseNetConfig":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


# Named presets: "tiny" for CPU tests, "b0" for CPU inference, "b5" the paper's encoder.
PRESETS: dict[str, DenseNetConfig] = {
    "tiny": DenseNetConfig(encoder="tiny", image_size=64, uv_res=16, feat_dim=32, ctx_dim=24, hidden_dim=32,
                           motion_dim=32, corr_levels=2, corr_radius=2, iters=4, uv_levels=2),
    "b0": DenseNetConfig(encoder="b0", image_size=256, uv_res=32),
    "b5": DenseNetConfig(encoder="b5", image_size=512, uv_res=64, feat_dim=256, ctx_dim=128, hidden_dim=128,
                         motion_dim=128, corr_levels=4, corr_radius=4, iters=8, uv_levels=4),
}


@dataclass
class DenseIteration:
    """One refinement step's per-vertex output: points (B, V, 2) crop px, log_b (B, V) log Laplace scale
    (px)."""

    points: torch.Tensor
    log_b: torch.Tensor

    @property
    def sigma(self) -> torch.Tensor:
        """Per-axis standard deviation in px, √2·b, (B, V), > 0."""
        return math.sqrt(2.0) * torch.exp(self.log_b)


@dataclass
class DenseOutput:
    """All iterations (last = final) plus the final texel maps: pos_map (B, 2, R, R) crop px,
    log_b_map (B, 1, R, R)."""

    iterations: list[DenseIteration]
    pos_map: torch.Tensor
    log_b_map: torch.Tensor

    @property
    def final(self) -> DenseIteration:
        return self.iterations[-1]


def sample_uv(maps: torch.Tensor, vertex_uv: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of texel maps (B, C, R, R) (row 0 = v 1) at UVs (V, 2) in [0, 1] → (B, V, C)."""
    grid = torch.stack([2.0 * vertex_uv[:, 0] - 1.0, 1.0 - 2.0 * vertex_uv[:, 1]], dim=-1).to(maps.dtype)
    grid = grid[None, None].expand(maps.shape[0], 1, -1, 2)
    return F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=False)[:, :, 0].transpose(1, 2)


def _soft_log_b(raw: torch.Tensor) -> torch.Tensor:
    mid, half = (LOG_B_MAX + LOG_B_MIN) / 2, (LOG_B_MAX - LOG_B_MIN) / 2
    return mid + half * torch.tanh((raw - mid) / half)


class FlowFaceNet(nn.Module):
    """``net(images (B, 3, S, S) float RGB in [0, 1], vertex_uv (V, 2)) -> DenseOutput``."""

    def __init__(self, cfg: DenseNetConfig):
        super().__init__()
        self.cfg = cfg
        self.fnet = MiTFeatures(MIT_CONFIGS[cfg.encoder], cfg.feat_dim)
        self.uv = UVBranch(cfg.uv_res, cfg.feat_dim, cfg.ctx_dim, cfg.hidden_dim, cfg.uv_levels)
        corr_ch = cfg.corr_levels * (2 * cfg.corr_radius + 1) ** 2
        self.update = UpdateBlock(corr_ch, cfg.ctx_dim, cfg.hidden_dim, cfg.motion_dim)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor, vertex_uv: torch.Tensor, iters: int | None = None) -> DenseOutput:
        iters = iters or self.cfg.iters
        B = images.shape[0]
        fimg = self.fnet((images - self.mean) / self.std)
        H, W = fimg.shape[2:]
        uvf = self.uv()
        corr = CorrPyramid(uvf.feat.expand(B, -1, -1, -1), fimg, self.cfg.corr_levels, self.cfg.corr_radius)
        size = torch.tensor([W, H], dtype=fimg.dtype, device=fimg.device).view(1, 2, 1, 1)
        coords = (uvf.init * size).expand(B, -1, -1, -1)            # cells
        h = uvf.hidden.expand(B, -1, -1, -1)
        ctx = uvf.ctx.expand(B, -1, -1, -1)
        vertex_uv = vertex_uv.to(fimg.dtype)
        out: list[DenseIteration] = []
        for _ in range(iters):
            coords = coords.detach()
            c = corr.lookup(coords)
            pos = coords / size * 2.0 - 1.0
            h, delta, raw = self.update(h, ctx, c, pos)
            coords = coords + delta
            log_b = _soft_log_b(raw)
            samples = sample_uv(torch.cat([coords * STRIDE, log_b], dim=1), vertex_uv)
            out.append(DenseIteration(points=samples[..., :2], log_b=samples[..., 2]))
        return DenseOutput(iterations=out, pos_map=coords * STRIDE, log_b_map=log_b)


def laplace_nll(pred: DenseIteration, target: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """Mean Laplace NLL over visible vertices and both axes. target (B, V, 2) px, visible (B, V) bool."""
    b = torch.exp(pred.log_b)[..., None]
    nll = (pred.points - target).abs() / b + pred.log_b[..., None] + math.log(2.0)
    w = visible.to(nll.dtype)[..., None].expand_as(nll)
    return (nll * w).sum() / w.sum().clamp_min(1.0)


def sequence_loss(out: DenseOutput, target: torch.Tensor, visible: torch.Tensor, gamma: float = 0.8,
                  scale: float = 1.0) -> torch.Tensor:
    """RAFT sequence loss: Σ_i γ^(N−1−i) · NLL_i. ``scale`` divides pixel units (crop-size invariance):
    errors and b are measured in units of ``scale`` px."""
    n = len(out.iterations)
    total = target.new_zeros(())
    for i, it in enumerate(out.iterations):
        if scale != 1.0:
            it = DenseIteration(points=it.points / scale, log_b=it.log_b - math.log(scale))
        total = total + gamma ** (n - 1 - i) * laplace_nll(it, target / scale, visible)
    return total


def build_net(cfg: DenseNetConfig | str) -> FlowFaceNet:
    if isinstance(cfg, str):
        if cfg not in PRESETS:
            raise ValueError(f"unknown preset '{cfg}'; choose one of {sorted(PRESETS)}")
        cfg = PRESETS[cfg]
    return FlowFaceNet(cfg)
