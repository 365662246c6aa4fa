"""MediaPipe face pipeline geometry as pure, batched numpy functions (no model, no runtime).

BlazeFace detection (SSD anchors, box/keypoint decoding, weighted non-maximum suppression), the rotated
face ROI (from the detector's eye keypoints or from the previous frame's landmarks), the crop that feeds
the landmark model, and the projection of its output back into the image — written after MediaPipe's
calculators (SsdAnchors, TensorsToDetections, NonMaxSuppression WEIGHTED, DetectionsToRects,
RectTransformation, ImageToTensor, LandmarkProjection) so that the same models give the same points.

Conventions: pixel coordinates with pixel *corners* at integers as MediaPipe uses them (a point x in
[0, W]); a rect is ``(..., 5)`` = ``(x_centre, y_centre, width, height, rotation)`` in pixels and radians,
rotation positive clockwise on screen (y down). Boxes are ``(..., 4)`` = ``(x_min, y_min, x_max, y_max)``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DetectorSpec:
    """One BlazeFace variant: input size, SSD anchor layout and decoding scale (MediaPipe's options)."""
    name: str
    size: int                     # square input, pixels
    strides: tuple[int, ...]      # one per SSD layer
    interpolated_scale: bool      # an extra anchor per layer (short range) or not (full range)
    min_score: float              # default score threshold

    @property
    def scale(self) -> float:
        return float(self.size)


SHORT_RANGE = DetectorSpec("short", 128, (8, 16, 16, 16), True, 0.5)
FULL_RANGE = DetectorSpec("full", 192, (4,), False, 0.6)
NMS_IOU = 0.3                     # MediaPipe's min_suppression_threshold for faces
ROI_SCALE = 1.5                   # face ROI = 1.5 × the (square) face box
LANDMARK_SIZE = 192


def ssd_anchors(spec: DetectorSpec) -> np.ndarray:
    """Anchor centres (A, 2) in [0, 1] (x, y), in the order the model emits its boxes.

    Consecutive layers with the same stride share one feature map; each map location holds one anchor
    per layer (plus one per layer when ``interpolated_scale``). Anchor sizes are fixed (1 × 1), so only
    the centres matter: ((col + 0.5) / fw, (row + 0.5) / fh)."""
    out = []
    strides = list(spec.strides)
    i = 0
    while i < len(strides):
        j = i
        while j < len(strides) and strides[j] == strides[i]:
            j += 1
        per_loc = (j - i) * (2 if spec.interpolated_scale else 1)
        f = int(np.ceil(spec.size / strides[i]))
        yy, xx = np.mgrid[0:f, 0:f]
        c = np.stack([(xx.ravel() + 0.5) / f, (yy.ravel() + 0.5) / f], -1)
        out.append(np.repeat(c, per_loc, axis=0))
        i = j
    return np.concatenate(out).astype(np.float64)


@dataclass
class Detections:
    """Decoded detections of one image: boxes (D, 4), keypoints (D, 6, 2), scores (D,); coordinates in
    the detector's normalised input frame [0, 1] until :func:`letterbox_to_image` maps them to pixels."""
    boxes: np.ndarray
    keypoints: np.ndarray
    scores: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.shape[0])


def decode_detections(raw_boxes: np.ndarray, raw_scores: np.ndarray, anchors: np.ndarray, scale: float,
                      min_score: float) -> Detections:
    """Model output (A, 16) boxes (x, y, w, h + 6 keypoints x, y, relative to the anchor in input pixels)
    and (A,) logits → the detections scoring ≥ ``min_score`` (sigmoid of the logit clipped to ±100)."""
    raw = np.asarray(raw_boxes, np.float64).reshape(anchors.shape[0], -1)
    logit = np.clip(np.asarray(raw_scores, np.float64).reshape(-1), -100.0, 100.0)
    score = 1.0 / (1.0 + np.exp(-logit))
    keep = score >= min_score
    raw, a, score = raw[keep], anchors[keep], score[keep]
    centre = raw[:, 0:2] / scale + a
    half = raw[:, 2:4] / scale / 2
    boxes = np.concatenate([centre - half, centre + half], -1)
    kps = raw[:, 4:16].reshape(-1, 6, 2) / scale + a[:, None, :]
    return Detections(boxes, kps, score)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes a (M, 4) and b (K, 4) → (M, K); 0 where a box is empty."""
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(hi - lo, 0, None), -1)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), -1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), -1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def weighted_nms(det: Detections, iou_threshold: float = NMS_IOU, max_out: int | None = None) -> Detections:
    """MediaPipe's WEIGHTED non-maximum suppression: take the best remaining detection, gather every
    remaining one overlapping it by IoU > ``iou_threshold`` (itself included), output their score-weighted
    mean box and keypoints with the best one's score, drop the group, repeat. Output by descending score."""
    order = np.argsort(-det.scores, kind="stable")
    boxes, kps, scores = det.boxes[order], det.keypoints[order], det.scores[order]
    alive = np.ones(len(scores), bool)
    ob, ok, os_ = [], [], []
    for i in range(len(scores)):
        if not alive[i]:
            continue
        group = alive & (box_iou(boxes[i:i + 1], boxes)[0] > iou_threshold)
        group[i] = True
        w = scores[group][:, None]
        ob.append((boxes[group] * w).sum(0) / w.sum())
        ok.append((kps[group] * w[:, :, None]).sum(0) / w.sum())
        os_.append(scores[i])
        alive &= ~group
        if max_out is not None and len(os_) >= max_out:
            break
    if not os_:
        return Detections(np.zeros((0, 4)), np.zeros((0, 6, 2)), np.zeros(0))
    return Detections(np.stack(ob), np.stack(ok), np.asarray(os_))


