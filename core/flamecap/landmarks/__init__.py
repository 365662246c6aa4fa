"""2D alignment backends behind one interface (:class:`Aligner`) and a name registry.

``get_aligner("litert" | "mediapipe" | "file" | "dense", **options)`` returns a backend; backends are imported
lazily so ``import flamecap.landmarks`` stays light. The default, ``litert``, runs MediaPipe's face models on
ai-edge-litert (a base dependency; model files from ``flamecap models fetch-mediapipe``); ``mediapipe`` is the
legacy package, kept as a reference backend in the ``legacy`` extra (Python 3.11 only). ``track_footage(footage, aligner)`` runs one over a
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

# name -> (module, class); the order is the order the CLI lists them in
ALIGNERS: dict[str, tuple[str, str]] = {
    # MediaPipe's face models on ai-edge-litert, FlameCap's own pipeline (no mediapipe package)
    "litert": ("flamecap.landmarks.litert_aligner", "LiteRTAligner"),
    "mediapipe": ("flamecap.landmarks.mediapipe_aligner", "MediaPipeAligner"),
    "dense": ("flamecap.landmarks.dense_aligner", "DenseAligner"),
    "file": ("flamecap.landmarks.file_aligner", "FileAligner"),
}
# litert, not the legacy package: the same points within 0.02 px on the GRID clips (README), wheels for Python
# 3.11-3.13 and numpy 2. No silent switch to another backend when its files are missing: tracking stops with
# the one-line fix, so a result never depends on which packages happen to be installed.
DEFAULT_ALIGNER = "litert"
# the backends that follow one face among several (face_index, max_num_faces)
FACE_ALIGNERS = ("litert", "mediapipe")
# the command line's --aligner help (flamecap track, landmarks, batch)
ALIGNER_HELP = ("litert (default): MediaPipe's face models on ai-edge-litert, files from 'flamecap models "
                "fetch-mediapipe'; mediapipe: the legacy package, a reference ('flamecap[legacy]', Python 3.11); "
                "dense: FlameCap's dense network (--weights); file: points from --points")


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
        from ..optional import missing
        raise missing(str(exc.name).split(".")[0], f"aligner '{key}'") from None
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


__all__ = ["Aligner", "LandmarkTrack", "ALIGNERS", "DEFAULT_ALIGNER", "FACE_ALIGNERS", "ALIGNER_HELP", "get_aligner",
           "track_footage"]
