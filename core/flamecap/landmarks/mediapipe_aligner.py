"""MediaPipe FaceMesh backend: 478 points per frame (468 mesh points + 2×5 iris points), on the legacy
``mediapipe==0.10.21`` package (the ``legacy`` extra, Python 3.11 only: the reference the parity tests compare
the default ``litert`` backend with, which inherits everything here but the graph).

Tracking: ``mediapipe.solutions.face_mesh.FaceMesh(static_image_mode=False, refine_landmarks=True)``
tracks from frame to frame and re-runs its detector by itself whenever tracking confidence drops, so a
face lost for a while is picked up again. Frames without a face are kept as ``valid=False`` rows (NaN
points, NaN σ, ``visible=False``); nothing is dropped and no frame raises.

Several faces: ``max_num_faces`` (default 3) are detected; one is followed. It is chosen on the first frame
with faces as the largest (bounding-box area) or, with ``face_index=i``, the i-th from the left; after that,
on every frame the face whose centroid is nearest to the followed face's last centroid is taken, if it lies
within ``max_jump`` × face size; otherwise the frame is invalid (the followed face is not there). After
``reacquire_s`` seconds without the followed face the initial rule is used again. A face that is found
alone in view is tracked by a single-face graph (same landmarks, no per-frame face detection: 25 % faster)
until it is lost; then a multi-face graph looks at the whole frame again, so faces that entered the view
meanwhile take part from there (``frames_with_several_faces`` counts the frames several faces were seen in).

σ per point and visibility: see :mod:`flamecap.landmarks.mp_common` (shared with the ``litert`` backend).
"""
from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable

import numpy as np

from ..contract.events import ProgressCallback
from .base import Aligner, LandmarkTrack, TrackRows
from .mp_common import (N_POINTS, POST_BLOCK, REGION_BASE, SIGMA_MIN_PX, _rows_to_arrays, _tables,
                        point_normals_cos, sigma_and_visibility)

log = logging.getLogger(__name__)

# the σ model moved to mp_common (both MediaPipe backends use it); these names stay importable from here
__all__ = ["MediaPipeAligner", "N_POINTS", "POST_BLOCK", "REGION_BASE", "SIGMA_MIN_PX", "_rows_to_arrays", "_tables",
           "point_normals_cos", "sigma_and_visibility"]


class _Graphs:
    """The FaceMesh graphs of one tracking run. With ``max_num_faces`` > 1 MediaPipe runs its face detector on
    every frame (looking for faces it is not tracking yet): 1.3 ms of the 5 ms a frame costs. So when the
    multi-face graph finds the followed face by detection (nothing was tracked on the frame before) and it
    is the only face, a fresh single-face graph processes that frame again and tracks from there: the same
    detection, hence the same landmarks, with no detector on the following frames. When it loses the face,
    a fresh multi-face graph processes the frame again (graphs are made fresh on each switch: a graph's
    tracking state is stale after a pause)."""

    def __init__(self, make, max_num_faces: int, may_switch: bool = True):
        self.make, self.max_num_faces = make, max_num_faces
        self.may_switch = may_switch and max_num_faces > 1
        self.single = False   # True while the single-face graph stands in for the multi-face one
        self.graph = make(max_num_faces)
        self.n_single = 0

    def process(self, image: np.ndarray):
        return self.graph.process(image)

    def switch(self, single: bool) -> None:
        self.graph.close()
        self.graph = self.make(1 if single else self.max_num_faces)
        self.single = single
        self.n_single += int(single)

    def close(self) -> None:
        self.graph.close()


