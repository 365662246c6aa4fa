"""SegFormer Mix Transformer (MiT) image encoder, written from the paper (Xie et al., NeurIPS 2021).

Four stages, each: overlapping patch embedding (strided conv, kernel > stride, LayerNorm) → blocks of
efficient self-attention (keys/values spatially reduced by a strided conv with ratio ``sr``) and a Mix-FFN
(linear → 3×3 depthwise conv → GELU → linear; the depthwise conv gives positional information, so there
are no positional embeddings and any input size works) → LayerNorm. Stage strides 4, 8, 16, 32.

:class:`MiTFeatures` fuses the four scales to 1/8 resolution (an all-MLP head as in SegFormer's decoder:
per-scale 1×1 projection, bilinear resample, concatenate, 1×1 fuse), which the RAFT-style refinement
correlates against. Configs ``b0`` … ``b5`` are the paper's; ``tiny`` is for CPU tests.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class MiTConfig:
    """Encoder hyper-parameters (per stage: embedding width, blocks, heads, key/value reduction ratio)."""

    embed_dims: tuple[int, int, int, int] = (32, 64, 160, 256)
    depths: tuple[int, int, int, int] = (2, 2, 2, 2)
    num_heads: tuple[int, int, int, int] = (1, 2, 5, 8)
    sr_ratios: tuple[int, int, int, int] = (8, 4, 2, 1)
    mlp_ratio: float = 4.0
    drop_path: float = 0.1

    def __post_init__(self):
        for name in ("embed_dims", "depths", "num_heads", "sr_ratios"):
            if len(getattr(self, name)) != 4:
                raise ValueError(f"MiTConfig.{name} needs 4 stages, got {getattr(self, name)}")
        for d, h in zip(self.embed_dims, self.num_heads):
            if d % h:
                raise ValueError(f"MiTConfig: embed dim {d} is not divisible by {h} heads")

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "MiTConfig":
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


_HEADS = (1, 2, 5, 8)
_SR = (8, 4, 2, 1)
MIT_CONFIGS: dict[str, MiTConfig] = {
    "tiny": MiTConfig((16, 32, 64, 96), (1, 1, 1, 1), (1, 1, 2, 2), (4, 2, 1, 1), 2.0, 0.0),
    "b0": MiTConfig((32, 64, 160, 256), (2, 2, 2, 2), _HEADS, _SR),
    "b1": MiTConfig((64, 128, 320, 512), (2, 2, 2, 2), _HEADS, _SR),
    "b2": MiTConfig((64, 128, 320, 512), (3, 4, 6, 3), _HEADS, _SR),
    "b3": MiTConfig((64, 128, 320, 512), (3, 4, 18, 3), _HEADS, _SR),
    "b4": MiTConfig((64, 128, 320, 512), (3, 8, 27, 3), _HEADS, _SR),
    "b5": MiTConfig((64, 128, 320, 512), (3, 6, 40, 3), _HEADS, _SR),
}


class OverlapPatchEmbed(nn.Module):
    """Strided conv with overlapping windows (kernel > stride) + LayerNorm: (B, C, H, W) → tokens."""

    def __init__(self, in_ch: int, dim: int, kernel: int, stride: int):
        super().__init__()
        self.proj = nn.Conv2d(in_ch, dim, kernel, stride, padding=kernel // 2)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)
        h, w = x.shape[2:]
        return self.norm(x.flatten(2).transpose(1, 2)), h, w


class EfficientSelfAttention(nn.Module):
    """Multi-head attention whose keys/values come from a sequence reduced ``sr``× per side."""

    def __init__(self, dim: int, heads: int, sr: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.sr_ratio = sr
        if sr > 1:
            self.sr = nn.Conv2d(dim, dim, sr, sr)
            self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        B, N, C = x.shape
        q = self.q(x).reshape(B, N, self.heads, C // self.heads).transpose(1, 2)
        if self.sr_ratio > 1:
            y = x.transpose(1, 2).reshape(B, C, h, w)
            if h < self.sr_ratio or w < self.sr_ratio:  # tiny inputs: reduce to one token
                y = F.adaptive_avg_pool2d(y, 1)
                y = self.norm(y.flatten(2).transpose(1, 2))
            else:
                y = self.norm(self.sr(y).flatten(2).transpose(1, 2))
        else:
            y = x
        kv = self.kv(y).reshape(B, -1, 2, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, kv[0], kv[1])
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


class MixFFN(nn.Module):
    """Linear → 3×3 depthwise conv → GELU → linear."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dw = nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = self.fc1(x)
        B, N, C = x.shape
        x = self.dw(x.transpose(1, 2).reshape(B, C, h, w)).flatten(2).transpose(1, 2)
        return self.fc2(F.gelu(x))


