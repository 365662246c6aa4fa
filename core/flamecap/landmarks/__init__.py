"""2D alignment backends behind one interface (:class:`Aligner`) and a name registry.

``get_aligner("mediapipe" | "litert" | "file" | "dense", **options)`` returns a backend; backends are imported
lazily so ``import flamecap.landmarks`` stays light. ``track_footage(footage, aligner)`` runs one over a
:class:`flamecap.video.Footage`.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

import numpy as np

from ..contract.events import ProgressCallback
from ..errors import InputError
from .base import Aligner, LandmarkTrack

if TYPE_CHECKING:  # pragma: no cover
    from ..video import Footage

# name -> (module, class)
ALIGNERS: dict[str, tuple[str, str]] = {
    "mediapipe": ("flamecap.landmarks.mediapipe_aligner", "MediaPipeAligner"),
    "file": ("flamecap.landmarks.file_aligner", "FileAligner"),
    "dense": ("flamecap.landmarks.dense_aligner", "DenseAligner"),
    # MediaPipe's face models on ai-edge-litert, FlameCap's own pipeline (no mediapipe package)
    "litert": ("flamecap.landmarks.litert_aligner", "LiteRTAligner"),
}
DEFAULT_ALIGNER = "mediapipe"


def get_aligner(name: str = DEFAULT_ALIGNER, **options) -> Aligner:
    """Instantiate the backend ``name`` with ``options`` (passed to its constructor)."""
    key = (name or DEFAULT_ALIGNER).lower()
    if key not in ALIGNERS:
        raise InputError(f"unknown aligner '{name}'; choose one of {', '.join(ALIGNERS)}")
    mod_name, cls_name = ALIGNERS[key]
    try:
        module = importlib.import_module(mod_name)
    except ModuleNotFoundError as exc:
        if exc.name == mod_name:
            raise InputError(f"aligner '{key}' is not available in this FlameCap build") from None
        raise InputError(f"aligner '{key}' needs the package '{exc.name}'; install it with "
                         f"'pip install {exc.name}'") from None
    return getattr(module, cls_name)(**options)


def track_footage(footage: "Footage", aligner: Aligner | str = DEFAULT_ALIGNER,
                  progress: ProgressCallback | None = None, prefetch: int = 4) -> LandmarkTrack:
    """Run ``aligner`` over every selected frame of ``footage`` (streamed) → :class:`LandmarkTrack` whose
    ``meta`` records the aligner and the footage source (including ``ended_early``). Frames are decoded
    ``prefetch`` ahead in a background thread (0: in the calling thread); the result is the same either way."""
    from ..video import prefetch as _prefetch
    if isinstance(aligner, str):
        aligner = get_aligner(aligner)
    frames = _prefetch(iter(footage), prefetch)
    try:
        track = aligner.track(frames, footage.size, footage.fps, progress=progress, n_frames=footage.n_frames)
    finally:
        frames.close()
    track = with_damaged_rows(track, footage.damaged)
    track.meta.setdefault("aligner", aligner.name)
    track.meta["footage"] = footage.source
    track.meta["footage_fingerprint"] = footage.fingerprint()
    return track


def with_damaged_rows(track: LandmarkTrack, damaged: list[tuple[int, float]]) -> LandmarkTrack:
    """``track`` with an invalid row (NaN points, not valid) for each damaged frame ``(frame_index, time_s)``
    the footage could not decode, in frame order: no frame is dropped and every row keeps its true number."""
    if not damaged:
        return track
    d_idx = np.array([i for i, _ in damaged], dtype=np.int64)
    d_t = np.array([t for _, t in damaged], dtype=np.float64)
    n, K = len(damaged), track.n_points
    idx = np.concatenate([np.asarray(track.frame_index, np.int64), d_idx])
    order = np.argsort(idx, kind="stable")

    def cat(a, fill, shape):
        a = np.asarray(a)
        return np.concatenate([a, np.full((n, *shape), fill, dtype=a.dtype)])[order]
    return LandmarkTrack(points=cat(track.points, np.nan, (K, 2)), sigma=cat(track.sigma, np.nan, (K,)),
                         valid=cat(track.valid, False, ()), visible=cat(track.visible, False, (K,)),
                         frame_index=idx[order], time_s=np.concatenate([np.asarray(track.time_s), d_t])[order],
                         image_size=track.image_size, fps=track.fps, scheme=track.scheme,
                         meta=dict(track.meta, damaged_rows=n))


__all__ = ["Aligner", "LandmarkTrack", "ALIGNERS", "DEFAULT_ALIGNER", "get_aligner",
           "track_footage"]
