"""ARKit-52 blendshape names, naming-variant matching and per-channel gain/offset/limits (numpy only).

:data:`ARKIT_NAMES` is in the column order Live Link Face writes (its CSV and UDP payload), camelCase as
Apple spells them. :func:`canonical_arkit_name` maps common variants ("EyeBlink_L", "eyeBlink_L",
"EyeBlinkLeft", "blendShape1.eyeBlinkLeft", "eye_blink_left") to the canonical camelCase name.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np

from ..errors import InputError

ARKIT_NAMES: tuple[str, ...] = (
    "eyeBlinkLeft", "eyeLookDownLeft", "eyeLookInLeft", "eyeLookOutLeft", "eyeLookUpLeft", "eyeSquintLeft",
    "eyeWideLeft", "eyeBlinkRight", "eyeLookDownRight", "eyeLookInRight", "eyeLookOutRight", "eyeLookUpRight",
    "eyeSquintRight", "eyeWideRight", "jawForward", "jawRight", "jawLeft", "jawOpen", "mouthClose",
    "mouthFunnel", "mouthPucker", "mouthRight", "mouthLeft", "mouthSmileLeft", "mouthSmileRight",
    "mouthFrownLeft", "mouthFrownRight", "mouthDimpleLeft", "mouthDimpleRight", "mouthStretchLeft",
    "mouthStretchRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper",
    "mouthPressLeft", "mouthPressRight", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthUpperUpLeft",
    "mouthUpperUpRight", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "noseSneerLeft", "noseSneerRight", "tongueOut",
)
assert len(ARKIT_NAMES) == 52 and len(set(ARKIT_NAMES)) == 52

_KEY_TO_NAME = {n.lower(): n for n in ARKIT_NAMES}
_SIDE_PATTERNS = (
    re.compile(r"[._\- ](l|r|left|right)$", re.IGNORECASE),   # eyeBlink_L, eye_blink.left
    re.compile(r"(?<=[a-z0-9])(Left|Right|L|R)$"),               # EyeBlinkLeft, eyeBlinkL
)
_PREFIXES = ("arkit", "blendshape", "bs", "shape", "face")


def _alnum(s: str) -> str:
    return re.sub(r"[^a-z0-9]", "", s.lower())


def canonical_arkit_name(name: str) -> str | None:
    """The canonical ARKit name for a naming variant, or None when it is not one of the 52."""
    s = str(name).strip()
    # strip namespaces such as "blendShape1.eyeBlinkLeft" or "Face:eyeBlinkLeft" (keep ".L"/".R" sides)
    for sep in (":", "|", "."):
        if sep in s:
            head, tail = s.rsplit(sep, 1)
            if tail and tail.lower() not in ("l", "r", "left", "right"):
                s = tail
    candidates = [(s, "")]
    for pat in _SIDE_PATTERNS:
        m = pat.search(s)
        if m:
            candidates.append((s[: m.start()], "left" if m.group(1).lower().startswith("l") else "right"))
    for base, side in candidates:
        key = _alnum(base) + side
        if key in _KEY_TO_NAME:
            return _KEY_TO_NAME[key]
        for prefix in _PREFIXES:
            if key.startswith(prefix) and key[len(prefix):] in _KEY_TO_NAME:
                return _KEY_TO_NAME[key[len(prefix):]]
    return None


def match_arkit_names(names: Iterable[str]) -> dict[str, str]:
    """Map each of the target's shape-key names that is an ARKit variant → canonical ARKit name.
    When two keys map to the same ARKit name the first wins."""
    out: dict[str, str] = {}
    seen: set[str] = set()
    for n in names:
        c = canonical_arkit_name(n)
        if c is not None and c not in seen:
            out[n] = c
            seen.add(c)
    return out


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
