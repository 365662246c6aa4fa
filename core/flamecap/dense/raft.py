"""RAFT-style refinement of a UV → image flow (Teed & Deng, ECCV 2020, adapted as in FlowFace).

The "source" of the flow is the UV square (R × R texels, learned features), the "target" is the image
feature map (H' × W' at 1/8 resolution). :class:`CorrPyramid` holds the all-pairs correlation between every
texel and every image cell, average-pooled over the image dimensions into a pyramid; ``lookup`` samples a
(2r+1)² window around each texel's current target position at every level. A convolutional GRU on the UV
grid turns those correlations, the current position and the context into a position update and a
per-texel log-scale (uncertainty) map.

Coordinates are feature-map cells in continuous form: image pixel = 8 · cell, the centre of cell j is
j + 0.5 (the contract's pixel convention, scaled).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CorrPyramid:
    """All-pairs correlation between UV features ``fuv`` (B, C, R, R) and image features ``fimg``
    (B, C, H, W), pooled into ``levels`` image-side levels."""

    def __init__(self, fuv: torch.Tensor, fimg: torch.Tensor, levels: int = 4, radius: int = 4):
        B, C, R, R2 = fuv.shape
        H, W = fimg.shape[2:]
        self.radius = radius
        self.shape = (B, R, R2)
        corr = torch.einsum("bcn,bchw->bnhw", fuv.flatten(2), fimg) / C ** 0.5
        corr = corr.reshape(B * R * R2, 1, H, W)
        self.pyramid = [corr]
        for _ in range(levels - 1):
            if min(corr.shape[2:]) < 2:
                break
            corr = F.avg_pool2d(corr, 2, stride=2)
            self.pyramid.append(corr)
        d = torch.arange(-radius, radius + 1, dtype=fuv.dtype, device=fuv.device)
        dy, dx = torch.meshgrid(d, d, indexing="ij")
        self.delta = torch.stack([dx, dy], dim=-1).reshape(1, -1, 1, 2)  # (1, (2r+1)², 1, 2)

    @property
    def n_channels(self) -> int:
        return len(self.pyramid) * (2 * self.radius + 1) ** 2

    def lookup(self, coords: torch.Tensor) -> torch.Tensor:
        """coords (B, 2, R, R) target positions in level-0 cells → (B, L·(2r+1)², R, R)."""
        B, R, R2 = self.shape
        c = coords.permute(0, 2, 3, 1).reshape(B * R * R2, 1, 1, 2)
        out = []
        for lvl, corr in enumerate(self.pyramid):
            h, w = corr.shape[2:]
            pts = c / 2 ** lvl + self.delta.to(c.dtype)               # (N, (2r+1)², 1, 2) cells
            scale = torch.tensor([2.0 / w, 2.0 / h], dtype=c.dtype, device=c.device)
            grid = pts * scale - 1.0
            s = F.grid_sample(corr, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            out.append(s.reshape(B, R, R2, -1))
        return torch.cat(out, dim=-1).permute(0, 3, 1, 2).contiguous()


class MotionEncoder(nn.Module):
    """Encodes correlation samples and the current (normalised) position map."""

    def __init__(self, corr_ch: int, dim: int):
        super().__init__()
        self.corr = nn.Sequential(nn.Conv2d(corr_ch, dim, 1), nn.ReLU(inplace=True),
                                  nn.Conv2d(dim, dim, 3, padding=1), nn.ReLU(inplace=True))
        self.flow = nn.Sequential(nn.Conv2d(2, dim // 2, 7, padding=3), nn.ReLU(inplace=True),
                                  nn.Conv2d(dim // 2, dim // 2, 3, padding=1), nn.ReLU(inplace=True))
        self.out = nn.Sequential(nn.Conv2d(dim + dim // 2, dim - 2, 3, padding=1), nn.ReLU(inplace=True))

    def forward(self, corr: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.corr(corr), self.flow(pos)], dim=1)
        return torch.cat([self.out(x), pos], dim=1)


class ConvGRU(nn.Module):
    """Convolutional GRU cell (3×3) over the UV grid."""

    def __init__(self, hidden: int, inp: int):
        super().__init__()
        self.zr = nn.Conv2d(hidden + inp, 2 * hidden, 3, padding=1)
        self.q = nn.Conv2d(hidden + inp, hidden, 3, padding=1)

    def forward(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        z, r = torch.sigmoid(self.zr(torch.cat([h, x], dim=1))).chunk(2, dim=1)
        q = torch.tanh(self.q(torch.cat([r * h, x], dim=1)))
        return (1 - z) * h + z * q


class UpdateBlock(nn.Module):
    """Motion encoder + ConvGRU + heads for Δposition (cells) and the raw log-scale."""

    def __init__(self, corr_ch: int, ctx_dim: int, hidden: int, motion_dim: int = 64):
        super().__init__()
        self.motion = MotionEncoder(corr_ch, motion_dim)
        self.gru = ConvGRU(hidden, motion_dim + ctx_dim)
        self.delta = nn.Sequential(nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(inplace=True),
                                   nn.Conv2d(hidden, 2, 3, padding=1))
        self.scale = nn.Sequential(nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(inplace=True),
                                   nn.Conv2d(hidden, 1, 3, padding=1))
        nn.init.zeros_(self.delta[-1].weight)
        nn.init.zeros_(self.delta[-1].bias)
        nn.init.zeros_(self.scale[-1].weight)
        nn.init.constant_(self.scale[-1].bias, 1.0)

    def forward(self, h, ctx, corr, pos):
        h = self.gru(h, torch.cat([self.motion(corr, pos), ctx], dim=1))
        return h, self.delta(h), self.scale(h)