class DropPath(nn.Module):
    """Stochastic depth: drop the residual branch per sample while training."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p <= 0:
            return x
        keep = x.new_empty(x.shape[0], *([1] * (x.dim() - 1))).bernoulli_(1 - self.p)
        return x * keep / (1 - self.p)


class MiTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, sr: int, mlp_ratio: float, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = EfficientSelfAttention(dim, heads, sr)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = MixFFN(dim, int(dim * mlp_ratio))
        self.drop = DropPath(drop_path)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), h, w))
        return x + self.drop(self.ffn(self.norm2(x), h, w))


class MixTransformer(nn.Module):
    """The MiT encoder: (B, 3, H, W) normalised RGB → 4 feature maps at strides 4, 8, 16, 32."""

    def __init__(self, cfg: MiTConfig, in_ch: int = 3):
        super().__init__()
        self.cfg = cfg
        total = sum(cfg.depths)
        rates = [cfg.drop_path * i / max(total - 1, 1) for i in range(total)]
        self.embeds = nn.ModuleList()
        self.stages = nn.ModuleList()
        self.norms = nn.ModuleList()
        k = 0
        prev = in_ch
        for s in range(4):
            kernel, stride = (7, 4) if s == 0 else (3, 2)
            self.embeds.append(OverlapPatchEmbed(prev, cfg.embed_dims[s], kernel, stride))
            self.stages.append(nn.ModuleList(
                MiTBlock(cfg.embed_dims[s], cfg.num_heads[s], cfg.sr_ratios[s], cfg.mlp_ratio, rates[k + i])
                for i in range(cfg.depths[s])))
            self.norms.append(nn.LayerNorm(cfg.embed_dims[s]))
            k += cfg.depths[s]
            prev = cfg.embed_dims[s]
        self.apply(_init_weights)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for embed, blocks, norm in zip(self.embeds, self.stages, self.norms):
            x, h, w = embed(x)
            for blk in blocks:
                x = blk(x, h, w)
            x = norm(x)
            x = x.transpose(1, 2).reshape(x.shape[0], -1, h, w)
            feats.append(x)
        return feats


class MiTFeatures(nn.Module):
    """MiT encoder + all-MLP fusion of its four scales at 1/8 resolution: (B, 3, H, W) → (B, out_dim,
    ⌈H/8⌉, ⌈W/8⌉). H and W should be multiples of 32 (any size works; features then align less well)."""

    def __init__(self, cfg: MiTConfig, out_dim: int, fuse_dim: int | None = None):
        super().__init__()
        self.encoder = MixTransformer(cfg)
        fuse_dim = fuse_dim or max(cfg.embed_dims[0] * 2, out_dim)
        self.lateral = nn.ModuleList(nn.Conv2d(d, fuse_dim, 1) for d in cfg.embed_dims)
        self.fuse = nn.Sequential(nn.Conv2d(4 * fuse_dim, fuse_dim, 1), nn.GroupNorm(1, fuse_dim), nn.GELU(),
                                  nn.Conv2d(fuse_dim, out_dim, 1))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(img)
        size = feats[1].shape[2:]
        ups = [F.interpolate(lat(f), size=size, mode="bilinear", align_corners=False) if f.shape[2:] != size
               else lat(f) for lat, f in zip(self.lateral, feats)]
        return self.fuse(torch.cat(ups, dim=1))


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
        nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
        if m.bias is not None:
            nn.init.zeros_(m.bias)
