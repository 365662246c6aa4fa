"""Accuracy metrics (numpy only): SSME (FlowFace), reprojection NME, jitter, lag, 3D vertex, rotation and
focal errors. All pure functions over batched arrays; invalid / invisible entries are excluded."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .contract.conventions import axis_angle_to_matrix

# Frame gaps for SSME (FlowFace evaluates screen-space motion over several gaps; we use powers of two).
SSME_GAPS = (1, 2, 4, 8, 16, 32)
# MediaPipe FaceMesh outer eye corners (subject's right, left) for inter-ocular normalisation.
MP_OUTER_EYE_CORNERS = (33, 263)


@dataclass
class SSMEResult:
    per_gap: dict[int, float] = field(default_factory=dict)  # gap (frames) -> mean endpoint error (px)
    mean: float = float("nan")                               # mean over the gaps that fit in the clip


def ssme(gt_2d: np.ndarray, pred_2d: np.ndarray, visible: np.ndarray | None = None,
         gaps: tuple[int, ...] = SSME_GAPS, vertex_mask: np.ndarray | None = None) -> SSMEResult:
    """Screen-space motion error: for each gap g, the mean over frames t and vertices visible at t and t+g of
    ``|| (gt[t+g] − gt[t]) − (pred[t+g] − pred[t]) ||``, in pixels.

    gt_2d, pred_2d (T, V, 2) px; visible (T, V) bool (ground-truth visibility); vertex_mask (V,) bool selects the
    face region. Gaps not shorter than the clip are skipped."""
    gt = np.asarray(gt_2d, dtype=np.float64)
    pr = np.asarray(pred_2d, dtype=np.float64)
    T, V = gt.shape[:2]
    vis = np.ones((T, V), bool) if visible is None else np.asarray(visible, bool)
    if vertex_mask is not None:
        vis = vis & np.asarray(vertex_mask, bool)[None]
    vis = vis & np.isfinite(gt).all(-1) & np.isfinite(pr).all(-1)
    out = SSMEResult()
    for g in gaps:
        if g >= T:
            continue
        m = vis[g:] & vis[:-g]
        if not m.any():
            continue
        d = (gt[g:] - gt[:-g]) - (pr[g:] - pr[:-g])
        out.per_gap[int(g)] = float(np.linalg.norm(d, axis=-1)[m].mean())
    if out.per_gap:
        out.mean = float(np.mean(list(out.per_gap.values())))
    return out


def inter_ocular_distance(points_mp: np.ndarray) -> np.ndarray:
    """Per-frame distance between MediaPipe's outer eye corners; points (T, 478, 2) → (T,) px."""
    a, b = MP_OUTER_EYE_CORNERS
    return np.linalg.norm(points_mp[:, a] - points_mp[:, b], axis=-1)


def reprojection_nme(pred_2d: np.ndarray, observed_2d: np.ndarray, normaliser: np.ndarray,
                     valid: np.ndarray | None = None) -> float:
    """Mean point distance divided by a per-frame normaliser (e.g. inter-ocular distance), as a fraction.
    pred_2d, observed_2d (T, K, 2); normaliser (T,); valid (T,) bool."""
    d = np.linalg.norm(np.asarray(pred_2d) - np.asarray(observed_2d), axis=-1)  # (T, K)
    per_frame = np.nanmean(d, axis=1) / np.asarray(normaliser)
    keep = np.isfinite(per_frame)
    if valid is not None:
        keep &= np.asarray(valid, bool)
    return float(per_frame[keep].mean()) if keep.any() else float("nan")


def jitter(points: np.ndarray, valid: np.ndarray | None = None) -> float:
    """Mean magnitude of the second temporal difference ``|x[t+1] − 2x[t] + x[t−1]|`` (px/frame²) over triples of
    consecutive valid frames. points (T, K, 2)."""
    p = np.asarray(points, dtype=np.float64)
    if p.shape[0] < 3:
        return float("nan")
    ok = np.ones(p.shape[0], bool) if valid is None else np.asarray(valid, bool)
    trip = ok[2:] & ok[1:-1] & ok[:-2]
    acc = np.linalg.norm(p[2:] - 2 * p[1:-1] + p[:-2], axis=-1)  # (T-2, K)
    acc = acc[trip]
    return float(np.nanmean(acc)) if acc.size else float("nan")


def lag_frames(reference: np.ndarray, signal: np.ndarray, max_lag: int = 5) -> int:
    """Integer lag (frames) of ``signal`` behind ``reference`` maximising their correlation; both (T, ...) are
    flattened per frame and their temporal derivatives compared (positive = signal lags)."""
    r = np.diff(np.asarray(reference, dtype=np.float64).reshape(len(reference), -1), axis=0)
    s = np.diff(np.asarray(signal, dtype=np.float64).reshape(len(signal), -1), axis=0)
    r = np.nan_to_num(r - np.nanmean(r, 0))
    s = np.nan_to_num(s - np.nanmean(s, 0))
    best, best_c = 0, -np.inf
    for lag in range(-max_lag, max_lag + 1):
        if lag >= 0:
            c = np.mean(r[: len(r) - lag] * s[lag:])
        else:
            c = np.mean(r[-lag:] * s[: len(s) + lag])
        if c > best_c:
            best, best_c = lag, c
    return best


def vertex_error_mm(pred: np.ndarray, gt: np.ndarray, vertex_mask: np.ndarray | None = None,
                    valid: np.ndarray | None = None) -> float:
    """Mean Euclidean 3D vertex error in millimetres, no alignment. pred, gt (T, V, 3) metres."""
    d = np.linalg.norm(np.asarray(pred) - np.asarray(gt), axis=-1) * 1000.0
    if vertex_mask is not None:
        d = d[:, np.asarray(vertex_mask, bool)]
    if valid is not None:
        d = d[np.asarray(valid, bool)]
    return float(d.mean())


def rotation_error_deg(pred_rotvec: np.ndarray, gt_rotvec: np.ndarray) -> np.ndarray:
    """Geodesic angle between axis-angle rotations, degrees. (..., 3) → (...)."""
    Rp = axis_angle_to_matrix(pred_rotvec)
    Rg = axis_angle_to_matrix(gt_rotvec)
    rel = np.swapaxes(Rp, -1, -2) @ Rg
    cos = np.clip((np.trace(rel, axis1=-2, axis2=-1) - 1.0) / 2.0, -1.0, 1.0)
    return np.degrees(np.arccos(cos))


def focal_error_rel(pred_focal: float, gt_focal: float) -> float:
    """Relative focal error |f − f*| / f*."""
    return float(abs(pred_focal - gt_focal) / gt_focal)
