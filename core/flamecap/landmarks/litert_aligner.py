"""``litert`` backend: FlameCap's own MediaPipe face front end on ``ai-edge-litert``, no ``mediapipe`` package.

The same models as the legacy FaceMesh(refine_landmarks=True) — BlazeFace short range, the 478-point
face landmark model with attention — run on LiteRT (wheels for Python 3.11–3.13), with the pipeline in
FlameCap (:mod:`.mp_geometry`; the landmark model's three MediaPipe custom ops in :mod:`.litert_graph`):

1. Detection (when fewer than ``max_num_faces`` faces are tracked, or on every frame in static mode): the
   frame letterboxed into the 128×128 short-range input, anchors decoded, weighted NMS, best
   ``max_num_faces`` kept. When it finds nothing, the full-range detector (192×192, made for small and
   distant faces) looks once more: MediaPipe's short-range model misses faces that fill little of the
   frame, which FaceMesh never retries.
2. ROI per face: centre of the detection box, rotation from the eye keypoints, square of 1.5 × the long
   side; a face tracked from the previous frame takes the ROI of its landmarks instead (their box,
   rotation from the eye corners 33 → 263, × 1.5), and replaces detections overlapping it.
3. Landmarks: the ROI cropped to 192×192 (cv2.warpAffine, replicated border, [0, 1]), the model's mesh
   refined with its lips, eye and iris outputs (index maps read from the model's own crop ops; iris z = the
   mean z of its eye contour), projected back to pixels. A face whose presence score (sigmoid of the face
   flag) is below ``min_tracking_confidence`` is dropped, so the next frame detects again (re-detection
   on loss).

:class:`LiteRTFaceMesh` has FaceMesh's ``process`` / ``close`` shape, so :class:`LiteRTAligner` is the
``mediapipe`` aligner with this graph underneath: the same face choice, single-face hand-over, invalid
rows and σ model (:mod:`.mp_common`). Model files: ``flamecap models fetch-mediapipe``.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from dataclasses import dataclass

import numpy as np

from . import mp_geometry as G
from .mediapipe_aligner import MediaPipeAligner
from .mp_common import N_POINTS

log = logging.getLogger(__name__)

# LiteRT threads per model. One: the models are small (a 192×192 landmark net), a thread pool's hand-offs cost
# more than they save, and the other core decodes frames (prefetch) — measured on 2 cores with the GRID
# clips: 148 frames/s with 1 thread, 124 with 2, and 2 threads fall further behind when the machine is busy
DEFAULT_THREADS = 1
IRIS_Z_CONTOUR = 16      # the first 16 eye-map points are the eye's lower + upper contour: the iris takes their mean z


@dataclass
class _Refinement:
    """Where the landmark model's refined outputs go in the 478-point list."""
    lips: np.ndarray         # (80,) mesh indices
    left_eye: np.ndarray     # (71,)
    right_eye: np.ndarray    # (71,)