class MediaPipeAligner(Aligner):
    """MediaPipe FaceMesh (refine) tracker → 478-point :class:`LandmarkTrack` (see module docstring)."""

    name = "mediapipe"
    scheme = "mediapipe478"
    # σ blocks in a worker thread while detection goes on (numpy's eigh releases the GIL); off here, where
    # MediaPipe's own graph threads already keep the cores busy
    post_in_thread = False

    def __init__(self, face_index: int | None = None, max_num_faces: int = 3, min_detection_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5, static_image_mode: bool = False, max_jump: float = 1.0,
                 reacquire_s: float = 2.0):
        self.face_index = face_index
        self.max_num_faces = max(int(max_num_faces), 1 if face_index is None else int(face_index) + 1)
        self.min_detection_confidence = float(min_detection_confidence)
        self.min_tracking_confidence = float(min_tracking_confidence)
        self.static_image_mode = bool(static_image_mode)
        self.max_jump = float(max_jump)
        self.reacquire_s = float(reacquire_s)
        self._check_backend()

    def _check_backend(self) -> None:
        """Fail here, before any frame, when the backend cannot run (the legacy package is an extra)."""
        from ..optional import available, missing
        if not available("mediapipe"):
            raise missing("mediapipe", "aligner 'mediapipe' (use the default 'litert': the same face models)")

    def _facemesh(self, max_num_faces: int):
        from mediapipe.python.solutions import face_mesh
        return face_mesh.FaceMesh(static_image_mode=self.static_image_mode, refine_landmarks=True,
                                  max_num_faces=max_num_faces,
                                  min_detection_confidence=self.min_detection_confidence,
                                  min_tracking_confidence=self.min_tracking_confidence)

    @staticmethod
    def _faces_px(result, w: int, h: int) -> list[np.ndarray]:
        faces = []
        for lm in (result.multi_face_landmarks or []):
            a = np.array([(q.x, q.y, q.z) for q in lm.landmark], dtype=np.float64)
            if a.shape[0] != N_POINTS:
                continue
            faces.append(a * np.array([w, h, w]))  # normalised → pixels (centres at i + 0.5 per MediaPipe)
        return faces

    @contextlib.contextmanager
    def static_detector(self):
        """A reusable static-image detector: yields ``detect(rgb) → list of (478, 3) pixel arrays``."""
        from mediapipe.python.solutions import face_mesh
        with face_mesh.FaceMesh(static_image_mode=True, refine_landmarks=True, max_num_faces=self.max_num_faces,
                                min_detection_confidence=self.min_detection_confidence) as fm:
            def detect(rgb: np.ndarray) -> list[np.ndarray]:
                h, w = rgb.shape[:2]
                return self._faces_px(fm.process(np.ascontiguousarray(rgb)), w, h)
            yield detect

    def _initial_choice(self, faces: list[np.ndarray]) -> int | None:
        if self.face_index is None:
            areas = [np.prod(f[:, :2].max(0) - f[:, :2].min(0)) for f in faces]
            return int(np.argmax(areas))
        order = np.argsort([f[:, 0].mean() for f in faces])
        return int(order[self.face_index]) if self.face_index < len(faces) else None

    def detect_frames(self, frames: Iterable[tuple[int, float, np.ndarray]], image_size: tuple[int, int],
                      progress: ProgressCallback | None = None, n_frames: int | None = None):
        """Run FaceMesh; returns lists (frame_index, time_s, points3 (478, 3) px or None, n_faces)."""
        return list(self.iter_detect(frames, image_size, progress, n_frames))

    def iter_detect(self, frames: Iterable[tuple[int, float, np.ndarray]], image_size: tuple[int, int],
                    progress: ProgressCallback | None = None, n_frames: int | None = None):
        """Streaming :meth:`detect_frames`: yields (frame_index, time_s, points3 (478, 3) px or None, n_faces)
        per frame as soon as it is detected."""
        w, h = int(image_size[0]), int(image_size[1])
        n_out = 0
        last_c, last_t, size = None, -np.inf, None
        t0 = time.monotonic()
        graphs = _Graphs(self._facemesh, self.max_num_faces, may_switch=not self.static_image_mode)
        tracked = False   # did the multi-face graph see a face on the previous frame? (never while single)
        try:
            for k, (idx, ts, rgb) in enumerate(frames):
                if rgb.shape[:2] != (h, w):
                    from ..errors import FootageError
                    raise FootageError(f"frame {idx} is {rgb.shape[1]}x{rgb.shape[0]}, expected {w}x{h}")
                image = np.ascontiguousarray(rgb)
                faces = self._faces_px(graphs.process(image), w, h)
                chosen = self._follow(faces, last_c, last_t, ts, size)
                if graphs.single and chosen is None:      # lost: the whole frame again, all faces
                    graphs.switch(single=False)
                    faces = self._faces_px(graphs.process(image), w, h)
                    chosen = self._follow(faces, last_c, last_t, ts, size)
                if (not graphs.single and graphs.may_switch and not tracked and chosen is not None
                        and len(faces) == 1):             # found alone by detection: track it on its own
                    graphs.switch(single=True)
                    alone = self._faces_px(graphs.process(image), w, h)
                    j = self._follow(alone, last_c, last_t, ts, size) if alone else None
                    if j is None:                          # not reproduced (never seen): stay with all faces
                        graphs.switch(single=False)
                        graphs.process(image)
                    else:
                        faces, chosen = alone, j
                tracked = bool(faces) and not graphs.single
                if chosen is not None:
                    f = faces[chosen]
                    last_c, last_t = f[:, :2].mean(0), ts
                    size = float(np.linalg.norm(f[:, :2].max(0) - f[:, :2].min(0)))
                    yield idx, ts, f, len(faces)
                else:
                    yield idx, ts, None, len(faces)
                n_out += 1
                if progress is not None and (k % 10 == 0):
                    frac = (k + 1) / n_frames if n_frames else 0.0
                    progress("landmarks", min(frac, 1.0), f"frame {k + 1}/{n_frames or '?'}")
        finally:
            graphs.close()
        log.debug("mediapipe: %d frames in %.2f s (%d hand-overs to single-face tracking)", n_out,
                  time.monotonic() - t0, graphs.n_single)

    def _follow(self, faces: list[np.ndarray], last_c, last_t: float, ts: float, size) -> int | None:
        """Index of the followed face among ``faces`` (nearest to its last centroid within max_jump × its
        size), or by the initial rule after ``reacquire_s`` without it; None when it is not there."""
        if not faces:
            return None
        if last_c is not None and ts - last_t <= self.reacquire_s:
            d = [np.linalg.norm(f[:, :2].mean(0) - last_c) for f in faces]
            j = int(np.argmin(d))
            return j if d[j] <= self.max_jump * size else None
        return self._initial_choice(faces)

    def track(self, frames: Iterable[tuple[int, float, np.ndarray]], image_size: tuple[int, int], fps: float,
              progress: ProgressCallback | None = None, n_frames: int | None = None) -> LandmarkTrack:
        rows = TrackRows(N_POINTS, n_frames)
        blocks: deque = deque()
        pending: list[tuple] = []
        n_multi = 0
        pool = ThreadPoolExecutor(1, thread_name_prefix="flamecap-sigma") if self.post_in_thread else None

        def flush():
            # σ / visibility per block of frames: flat memory (no (T, E, 3, 3) temporaries), cache-sized
            # (3x faster than one call over a long clip); per-frame maths, so blocking does not change values
            if pending:
                batch = list(pending)
                pending.clear()
                blocks.append(pool.submit(_rows_to_arrays, batch) if pool is not None else _rows_to_arrays(batch))

        def drain(keep: int):
            # blocks land in the one preallocated track in order; at most ``keep`` stay in flight
            while len(blocks) > keep:
                b = blocks.popleft()
                rows.append(*(b.result() if pool is not None else b))

        try:
            for row in self.iter_detect(frames, image_size, progress, n_frames):
                pending.append(row)
                n_multi += row[3] > 1
                if len(pending) >= POST_BLOCK:
                    flush()
                    drain(2)
            flush()
            drain(0)
        finally:
            if pool is not None:
                pool.shutdown(wait=True)
        a = rows.arrays()
        idx, ts, points, sigma, valid, visible = (a[k] for k in TrackRows.FIELDS)
        T = int(valid.size)
        if T and not valid.any():
            log.warning("no face found in any of the %d frames; check the footage shows a face", T)
        elif T and not valid.all():
            log.warning("no face in %d of %d frames; those frames are marked invalid", int((~valid).sum()), T)
        if progress is not None:
            progress("landmarks", 1.0, f"{int(valid.sum())}/{T} frames with a face")
        return LandmarkTrack(points=points, sigma=sigma, valid=valid, visible=visible,
                             frame_index=idx, time_s=ts,
                             image_size=(int(image_size[0]), int(image_size[1])), fps=float(fps),
                             scheme=self.scheme,
                             meta={"aligner": self.name, "face_index": self.face_index,
                                   "frames_with_several_faces": int(n_multi), "sigma_model": "region×size/cos",
                                   "valid_frames": int(valid.sum())})

    def detect_image(self, rgb: np.ndarray) -> list[np.ndarray]:
        """Static detection on one image → list of (478, 3) pixel arrays (x, y, z·width), one per face."""
        with self.static_detector() as detect:
            return detect(rgb)
