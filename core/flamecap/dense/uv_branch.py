"""The UV branch: image-independent learned feature textures over the head's UV square.

Each output (correlation features, GRU context, initial GRU state) is a sum of learned textures at several
resolutions (coarse ones give smoothness, fine ones detail), upsampled bilinearly to the working UV
resolution R. A learned ``init`` texture holds every texel's starting image position (fractions of the
crop width/height), initialised from the UV layout itself (u → x, 1 − v → y, shrunk to the crop centre).

Nothing here depends on the image, so in eval mode the result is computed once and cached (the cache is
dropped on ``train()`` and when weights are loaded).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class UVFeatures:
    """feat (1, Cf, R, R) correlation features; ctx (1, Cc, R, R) context; hidden (1, Ch, R, R) initial GRU
    state; init (1, 2, R, R) starting image position per texel as fractions of crop width/height."""

    feat: torch.Tensor
    ctx: torch.Tensor
    hidden: torch.Tensor
    init: torch.Tensor


class UVBranch(nn.Module):
    """Learned multi-resolution UV textures → :class:`UVFeatures` at resolution ``uv_res``."""

    def __init__(self, uv_res: int, feat_dim: int, ctx_dim: int, hidden_dim: int, n_levels: int = 3):
        super().__init__()
        self.uv_res = uv_res
        self.dims = (feat_dim, ctx_dim, hidden_dim)
        total = sum(self.dims)
        res = [max(uv_res >> (n_levels - 1 - i), 2) for i in range(n_levels)]
        self.textures = nn.ParameterList(nn.Parameter(torch.randn(1, total, r, r) * (0.5 / n_levels) ** 0.5)
                                         for r in res)
        self.mix = nn.Conv2d(total, total, 1)
        g = (torch.arange(uv_res, dtype=torch.float32) + 0.5) / uv_res
        vv, uu = torch.meshgrid(1.0 - g, g, indexing="ij")  # row 0 is v = 1 (top of the UV square)
        init = torch.stack([0.2 + 0.6 * uu, 0.2 + 0.6 * (1.0 - vv)], dim=0)[None]
        self.init = nn.Parameter(init)
        self._cache: UVFeatures | None = None
        self._register_load_state_dict_pre_hook(self._drop_cache)

    def _drop_cache(self, *args, **kwargs) -> None:
        self._cache = None

    def train(self, mode: bool = True):
        self._cache = None
        return super().train(mode)

    def forward(self) -> UVFeatures:
        if self._cache is not None and not self.training:
            return self._cache
        R = self.uv_res
        x = sum(F.interpolate(t, size=(R, R), mode="bilinear", align_corners=False) if t.shape[-1] != R else t
                for t in self.textures)
        x = self.mix(x)
        f, c, h = torch.split(x, list(self.dims), dim=1)
        out = UVFeatures(feat=f, ctx=F.relu(c), hidden=torch.tanh(h), init=self.init)
        if not self.training and not torch.is_grad_enabled():
            self._cache = out
        return out
