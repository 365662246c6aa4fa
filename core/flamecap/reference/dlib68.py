"""dlib's 68-point shape predictor as an independent landmark reference (a different detector and a different
training set from MediaPipe's), with per-clip caching.

Set-up (once, outside the repository; see ``benchmarks/fetch_reference_data.sh``):

    pip install dlib-bin                                   # dlib's Python wheels
    apt-get download libdlib-data && dpkg -x libdlib-data_*.deb deb
    cp deb/usr/share/dlib/shape_predictor_68_face_landmarks.dat REFDATA/

Faces are found with dlib's own HOG frontal-face detector (upsampled once), the detector the predictor was
trained with, so the reference never depends on MediaPipe; frames where it finds no face carry no reference
and are left out of every figure (their number is reported). With several faces, the largest box is used.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..flame.registry import sha256_file

MODEL_FILE = "shape_predictor_68_face_landmarks.dat"
# sha256 of the file in Debian's libdlib-data 19.24+dfsg-1 (dlib's published 68-point model)
MODEL_SHA256 = "fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f"
CACHE_VERSION = 1
SETUP_HINT = ("pip install dlib-bin; apt-get download libdlib-data && dpkg -x libdlib-data_*.deb deb && "
              f"cp deb/usr/share/dlib/{MODEL_FILE} REFDATA/ (benchmarks/fetch_reference_data.sh)")


class ReferenceUnavailable(InputError):
    """dlib or its 68-point model file is missing (the reference bench cannot run)."""


def find_model(refdata: Path, explicit: str | os.PathLike | None = None) -> Path:
    """The checked model file: ``explicit``, else ``REFDATA/shape_predictor_68_face_landmarks.dat``.
    Raises :class:`ReferenceUnavailable` when absent, :class:`InputError` when its sha256 differs."""
    path = Path(explicit) if explicit else Path(refdata) / MODEL_FILE
    if not path.is_file():
        raise ReferenceUnavailable(f"dlib's 68-point model is not at {path}; {SETUP_HINT}")
    digest = sha256_file(path)
    if digest != MODEL_SHA256:
        raise InputError(f"{path} has sha256 {digest[:12]}…, not the libdlib-data 19.24 model "
                         f"({MODEL_SHA256[:12]}…); re-extract it: {SETUP_HINT}")
    return path


def require_dlib():
    try:
        import dlib
    except ImportError:
        raise ReferenceUnavailable(f"dlib is not installed in this Python; {SETUP_HINT}") from None
    return dlib


def detect_clip(video: Path, model_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """dlib 68 points on every frame of ``video``: (T, 68, 2) float px (NaN where no face) and found (T,)."""
    dlib = require_dlib()
    import cv2

    from ..video import open_footage
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(model_path))
    pts, found = [], []
    for _, _, rgb in open_footage(video):
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        boxes = detector(gray, 1)
        if len(boxes) == 0:
            pts.append(np.full((68, 2), np.nan))
            found.append(False)
            continue
        box = max(boxes, key=lambda r: r.width() * r.height())
        s = predictor(gray, box)
        pts.append(np.array([[s.part(k).x, s.part(k).y] for k in range(68)], float))
        found.append(True)
    return np.asarray(pts, float).reshape(-1, 68, 2), np.asarray(found, bool)


def reference_points(video: Path, model_path: Path, cache_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """:func:`detect_clip`, cached in ``cache_dir`` keyed by the clip's and the model's sha256."""
    key = hashlib.sha256(f"{sha256_file(video)}:{MODEL_SHA256}:{CACHE_VERSION}".encode()).hexdigest()[:20]
    path = Path(cache_dir) / f"{video.stem}_{key}.npz"
    if path.is_file():
        with np.load(path) as z:
            return z["points"], z["found"]
    pts, found = detect_clip(video, model_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez(tmp, points=pts, found=found)
    os.replace(tmp, path)
    return pts, found
