"""Metrics against an independent 68-point reference (numpy only): per-region NME, lid / lip openings, blink
events and recall, amplitude ratio, correlation and lag of 1D signals.

Point numbering is the iBUG-300W / dlib 68-point scheme (0-based): jaw line 0–16, brows 17–26, nose 27–35,
eyes 36–47 (subject's right eye 36–41, left 42–47), outer mouth 48–59, inner mouth 60–67. "Inner 51" = 17–67
(the jaw line's points slide along the contour, so the standard NME leaves them out).

Mouth opening: mean of the three inner-lip gaps 61–67, 62–66, 63–65, over the reference's inter-ocular
distance (outer eye corners 36–45). Eye opening per eye: mean of the two lid gaps (37–41, 38–40 right;
43–47, 44–46 left) over the same inter-ocular distance. Gaps are signed, measured along the face's downward
axis (perpendicular to the eye-corner line of the same point set): FLAME's official 68-point embedding has
its inner-lip points crossed by ~3.5 mm on the closed template, which an unsigned distance reads as open.

Blink events (:func:`blink_events`): frames where the (both-eye mean) opening is a local minimum below
``BLINK_FRACTION`` × the clip's median opening; runs of such frames closer than ``BLINK_MERGE`` frames are one
event (its deepest frame). A reference blink is reproduced when the other signal has an event of its own (same
rule, its own median) within ``BLINK_TOLERANCE`` frames.
"""
from __future__ import annotations

import numpy as np

REGIONS: dict[str, tuple[int, ...]] = {
    "brows": tuple(range(17, 27)),
    "eyes": tuple(range(36, 48)),
    "nose": tuple(range(27, 36)),
    "outer_mouth": tuple(range(48, 60)),
    "inner_mouth": tuple(range(60, 68)),
    "jaw_line": tuple(range(0, 17)),
}
INNER51 = tuple(range(17, 68))
OUTER_EYE_CORNERS = (36, 45)
MOUTH_GAPS = ((61, 67), (62, 66), (63, 65))
EYE_GAPS = {"right": ((37, 41), (38, 40)), "left": ((43, 47), (44, 46))}
BLINK_FRACTION = 0.6
BLINK_MERGE = 3
BLINK_TOLERANCE = 2


def iod(ref68: np.ndarray) -> np.ndarray:
    """Inter-ocular distance (outer eye corners) per frame: (T, 68, 2) → (T,)."""
    a, b = OUTER_EYE_CORNERS
    return np.linalg.norm(ref68[:, a] - ref68[:, b], axis=-1)


def nme_per_frame(pred68: np.ndarray, ref68: np.ndarray, points=INNER51, norm: np.ndarray | None = None
                  ) -> np.ndarray:
    """Mean point distance over ``points`` divided by the reference's inter-ocular distance: (T,) fractions
    (NaN where either side is missing)."""
    idx = list(points)
    n = iod(ref68) if norm is None else np.asarray(norm, float)
    d = np.linalg.norm(np.asarray(pred68, float)[:, idx] - np.asarray(ref68, float)[:, idx], axis=-1)
    return d.mean(1) / n


def nme(pred68: np.ndarray, ref68: np.ndarray, valid: np.ndarray, points=INNER51) -> float:
    """Mean over ``valid`` frames of :func:`nme_per_frame`, in % of the inter-ocular distance."""
    per = nme_per_frame(pred68, ref68, points)
    keep = np.asarray(valid, bool) & np.isfinite(per)
    return float(per[keep].mean() * 100.0) if keep.any() else float("nan")


def region_nme(pred68: np.ndarray, ref68: np.ndarray, valid: np.ndarray) -> dict[str, float]:
    """NME (%) of each region of :data:`REGIONS` plus ``inner51``."""
    out = {"inner51": nme(pred68, ref68, valid)}
    out.update({name: nme(pred68, ref68, valid, pts) for name, pts in REGIONS.items()})
    return out


def offset_removed_nme(pred68: np.ndarray, ref68: np.ndarray, valid: np.ndarray, points=INNER51) -> float:
    """Inner-51 NME (%) after removing each point's mean offset over the clip (in inter-ocular units): what is
    left once a constant bias of the point placement is taken out."""
    v = np.asarray(valid, bool)
    if not v.any():
        return float("nan")
    n = iod(ref68)[:, None, None]
    rel = (np.asarray(pred68, float) - np.asarray(ref68, float)) / n        # (T, 68, 2)
    rel = rel - rel[v].mean(0, keepdims=True)
    d = np.linalg.norm(rel[:, list(points)], axis=-1).mean(1)
    return float(d[v].mean() * 100.0)


def face_down(p68: np.ndarray) -> np.ndarray:
    """Per-frame unit vector (T, 2) perpendicular to the outer-eye-corner line, pointing to the chin (image y
    grows downwards)."""
    a, b = OUTER_EYE_CORNERS
    e = p68[:, b] - p68[:, a]
    e = e / np.linalg.norm(e, axis=-1, keepdims=True)
    return np.stack([-e[:, 1], e[:, 0]], -1)


