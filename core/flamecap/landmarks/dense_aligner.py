"""Dense aligner backend: the FlowFace-style network (:mod:`flamecap.dense`) → every head vertex in 2D
with a per-vertex σ.

Per frame: a square crop around the face (the same rule the training renders were framed with,
:func:`flamecap.dense.data.crop_box` over the framing vertices), resized to the network's input size,
run in batches; points and σ are mapped back to full-image pixels.

Where the crop comes from: the previous batch's last valid frame's points (a batch shares that crop);
a frame whose own points then call for a noticeably different crop (centre moved > 10 % or size
changed > 15 % of the side) is run again with its own crop. Without previous points (first frame, or
after a lost face) MediaPipe's face detector gives a first box (or, where it finds nothing, the
centred square of the frame), refined by ``refine_passes`` re-crops from the network's own points.
A frame is invalid when the median σ of its framing vertices exceeds ``max_rel_sigma`` × crop side (no
face, or not one the network knows). ``visible`` is "inside the image" (the network has no occlusion
output; occlusion shows as large σ, which the fitter's weighting uses).

σ: the Laplace scale b the network predicts, reported as the per-axis standard deviation √2·b px.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Iterable

import numpy as np

from ..contract.events import ProgressCallback
from ..contract.model_format import FlameModelData
from ..errors import InputError, WeightsError
from .base import Aligner, LandmarkTrack, TrackRows

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS_NAME = "flowface_dense.safetensors"
NO_WEIGHTS = "dense aligner needs trained weights: train with 'flamecap dense train' or pass --weights FILE"


def default_weights_path() -> Path:
    from .. import paths
    return paths.home() / "weights" / DEFAULT_WEIGHTS_NAME


def crop_image(rgb: np.ndarray, box: tuple[float, float, float], size: int) -> tuple[np.ndarray, float, np.ndarray]:
    """Square crop ``box`` = (cx, cy, side) px of ``rgb`` (H, W, 3) resized to size × size (area-filtered
    when shrinking; outside the frame replicates the border). Returns (crop, scale, offset) with
    crop_px = scale · image_px + offset (continuous pixel coordinates)."""
    import cv2

    cx, cy, side = box
    s = size / max(side, 1e-6)
    img = rgb
    pre = 1.0
    if s < 0.5:  # pre-shrink by an integer factor with area filtering to avoid aliasing
        k = int(np.floor(0.5 / s)) * 2 if s < 0.25 else 2
        h, w = rgb.shape[:2]
        img = cv2.resize(rgb, (max(w // k, 1), max(h // k, 1)), interpolation=cv2.INTER_AREA)
        pre = img.shape[1] / w
    s_eff = s / pre
    off = np.array([size / 2 - s * cx, size / 2 - s * cy])
    # continuous → index coordinates: dst_i + .5 = s_eff (src_i + .5) + off
    M = np.array([[s_eff, 0, off[0] + 0.5 * s_eff - 0.5], [0, s_eff, off[1] + 0.5 * s_eff - 0.5]])
    crop = cv2.warpAffine(img, M, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return crop, s, off


class DenseAligner(Aligner):
    """``DenseAligner(weights=None, device="auto", batch_size=8, detector="mediapipe", ...)``.

    ``weights``: a file from ``flamecap dense train|export``; None looks for
    ``$FLAMECAP_HOME/weights/flowface_dense.safetensors``; neither → :class:`WeightsError`.
    ``detector``: "mediapipe" (face detector for the first box) or "full" (the centred square of the frame)."""

    name = "dense"
    scheme = "vertices"

    def __init__(self, weights: str | Path | None = None, device: str | None = "auto", batch_size: int = 8,
                 detector: str = "mediapipe", refine_passes: int = 2, max_rel_sigma: float = 0.08,
                 iters: int | None = None, **_ignored):
        path = Path(weights) if weights else default_weights_path()
        if not weights and not path.is_file():
            raise WeightsError(NO_WEIGHTS)
        if detector not in ("mediapipe", "full"):
            raise InputError(f"dense aligner: unknown detector '{detector}'; use mediapipe or full")
        if batch_size < 1:
            raise InputError("dense aligner: batch size must be >= 1")
        from ..dense.checkpoint import load_checkpoint
        from ..dense.train import resolve_device

        self.device = resolve_device(device or "auto")
        ck = load_checkpoint(path, device=self.device)
        self.weights_path = path
        self.net = ck.net
        self.cfg = ck.config
        self.vertex_uv = ck.vertex_uv
        self.topology_hash = ck.topology_hash
        self.frame_idx = ck.frame_vertices if ck.frame_vertices is not None else np.arange(len(ck.vertex_uv))
        self.margin = float(ck.train_config.get("synth", {}).get("margin", 1.5))
        self.batch_size = int(batch_size)
        self.detector = detector
        self.refine_passes = int(refine_passes)
        self.max_rel_sigma = float(max_rel_sigma)
        self.iters = iters
        self._fd = None
        import torch
        self._uv = torch.as_tensor(self.vertex_uv, device=self.device)

    # -- network on crops ---------------------------------------------------------------------------
    def run_crops(self, frames: list[np.ndarray], boxes: list[tuple[float, float, float]]) -> tuple[np.ndarray, np.ndarray]:
        """Run the network on ``frames`` (RGB uint8) at ``boxes`` → points (N, V, 2), σ (N, V) in image px."""
        import torch

        S = self.cfg.image_size
        crops, scales, offs = [], [], []
        for rgb, box in zip(frames, boxes):
            c, s, o = crop_image(rgb, box, S)
            crops.append(c)
            scales.append(s)
            offs.append(o)
        x = torch.from_numpy(np.stack(crops)).to(self.device).permute(0, 3, 1, 2).float() / 255.0
        with torch.no_grad():
            out = self.net(x, self._uv, iters=self.iters).final
        pts = out.points.double().cpu().numpy()
        sig = out.sigma.double().cpu().numpy()
        sc = np.asarray(scales)[:, None]
        pts = (pts - np.asarray(offs)[:, None, :]) / sc[..., None]
        return pts.astype(np.float32), (sig / sc).astype(np.float32)

    def _box(self, pts: np.ndarray) -> tuple[float, float, float]:
        from ..dense.data import crop_box
        return crop_box(pts[self.frame_idx], self.margin)

    def _detect(self, rgb: np.ndarray) -> tuple[float, float, float]:
        h, w = rgb.shape[:2]
        full = (w / 2, h / 2, float(min(w, h)))
        if self.detector == "full":
            return full
        from . import mp_geometry as G
        if self._fd is None:        # MediaPipe's full-range BlazeFace on LiteRT (the litert aligner's models)
            from .litert_aligner import FaceModels
            self._fd = FaceModels()
        det = self._fd.detect(np.ascontiguousarray(rgb), G.FULL_RANGE, 0.5)
        if not len(det):
            return full
        wh = det.boxes[:, 2:] - det.boxes[:, :2]                  # boxes (D, 4): x0, y0, x1, y1 pixels
        best = int(np.argmax(wh[:, 0] * wh[:, 1]))
        (cx, cy), (bw, bh) = (det.boxes[best, :2] + det.boxes[best, 2:]) / 2, wh[best]
        # the detector's box spans brows to mouth; the face region is ~1.3× that, shifted up a little
        side = max(bw, bh) * 1.3 * self.margin
        return float(cx), float(cy - 0.08 * side), float(side)

    def _valid(self, pts: np.ndarray, sig: np.ndarray, box) -> bool:
        return bool(np.all(np.isfinite(pts)) and np.median(sig[self.frame_idx]) <= self.max_rel_sigma * box[2])

    @staticmethod
    def _drifted(a, b) -> bool:
        return (np.hypot(a[0] - b[0], a[1] - b[1]) > 0.10 * a[2]) or abs(np.log(b[2] / a[2])) > np.log(1.15)

    # -- Aligner ------------------------------------------------------------------------------------
    def track(self, frames: Iterable[tuple[int, float, np.ndarray]], image_size: tuple[int, int], fps: float,
              progress: ProgressCallback | None = None, n_frames: int | None = None) -> LandmarkTrack:
        V = len(self.vertex_uv)
        w, h = (int(x) for x in image_size)
        rows = TrackRows(V, n_frames)
        last_box = None
        t0 = time.monotonic()
        batch: list[tuple[int, float, np.ndarray]] = []

        def flush():
            nonlocal last_box
            if not batch:
                return
            imgs = [b[2] for b in batch]
            if last_box is None:  # start from a detection and refine on the first frame
                box = self._detect(imgs[0])
                for _ in range(max(self.refine_passes, 1)):
                    p, s = self.run_crops(imgs[:1], [box])
                    box = self._box(p[0])
                boxes = [box] * len(imgs)
            else:
                boxes = [last_box] * len(imgs)
            pts, sig = self.run_crops(imgs, boxes)
            own = [self._box(p) for p in pts]
            redo = [i for i in range(len(imgs)) if self._drifted(boxes[i], own[i])]
            if redo:
                p2, s2 = self.run_crops([imgs[i] for i in redo], [own[i] for i in redo])
                for j, i in enumerate(redo):
                    pts[i], sig[i], boxes[i] = p2[j], s2[j], own[i]
            ok = np.array([self._valid(pts[i], sig[i], boxes[i]) for i in range(len(imgs))], dtype=bool)
            pts[~ok], sig[~ok] = np.nan, np.nan
            inside = (pts[..., 0] >= 0) & (pts[..., 0] < w) & (pts[..., 1] >= 0) & (pts[..., 1] < h)
            rows.append(np.array([b[0] for b in batch], np.int64), np.array([b[1] for b in batch], np.float64),
                        pts, sig, ok, inside & ok[:, None])
            last_box = self._box(pts[-1]) if ok[-1] else None
            batch.clear()
            if progress is not None:
                done = rows.n
                frac = done / n_frames if n_frames else 0.0
                progress("landmarks", min(frac, 1.0), f"dense: {done} frames ({done / max(time.monotonic() - t0, 1e-6):.1f} fps)")

        for item in frames:
            batch.append(item)
            if len(batch) >= self.batch_size:
                flush()
        flush()          # the detector's models stay loaded: they hold no per-clip state
        a = rows.arrays()
        T, valid = rows.n, a["valid"]
        log.info("dense aligner: %d frames, %d valid, %.1f s", T, int(valid.sum()), time.monotonic() - t0)
        return LandmarkTrack(points=a["points"], sigma=a["sigma"], valid=valid, visible=a["visible"],
                             frame_index=a["frame_index"], time_s=a["time_s"],
                             image_size=(w, h), fps=float(fps), scheme=self.scheme,
                             meta={"aligner": self.name, "weights": str(self.weights_path),
                                   "encoder": self.cfg.encoder, "topology_hash": self.topology_hash,
                                   "sigma": "per-axis std of a Laplace, sqrt(2)*b, px"})

    def check_model(self, model: FlameModelData) -> None:
        """Refuse a head whose topology differs from the one the weights were trained for (its points are
        that topology's vertices)."""
        V = len(self.vertex_uv)
        if model.n_vertices != V or (self.topology_hash and model.topology != self.topology_hash):
            raise WeightsError(f"dense weights {self.weights_path.name} were trained for another head topology "
                               f"({V} vertices, {self.topology_hash}); this model has {model.n_vertices} "
                               f"vertices ({model.topology}): train weights for it with 'flamecap dense train'")