class FaceModels:
    """The three LiteRT models of the front end, loaded once (thread-safe to share read-only: each
    ``LiteRTFaceMesh`` run holds the lock while it uses an interpreter)."""

    def __init__(self, num_threads: int = DEFAULT_THREADS, directory=None):
        """Load the detectors and the landmark model (files checked by :func:`.mp_models.model_file`)."""
        from ai_edge_litert.interpreter import Interpreter
        from . import mp_models as M
        from .litert_graph import SplitModel
        self.lock = threading.Lock()
        self.detectors = {}
        for spec, fname in ((G.SHORT_RANGE, M.SHORT_RANGE), (G.FULL_RANGE, M.FULL_RANGE)):
            it = Interpreter(model_path=str(M.model_file(fname, directory)), num_threads=num_threads)
            it.allocate_tensors()
            inp = it.get_input_details()[0]
            outs = sorted(it.get_output_details(), key=lambda d: -int(d["shape"][-1]))   # boxes (16) first
            self.detectors[spec.name] = (spec, it, inp["index"], outs[0]["index"], outs[1]["index"],
                                         G.ssd_anchors(spec))
        self.landmarks = SplitModel(M.model_file(M.LANDMARKS, directory), num_threads=num_threads)
        subsets = [np.asarray(o["subset_idxs"], np.int64)
                   for o in self.landmarks.custom_options("Landmarks2TransformMatrix")]
        # the crops are made around the very points they refine, in model order lips, left eye, right eye
        self.refinement = _Refinement(*subsets)

    def detect(self, rgb: np.ndarray, spec: G.DetectorSpec, min_score: float) -> G.Detections:
        """One detector on the whole frame → detections in image pixels (after weighted NMS)."""
        import cv2
        spec, it, i_in, i_box, i_score, anchors = self.detectors[spec.name]
        h, w = rgb.shape[:2]
        centre, side = G.letterbox_transform(w, h)
        A = G.rect_crop_matrix(np.array([centre[0], centre[1], side, side, 0.0]), spec.size)
        x = cv2.warpAffine(rgb, A, (spec.size, spec.size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        x = x.astype(np.float32)[None] * np.float32(2.0 / 255.0) - np.float32(1.0)
        with self.lock:
            it.set_tensor(i_in, x)
            it.invoke()
            boxes, scores = it.get_tensor(i_box)[0], it.get_tensor(i_score)[0]
        det = G.decode_detections(boxes, scores, anchors, spec.scale, min_score)
        return G.letterbox_to_image(G.weighted_nms(det), w, h)

    def landmarks_in_rect(self, rgb: np.ndarray, rect: np.ndarray) -> tuple[np.ndarray, float]:
        """The landmark model on one ROI → (478, 3) image pixels (x, y, z·width convention), presence score."""
        import cv2
        S = G.LANDMARK_SIZE
        A = G.rect_crop_matrix(rect, S)
        crop = cv2.warpAffine(rgb, A, (S, S), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REPLICATE)
        x = crop.astype(np.float32)[None] * np.float32(1.0 / 255.0)
        with self.lock:
            out = self.landmarks.run(x)
        score = float(1.0 / (1.0 + np.exp(-np.clip(out["conv_faceflag"].ravel()[0], -100, 100))))
        p = refine_points(out, self.refinement)
        return G.project_points(p[None], np.asarray(rect)[None])[0], score


def refine_points(out: dict[str, np.ndarray], ref: _Refinement) -> np.ndarray:
    """The attention model's outputs (crop pixels) → (478, 3): mesh, its lips and eye points replaced by the
    refined ones (mesh z kept), irises appended with the mean z of their eye's contour."""
    p = np.empty((N_POINTS, 3), np.float64)
    p[:468] = out["output_mesh_identity"].reshape(468, 3)
    p[ref.lips, :2] = out["output_lips"].reshape(-1, 2)
    p[ref.left_eye, :2] = out["output_left_eye"].reshape(-1, 2)
    p[ref.right_eye, :2] = out["output_right_eye"].reshape(-1, 2)
    p[468:473, :2] = out["output_left_iris"].reshape(5, 2)
    p[473:478, :2] = out["output_right_iris"].reshape(5, 2)
    p[468:473, 2] = p[ref.left_eye[:IRIS_Z_CONTOUR], 2].mean()
    p[473:478, 2] = p[ref.right_eye[:IRIS_Z_CONTOUR], 2].mean()
    return p


class LiteRTFaceMesh:
    """FaceMesh's graph (detection gated on the number of tracked faces, ROI from the previous landmarks,
    presence check) on :class:`FaceModels`. ``process(rgb)`` → list of (478, 3) pixel arrays."""

    def __init__(self, models: FaceModels, max_num_faces: int = 1, min_detection_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5, static_image_mode: bool = False,
                 full_range_fallback: bool = True):
        self.models = models
        self.max_num_faces = int(max_num_faces)
        self.min_detection_confidence = float(min_detection_confidence)
        self.min_tracking_confidence = float(min_tracking_confidence)
        self.static_image_mode = bool(static_image_mode)
        self.full_range_fallback = bool(full_range_fallback)
        self.prev_rects = np.zeros((0, 5))
        self.n_full_range = 0       # frames where only the full-range detector found a face

    def detect_rects(self, rgb: np.ndarray) -> np.ndarray:
        """Face ROIs (D, 5) from detection: short range first, full range when it finds nothing."""
        det = self.models.detect(rgb, G.SHORT_RANGE, self.min_detection_confidence)
        if not len(det) and self.full_range_fallback:
            det = self.models.detect(rgb, G.FULL_RANGE, max(self.min_detection_confidence, G.FULL_RANGE.min_score))
            self.n_full_range += int(len(det) > 0)
        n = min(len(det), self.max_num_faces)
        return G.detection_rects(det.boxes[:n], det.keypoints[:n])

    def process(self, rgb: np.ndarray) -> list[np.ndarray]:
        prev = np.zeros((0, 5)) if self.static_image_mode else self.prev_rects
        det = self.detect_rects(rgb) if len(prev) < self.max_num_faces else np.zeros((0, 5))
        faces, rects = [], []
        for rect in G.associate_rects(det, prev):
            pts, score = self.models.landmarks_in_rect(rgb, rect)
            if score < self.min_tracking_confidence:
                continue        # face gone from this ROI: not tracked on, the next frame detects again
            faces.append(pts)
            rects.append(G.landmark_rects(pts[None])[0])
        self.prev_rects = np.array(rects).reshape(-1, 5)
        return faces

    def close(self) -> None:
        self.prev_rects = np.zeros((0, 5))


class LiteRTAligner(MediaPipeAligner):
    """The ``mediapipe`` aligner's behaviour (face choice, hand-over, σ, invalid rows) on the LiteRT front
    end. Extra options: ``num_threads`` (LiteRT threads per model, default 1), ``full_range_fallback``."""

    name = "litert"
    # inference holds one core (one LiteRT thread): the σ blocks run beside it on the other
    post_in_thread = True

    def __init__(self, *args, num_threads: int = DEFAULT_THREADS, full_range_fallback: bool = True,
                 models_dir=None, **kwargs):
        from ..errors import InputError
        if int(num_threads) < 1:
            raise InputError(f"num_threads must be ≥ 1 (got {num_threads})")
        self.num_threads = int(num_threads)
        self.full_range_fallback = bool(full_range_fallback)
        self.models_dir = models_dir
        self._models: FaceModels | None = None
        super().__init__(*args, **kwargs)

    def _check_backend(self) -> None:
        from ..optional import available, missing
        from . import mp_models as M
        if not available("ai_edge_litert"):
            raise missing("ai-edge-litert", "aligner 'litert'")
        for fname in (M.SHORT_RANGE, M.FULL_RANGE, M.LANDMARKS, M.CONNECTIONS):
            M.model_file(fname, self.models_dir)      # missing / altered files fail here, before any frame

    @property
    def models(self) -> FaceModels:
        if self._models is None:
            self._models = FaceModels(self.num_threads, self.models_dir)
        return self._models

    def _facemesh(self, max_num_faces: int):
        return LiteRTFaceMesh(self.models, max_num_faces, self.min_detection_confidence,
                              self.min_tracking_confidence, self.static_image_mode, self.full_range_fallback)

    @staticmethod
    def _faces_px(result, w: int, h: int) -> list[np.ndarray]:
        return list(result)          # LiteRTFaceMesh already returns pixel arrays

    @contextlib.contextmanager
    def static_detector(self):
        fm = LiteRTFaceMesh(self.models, self.max_num_faces, self.min_detection_confidence,
                            self.min_tracking_confidence, static_image_mode=True,
                            full_range_fallback=self.full_range_fallback)

        def detect(rgb: np.ndarray) -> list[np.ndarray]:
            return fm.process(np.ascontiguousarray(rgb))
        yield detect
