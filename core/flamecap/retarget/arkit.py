"""Per-channel gain/offset/limits for retargeted shape keys (the ARKit names and matcher are in
:mod:`flamecap.contract.arkit`, shared with the add-on)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np

from ..contract.arkit import ARKIT_NAMES, canonical_arkit_name, match_arkit_names
from ..errors import InputError

__all__ = ["ARKIT_NAMES", "canonical_arkit_name", "match_arkit_names", "Channel", "ChannelMap"]


@dataclass(frozen=True)
class Channel:
    """Per-channel post-processing: ``out = clip(gain · w + offset, lower, upper)``; the solve itself is
    bounded by ``[solve_lower, solve_upper]``."""

    gain: float = 1.0
    offset: float = 0.0
    lower: float = 0.0
    upper: float = 1.0
    solve_lower: float = 0.0
    solve_upper: float = 1.0
    enabled: bool = True

    def __post_init__(self):
        if not (self.lower <= self.upper and self.solve_lower <= self.solve_upper):
            raise InputError(f"channel limits must satisfy lower <= upper (got {self.lower}..{self.upper}, "
                             f"solve {self.solve_lower}..{self.solve_upper})")


@dataclass
class ChannelMap:
    """Settings per shape-key name (names not listed use ``default``)."""

    channels: dict[str, Channel] = field(default_factory=dict)
    default: Channel = Channel()

    def get(self, name: str) -> Channel:
        if name in self.channels:
            return self.channels[name]
        c = canonical_arkit_name(name)
        if c is not None and c in self.channels:
            return self.channels[c]
        return self.default

    def bounds(self, names: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
        """Solve bounds (K,), (K,); disabled channels are pinned to 0."""
        chans = [self.get(n) for n in names]
        lo = np.array([c.solve_lower if c.enabled else 0.0 for c in chans])
        hi = np.array([c.solve_upper if c.enabled else 0.0 for c in chans])
        return lo, hi

    def apply(self, names: list[str], weights: np.ndarray) -> np.ndarray:
        """Gain/offset/limits on solved weights (T, K) → (T, K)."""
        w = np.asarray(weights, dtype=np.float64).copy()
        for k, n in enumerate(names):
            c = self.get(n)
            w[:, k] = np.clip(c.gain * w[:, k] + c.offset, c.lower, c.upper) if c.enabled else 0.0
        return w

    @classmethod
    def from_dict(cls, spec: Mapping) -> "ChannelMap":
        """From JSON-like ``{"default": {...}, "channels": {"jawOpen": {"gain": 1.2}, ...}}``."""
        try:
            default = Channel(**spec.get("default", {}))
            chans = {str(k): Channel(**v) for k, v in spec.get("channels", {}).items()}
        except TypeError as exc:
            raise InputError(f"bad channel settings ({exc}); allowed keys: gain, offset, lower, upper, "
                             f"solve_lower, solve_upper, enabled") from None
        return cls(channels=chans, default=default)