def _gaps(p68: np.ndarray, pairs) -> np.ndarray:
    """Mean signed gap (lower point − upper point along :func:`face_down`): crossed lips or lids count as
    negative, so a point scheme whose closed-mouth points overlap cannot read as open."""
    down = face_down(p68)
    return np.mean([np.sum((p68[:, lo] - p68[:, up]) * down, -1) for up, lo in pairs], axis=0)


def mouth_opening(p68: np.ndarray, norm: np.ndarray) -> np.ndarray:
    """Inner-lip gap over the inter-ocular distance ``norm`` (T,) → (T,)."""
    return _gaps(np.asarray(p68, float), MOUTH_GAPS) / norm


def eye_opening(p68: np.ndarray, norm: np.ndarray) -> dict[str, np.ndarray]:
    """Lid gap of each eye over the inter-ocular distance: {"right": (T,), "left": (T,), "mean": (T,)}."""
    p = np.asarray(p68, float)
    out = {side: _gaps(p, pairs) / norm for side, pairs in EYE_GAPS.items()}
    out["mean"] = (out["right"] + out["left"]) / 2
    return out


def _both(a: np.ndarray, b: np.ndarray, valid: np.ndarray | None):
    a, b = np.asarray(a, float), np.asarray(b, float)
    keep = np.isfinite(a) & np.isfinite(b)
    if valid is not None:
        keep &= np.asarray(valid, bool)
    return a[keep], b[keep]


def correlation(a: np.ndarray, b: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Pearson correlation over frames where both are finite (and ``valid``)."""
    x, y = _both(a, b, valid)
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


def amplitude_ratio(signal: np.ndarray, reference: np.ndarray, valid: np.ndarray | None = None) -> float:
    """std(signal) / std(reference) over frames where both are finite: how far the signal moves relative to the
    reference (1 = same amplitude)."""
    x, y = _both(signal, reference, valid)
    if len(x) < 3 or y.std() == 0:
        return float("nan")
    return float(x.std() / y.std())


def mean_ratio(signal: np.ndarray, reference: np.ndarray, valid: np.ndarray | None = None) -> float:
    """mean(signal) / mean(reference) over common frames (e.g. how much wider the eyes are on average)."""
    x, y = _both(signal, reference, valid)
    return float(x.mean() / y.mean()) if len(x) and y.mean() != 0 else float("nan")


def signal_lag(reference: np.ndarray, signal: np.ndarray, valid: np.ndarray | None = None, max_lag: int = 5) -> int:
    """Lag (frames, positive = ``signal`` behind) maximising the correlation of the two mean-removed signals
    (gaps filled with the mean)."""
    r = np.asarray(reference, float).copy()
    s = np.asarray(signal, float).copy()
    bad = ~(np.isfinite(r) & np.isfinite(s))
    if valid is not None:
        bad |= ~np.asarray(valid, bool)
    if (~bad).sum() < 3:
        return 0
    r = np.where(bad, 0.0, r - r[~bad].mean())
    s = np.where(bad, 0.0, s - s[~bad].mean())
    best, best_c = 0, -np.inf
    for lag in range(-max_lag, max_lag + 1):
        c = np.mean(r[: len(r) - lag] * s[lag:]) if lag >= 0 else np.mean(r[-lag:] * s[: len(s) + lag])
        if c > best_c + 1e-15:
            best, best_c = lag, c
    return best


def blink_events(opening: np.ndarray, valid: np.ndarray | None = None, fraction: float = BLINK_FRACTION,
                 merge: int = BLINK_MERGE) -> np.ndarray:
    """Frames of blink events in an eye-opening signal (T,), by the rule in the module docstring."""
    x = np.asarray(opening, float).copy()
    ok = np.isfinite(x) if valid is None else (np.isfinite(x) & np.asarray(valid, bool))
    if ok.sum() < 3:
        return np.zeros(0, int)
    thr = fraction * float(np.median(x[ok]))
    x[~ok] = np.inf
    below = np.flatnonzero(ok & (x < thr))
    events: list[int] = []
    run: list[int] = []
    for t in below:
        if run and t - run[-1] > merge:
            events.append(min(run, key=lambda k: x[k]))
            run = []
        run.append(int(t))
    if run:
        events.append(min(run, key=lambda k: x[k]))
    return np.asarray(events, int)


def blink_recall(reference_events: np.ndarray, events: np.ndarray, tolerance: int = BLINK_TOLERANCE
                 ) -> tuple[int, int]:
    """(reproduced, total): reference events with an event of ``events`` within ``tolerance`` frames."""
    ref = np.asarray(reference_events, int)
    ev = np.asarray(events, int)
    hit = sum(1 for t in ref if ev.size and np.abs(ev - t).min() <= tolerance)
    return int(hit), int(ref.size)

