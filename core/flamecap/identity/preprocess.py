"""MICA / ArcFace input preparation: five facial points → similarity alignment to the ArcFace 112×112
template → RGB in [-1, 1].

Five points, in image order (as insightface's detectors give them): eye in the left half of the image (the
subject's right eye), eye in the right half, nose tip, mouth corner on the image left, mouth corner on the
image right. Taken from MediaPipe FaceMesh: iris centres 468 / 473 (or eye-corner means 33+133 / 362+263 on
468-point meshes), nose tip 1, mouth corners 61 / 291.

Coordinates: inputs use FlameCap's pixel convention (:mod:`flamecap.contract.conventions`: (0, 0) is the
top-left *corner*, pixel centres at i + 0.5). The ArcFace template and the warped crop use OpenCV's
index convention (pixel centres at integers), as insightface does; the conversion is a 0.5 px shift.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..errors import InputError, NoFaceError

log = logging.getLogger(__name__)

#: insightface ``arcface_dst``: the five points' positions in the 112×112 ArcFace crop (OpenCV index px).
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963],
                             [73.5318, 51.5014],
                             [56.0252, 71.7366],
                             [41.5493, 92.3655],
                             [70.7299, 92.2041]], dtype=np.float64)
ARCFACE_SIZE = 112

#: MediaPipe FaceMesh indices for the five points (478-point mesh with iris).
MP_IRIS_CENTRES = (468, 473)
MP_EYE_CORNERS = ((33, 133), (362, 263))  # fallback for 468-point meshes: image-left eye, image-right eye
MP_NOSE_TIP = 1
MP_MOUTH_CORNERS = (61, 291)


@dataclass
class AlignedFace:
    """A face warped to the ArcFace template.

    image (S, S, 3) uint8 RGB; matrix (2, 3) maps source OpenCV-index px → crop px; residual_px the RMS
    distance (crop px) between the transformed five points and the template (how non-similar the face's
    point layout is; large values mean a bad detection or an extreme pose)."""

    image: np.ndarray
    matrix: np.ndarray
    residual_px: float


def five_points_from_mediapipe(landmarks: np.ndarray) -> np.ndarray:
    """MediaPipe FaceMesh points (..., 478 or 468, 2+) px → the five ArcFace points (..., 5, 2) px."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.ndim < 2 or lm.shape[-2] not in (468, 478) or lm.shape[-1] < 2:
        raise InputError(f"expected MediaPipe FaceMesh landmarks (..., 468 or 478, 2), got shape {lm.shape}")
    lm = lm[..., :2]
    if lm.shape[-2] == 478:
        eyes = lm[..., list(MP_IRIS_CENTRES), :]
    else:
        eyes = np.stack([lm[..., list(c), :].mean(axis=-2) for c in MP_EYE_CORNERS], axis=-2)
    nose = lm[..., [MP_NOSE_TIP], :]
    mouth = lm[..., list(MP_MOUTH_CORNERS), :]
    return np.concatenate([eyes, nose, mouth], axis=-2)