def letterbox_transform(width: int, height: int) -> tuple[np.ndarray, float]:
    """The whole image fitted into the square detector input, centred with zero padding: returns the
    image-pixel position of the input's centre (2,) and the side length L in image pixels, so a normalised
    input point t maps to ``centre + (t − 0.5) · L``."""
    side = float(max(width, height))
    return np.array([width / 2.0, height / 2.0]), side


def letterbox_to_image(det: Detections, width: int, height: int) -> Detections:
    """Detections in the normalised detector input → image pixels (undo the letterbox)."""
    c, side = letterbox_transform(width, height)
    return Detections(np.concatenate([c + (det.boxes[:, :2] - 0.5) * side, c + (det.boxes[:, 2:] - 0.5) * side], -1),
                      c + (det.keypoints - 0.5) * side, det.scores)


def normalize_radians(a: np.ndarray) -> np.ndarray:
    """Angles into [−π, π)."""
    return a - 2 * np.pi * np.floor((a + np.pi) / (2 * np.pi))


def rotation_from_points(start: np.ndarray, end: np.ndarray, target: float = 0.0) -> np.ndarray:
    """Rotation (radians, clockwise on screen) that turns the start→end line (pixels, (..., 2)) to the
    angle ``target``: MediaPipe's ``target − atan2(−dy, dx)``."""
    d = np.asarray(end, np.float64) - np.asarray(start, np.float64)
    return normalize_radians(target - np.arctan2(-d[..., 1], d[..., 0]))


def square_scaled_rects(rects: np.ndarray, scale: float = ROI_SCALE) -> np.ndarray:
    """RectTransformation with ``square_long``: each rect becomes a square of its long side × ``scale``."""
    r = np.array(rects, np.float64, copy=True)
    side = np.maximum(r[..., 2], r[..., 3]) * scale
    r[..., 2] = side
    r[..., 3] = side
    return r


def detection_rects(boxes: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """Face ROI (D, 5) from detections in pixels: box centre, rotation from the eye keypoints (0 → 1),
    square of the long side × 1.5."""
    b = np.asarray(boxes, np.float64)
    centre = (b[:, :2] + b[:, 2:]) / 2
    size = b[:, 2:] - b[:, :2]
    rot = rotation_from_points(keypoints[:, 0], keypoints[:, 1])
    return square_scaled_rects(np.concatenate([centre, size, rot[:, None]], -1))


def landmark_rects(points: np.ndarray, start: int = 33, end: int = 263) -> np.ndarray:
    """Tracking ROI (N, 5) from the previous frame's landmarks (N, K, ≥2) px: their axis-aligned box,
    rotation from the eye corners ``start`` → ``end``, square of the long side × 1.5."""
    p = np.asarray(points, np.float64)[..., :2]
    lo, hi = p.min(1), p.max(1)
    rot = rotation_from_points(p[:, start], p[:, end])
    return square_scaled_rects(np.concatenate([(lo + hi) / 2, hi - lo, rot[:, None]], -1))


def rect_crop_matrix(rect: np.ndarray, out_size: int) -> np.ndarray:
    """(2, 3) affine taking crop pixel indices (u, v) to image coordinates: the square crop of
    ``out_size`` pixels spans the rotated rect corner to corner (MediaPipe maps the rect's corner points
    onto the tensor's corners), i.e. image = centre + R(θ) · diag(w, h) · ((u, v) / out_size − 0.5)."""
    xc, yc, w, h, th = (float(v) for v in rect)
    c, s = np.cos(th), np.sin(th)
    lin = np.array([[c * w, -s * h], [s * w, c * h]]) / out_size
    t = np.array([xc, yc]) - lin @ np.array([out_size / 2.0, out_size / 2.0])
    return np.concatenate([lin, t[:, None]], 1)


def project_points(points: np.ndarray, rects: np.ndarray, size: int = LANDMARK_SIZE) -> np.ndarray:
    """Landmark-model output (N, K, 3) in crop pixels (x, y, z; z in the same units as x) → image pixels,
    z scaled like x (MediaPipe's z × width convention, as the aligner's 3D points use)."""
    p = np.asarray(points, np.float64)
    r = np.asarray(rects, np.float64)
    c, s = np.cos(r[:, 4]), np.sin(r[:, 4])
    a = p[..., 0] / size - 0.5
    b = p[..., 1] / size - 0.5
    out = np.empty_like(p)
    out[..., 0] = (c[:, None] * a - s[:, None] * b) * r[:, 2:3] + r[:, 0:1]
    out[..., 1] = (s[:, None] * a + c[:, None] * b) * r[:, 3:4] + r[:, 1:2]
    out[..., 2] = p[..., 2] / size * r[:, 2:3]
    return out


def rect_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of the axis-aligned extents of rects a (M, 5) and b (K, 5), rotation ignored (as MediaPipe's
    AssociationNormRectCalculator compares them) → (M, K)."""
    def box(r):
        r = np.asarray(r, np.float64).reshape(-1, 5)
        return np.concatenate([r[:, :2] - r[:, 2:4] / 2, r[:, :2] + r[:, 2:4] / 2], -1)
    return box_iou(box(a), box(b))


def associate_rects(from_detections: np.ndarray, from_tracking: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """MediaPipe's AssociationNormRect: tracked rects win over detected ones that overlap them by IoU
    > ``threshold``; returns the surviving detection rects followed by the tracked rects, (R, 5)."""
    det = np.asarray(from_detections, np.float64).reshape(-1, 5)
    trk = np.asarray(from_tracking, np.float64).reshape(-1, 5)
    if len(det) and len(trk):
        det = det[~(rect_iou(det, trk) > threshold).any(1)]
    return np.concatenate([det, trk])
