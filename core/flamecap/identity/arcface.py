"""ArcFace encoder: the "improved" ResNet (IResNet) of insightface's ``arcface_torch``.

Parameter names follow insightface's ``iresnet.py`` so its ``backbone.pth`` files and the ``arcface`` part of
MICA's ``mica.tar`` load directly: ``conv1, bn1, prelu, layer1..layer4.<i>.{bn1, conv1, bn2, prelu, conv2, bn3,
downsample.0, downsample.1}, bn2, fc, features``.

Input (B, 3, 112, 112) RGB in [-1, 1]; output (B, num_features) raw embedding (not normalised: MICA
L2-normalises it, see :func:`flamecap.identity.mica.MicaNet.embed`).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

#: Blocks per stage of IResNet-100 (ArcFace r100, the encoder MICA uses).
IRESNET100_LAYERS = (3, 13, 30, 3)
#: Channel widths of the four stages.
IRESNET_WIDTHS = (64, 128, 256, 512)
BN_EPS = 1e-5


class IBasicBlock(nn.Module):
    """Pre-activation style residual block: BN → conv3×3 → BN → PReLU → conv3×3(stride) → BN, + shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch, eps=BN_EPS)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch, eps=BN_EPS)
        self.prelu = nn.PReLU(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_ch, eps=BN_EPS)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(out_ch, eps=BN_EPS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return y + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    """IResNet for 112×112 faces: stem conv3×3(64) → BN → PReLU, four stride-2 stages, BN, flatten
    (512·7·7), dropout, fc → ``num_features``, BatchNorm1d ("features").

    ``layers`` blocks per stage (``(3, 13, 30, 3)`` = r100); ``widths`` channels per stage (tests may use
    narrower ones; real weights need the defaults)."""

    def __init__(self, layers: Sequence[int] = IRESNET100_LAYERS, widths: Sequence[int] = IRESNET_WIDTHS,
                 num_features: int = 512, dropout: float = 0.0, input_size: int = 112):
        super().__init__()
        if len(layers) != 4 or len(widths) != 4:
            raise ValueError(f"IResNet needs 4 stages, got layers={tuple(layers)} widths={tuple(widths)}")
        if input_size % 16:
            raise ValueError(f"input_size {input_size} must be divisible by 16")
        self.layers_cfg = tuple(int(n) for n in layers)
        self.widths = tuple(int(w) for w in widths)
        self.input_size = int(input_size)
        self.num_features = int(num_features)
        stem = self.widths[0]
        self.conv1 = nn.Conv2d(3, stem, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem, eps=BN_EPS)
        self.prelu = nn.PReLU(stem)
        in_ch = stem
        for i, (n_blocks, width) in enumerate(zip(self.layers_cfg, self.widths), start=1):
            blocks = [IBasicBlock(in_ch, width, stride=2)]
            blocks += [IBasicBlock(width, width, stride=1) for _ in range(n_blocks - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
            in_ch = width
        self.bn2 = nn.BatchNorm2d(in_ch, eps=BN_EPS)
        self.dropout = nn.Dropout(p=dropout)
        side = self.input_size // 16
        self.fc = nn.Linear(in_ch * side * side, self.num_features)
        self.features = nn.BatchNorm1d(self.num_features, eps=BN_EPS)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # variance-preserving (insightface uses N(0, 0.1); only the
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")  # layout matters)
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        self.features.weight.requires_grad_(False)  # insightface keeps the feature-BN scale fixed at 1

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Stem + stages 1–3 (frozen in MICA training): (B, 3, H, W) → (B, widths[2], H/8, W/8)."""
        x = self.prelu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))

    def head(self, x: torch.Tensor) -> torch.Tensor:
        """Stage 4 + embedding head: (B, widths[2], H/8, W/8) → (B, num_features)."""
        x = self.bn2(self.layer4(x))
        x = self.dropout(torch.flatten(x, 1))
        return self.features(self.fc(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 112, 112) RGB in [-1, 1] → (B, num_features) unnormalised embedding."""
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] != self.input_size or x.shape[3] != self.input_size:
            raise ValueError(f"IResNet expects (B, 3, {self.input_size}, {self.input_size}), got {tuple(x.shape)}")
        return self.head(self.trunk(x))


@torch.no_grad()
def recalibrate_batchnorm(module: nn.Module, batches) -> None:
    """Set every BatchNorm's running mean/var to the exact statistics of ``batches`` (an iterable of input
    tensors), e.g. after changing weights; leaves ``module`` in eval mode."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the given batches
    module.train()
    try:
        for x in batches:
            module(x)
    finally:
        for m, mom in zip(norms, saved):
            m.momentum = mom
        module.eval()


def iresnet100(**kwargs) -> IResNet:
    """ArcFace IResNet-100 (the encoder of MICA and of insightface's r100 models)."""
    return IResNet(IRESNET100_LAYERS, IRESNET_WIDTHS, **kwargs)
