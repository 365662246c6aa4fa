"""ARKit-52 blendshape names and the one naming-variant matcher (stdlib only; shared by the core and the
add-on).

:data:`ARKIT_NAMES` is in the column order Live Link Face writes (its CSV and UDP payload), camelCase as
Apple spells them. :func:`canonical_arkit_name` maps common variants ("EyeBlink_L", "eyeBlink_L",
"EyeBlinkLeft", "blendShape1.eyeBlinkLeft", "eye_blink_left") to the canonical camelCase name.
"""
from __future__ import annotations

import re
from typing import Iterable

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