def umeyama_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation; no reflection) with dst ≈ M·[src; 1].

    src, dst (N, 2) with N ≥ 2 → M (2, 3). Umeyama (1991), closed form."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 2:
        raise InputError(f"similarity needs two (N, 2) point sets with N >= 2, got {src.shape} and {dst.shape}")
    if not (np.all(np.isfinite(src)) and np.all(np.isfinite(dst))):
        raise InputError("similarity: points contain NaN or infinite values")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    var_s = (s ** 2).sum() / len(src)
    if var_s < 1e-12:
        raise InputError("similarity: the source points all coincide")
    cov = d.T @ s / len(src)
    U, S, Vt = np.linalg.svd(cov)
    D = np.eye(2)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[1, 1] = -1.0
    R = U @ D @ Vt
    scale = np.trace(np.diag(S) @ D) / var_s
    M = np.zeros((2, 3))
    M[:, :2] = scale * R
    M[:, 2] = mu_d - scale * R @ mu_s
    return M


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(2, 3) affine applied to (..., 2) points."""
    p = np.asarray(points, dtype=np.float64)
    return p @ matrix[:, :2].T + matrix[:, 2]


def alignment_matrix(five_points: np.ndarray, size: int = ARCFACE_SIZE) -> np.ndarray:
    """Five points (5, 2) in FlameCap px → (2, 3) matrix mapping OpenCV-index source px to the ArcFace crop
    of side ``size`` (the template scales with ``size / 112``)."""
    pts = np.asarray(five_points, dtype=np.float64).reshape(5, 2) - 0.5   # corner → index convention
    return umeyama_similarity(pts, ARCFACE_TEMPLATE * (size / ARCFACE_SIZE))


def align_face(image: np.ndarray, five_points: np.ndarray, size: int = ARCFACE_SIZE) -> AlignedFace:
    """Warp an RGB image (H, W, 3) uint8 so the five points (5, 2, FlameCap px) land on the ArcFace template.

    Returns :class:`AlignedFace` with a (size, size, 3) uint8 crop (bilinear, black border)."""
    import cv2

    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise InputError(f"expected an RGB image (H, W, 3), got shape {img.shape}")
    M = alignment_matrix(five_points, size)
    crop = cv2.warpAffine(np.ascontiguousarray(img), M, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    pts = np.asarray(five_points, dtype=np.float64).reshape(5, 2) - 0.5
    res = apply_affine(M, pts) - ARCFACE_TEMPLATE * (size / ARCFACE_SIZE)
    return AlignedFace(image=crop, matrix=M, residual_px=float(np.sqrt((res ** 2).sum(1).mean())))


def to_arcface_input(crops: np.ndarray) -> np.ndarray:
    """Aligned RGB crops (B, S, S, 3) or (S, S, 3) uint8 → (B, 3, S, S) float32 in [-1, 1]: (x/255 − 0.5)/0.5."""
    x = np.asarray(crops)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[-1] != 3:
        raise InputError(f"expected RGB crops (B, S, S, 3), got shape {x.shape}")
    x = (x.astype(np.float32) / 255.0 - 0.5) / 0.5
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def frontality(five_points: np.ndarray) -> np.ndarray:
    """How frontal a face looks from its five points, in [0, 1] (1 = nose centred between the eyes and
    between the mouth corners, i.e. no yaw). (..., 5, 2) → (...,).

    Measures, along the eye axis, how far the nose tip sits from the midpoint of the eyes and of the mouth
    corners relative to their half-spans; roll does not matter (alignment removes it)."""
    p = np.asarray(five_points, dtype=np.float64)
    eye_l, eye_r, nose, m_l, m_r = (p[..., i, :] for i in range(5))
    axis = eye_r - eye_l
    span = np.linalg.norm(axis, axis=-1, keepdims=True)
    axis = axis / np.maximum(span, 1e-9)

    def offset(a, b):
        mid = 0.5 * (a + b)
        half = 0.5 * np.abs(((b - a) * axis).sum(-1))
        return np.abs(((nose - mid) * axis).sum(-1)) / np.maximum(half, 1e-9)

    asym = 0.5 * (offset(eye_l, eye_r) + offset(m_l, m_r))
    score = np.clip(1.0 - asym, 0.0, 1.0)
    return np.where(span[..., 0] > 1e-6, score, 0.0)


def sharpness(image: np.ndarray, region: tuple[int, int, int, int] | None = None) -> float:
    """Variance of the Laplacian of the grey image (higher = sharper); ``region`` (x0, y0, x1, y1) px."""
    import cv2

    img = np.asarray(image)
    if region is not None:
        x0, y0, x1, y1 = (int(round(v)) for v in region)
        h, w = img.shape[:2]
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 - x0 >= 3 and y1 - y0 >= 3:
            img = img[y0:y1, x0:x1]
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img
    return float(cv2.Laplacian(grey.astype(np.float64), cv2.CV_64F).var())


class FivePointDetector:
    """MediaPipe's face mesh (the default aligner's static-image detector, refined iris) → five ArcFace points.
    Use as a context manager or call :meth:`close`. ``detect(rgb)`` returns (5, 2) FlameCap px, or ``None``
    when no face is found."""

    def __init__(self, min_confidence: float = 0.5):
        import contextlib

        from ..landmarks import DEFAULT_ALIGNER, get_aligner
        aligner = get_aligner(DEFAULT_ALIGNER, max_num_faces=1, min_detection_confidence=min_confidence)
        self._stack = contextlib.ExitStack()
        self._detect = self._stack.enter_context(aligner.static_detector())

    def detect(self, image: np.ndarray) -> np.ndarray | None:
        img = np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
        if img.ndim != 3 or img.shape[2] != 3:
            raise InputError(f"expected an RGB image (H, W, 3), got shape {img.shape}")
        faces = self._detect(img)
        if not faces:
            return None
        return five_points_from_mediapipe(np.asarray(faces[0], dtype=np.float64)[:, :2])

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> "FivePointDetector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def prepare_image(image: np.ndarray, detector: FivePointDetector | None = None,
                  where: str = "image") -> tuple[np.ndarray, np.ndarray, AlignedFace]:
    """Detect, align and normalise one RGB image: → (input (1, 3, 112, 112) float32, five points (5, 2),
    :class:`AlignedFace`). Raises :class:`NoFaceError` when no face is found."""
    own = detector is None
    det = detector or FivePointDetector()
    try:
        pts = det.detect(image)
    finally:
        if own:
            det.close()
    if pts is None:
        raise NoFaceError(f"no face found in {where}; use a well-lit, roughly frontal photo of one face")
    aligned = align_face(image, pts)
    return to_arcface_input(aligned.image), pts, aligned
