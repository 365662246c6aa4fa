"""File backend: 2D points a user brings (CSV or .npz), matched to footage frames by frame number.

Accepted files (pixel coordinates follow :mod:`flamecap.contract.conventions`: (0, 0) is the top-left
corner of the top-left pixel, centres at i + 0.5):

- A FlameCap landmarks file (``flamecap landmarks FOOTAGE -o lm.npz``): re-used as is (cache: no
  re-detection).
- A plain ``.npz`` with ``points`` (T, K, 2) px and optionally ``frame_index`` (T,) (default 0..T−1),
  ``sigma`` (T, K) or (K,) px, ``valid`` (T,) bool, ``visible`` (T, K) bool, and a binding ``face_idx``
  (K,) + ``bary`` (K, 3) onto the head model's triangles.
- CSV, wide: one row per frame ``frame,x0,y0,x1,y1,...`` (optional header row; a leading column named
  ``frame``). Empty or NaN cells mark a point as missing.
- CSV, long: header ``frame,point,x,y[,sigma]``, one row per point.
Lines starting with ``#`` are comments. Frames of the footage absent from the file are ``valid=False``.
With K = 478 the points are taken as MediaPipe's scheme (bound with the MediaPipe embedding); with K equal
to the model's vertex count as vertices; otherwise a binding must come in the ``.npz``.
"""
from __future__ import annotations

import csv
import logging
import os
import zipfile
from pathlib import Path
from typing import Iterable

import numpy as np

from ..contract.events import ProgressCallback
from ..errors import InputError
from .base import LANDMARKS_FORMAT, Aligner, LandmarkTrack

log = logging.getLogger(__name__)


def _load_npz(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:  # unreadable / not an npz → one line
        raise InputError(f"{path} is not a readable .npz ({type(exc).__name__}); re-export the points") from None
    if "__meta__" in arrays:
        import json
        meta = json.loads(bytes(arrays["__meta__"].astype(np.uint8)).decode("utf-8"))
        if meta.get("format") == LANDMARKS_FORMAT:
            tr = LandmarkTrack.load(path)
            return {"track": tr}
    if "points" not in arrays:
        raise InputError(f"{path} has no 'points' array (T, K, 2); see 'flamecap landmarks --help' for the format")
    pts = np.asarray(arrays["points"], dtype=np.float64)
    if pts.ndim == 2 and pts.shape[1] == 2:
        pts = pts[None]
    if pts.ndim != 3 or pts.shape[2] != 2:
        raise InputError(f"{path}: 'points' has shape {pts.shape}, expected (T, K, 2) pixels")
    T, K = pts.shape[:2]
    out = {"points": pts, "frame_index": np.asarray(arrays.get("frame_index", np.arange(T)), dtype=np.int64)}
    if out["frame_index"].shape != (T,):
        raise InputError(f"{path}: 'frame_index' must have shape ({T},)")
    if "sigma" in arrays:
        s = np.asarray(arrays["sigma"], dtype=np.float64)
        if s.shape == (K,):
            s = np.broadcast_to(s, (T, K))
        if s.shape != (T, K):
            raise InputError(f"{path}: 'sigma' must have shape ({T}, {K}) or ({K},)")
        out["sigma"] = s
    for key, shape in (("valid", (T,)), ("visible", (T, K))):
        if key in arrays:
            if arrays[key].shape != shape:
                raise InputError(f"{path}: '{key}' must have shape {shape}")
            out[key] = arrays[key].astype(bool)
    if "face_idx" in arrays and "bary" in arrays:
        out["face_idx"] = np.asarray(arrays["face_idx"], dtype=np.int64)
        out["bary"] = np.asarray(arrays["bary"], dtype=np.float64)
        if out["face_idx"].shape != (K,) or out["bary"].shape != (K, 3):
            raise InputError(f"{path}: binding 'face_idx' ({K},) and 'bary' ({K}, 3) have the wrong shapes")
    return out


def _float(cell: str) -> float:
    cell = cell.strip()
    if cell == "" or cell.lower() == "nan":
        return np.nan
    return float(cell)


def _load_csv(path: Path) -> dict:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = [r for r in csv.reader(fh) if r and not r[0].lstrip().startswith("#")]
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read CSV {path} ({type(exc).__name__}); save it as UTF-8 text") from None
    if not rows:
        raise InputError(f"CSV {path} is empty; expected rows 'frame,x0,y0,x1,y1,...'")
    header = [c.strip().lower() for c in rows[0]]
    has_header = not _is_number(rows[0][0])
    body = rows[1:] if has_header else rows
    if not body:
        raise InputError(f"CSV {path} has a header but no data rows")
    try:
        if has_header and "point" in header:   # long format
            ci = {n: header.index(n) for n in ("frame", "point", "x", "y") if n in header}
            if len(ci) != 4:
                raise InputError(f"long-format CSV {path} needs columns frame,point,x,y[,sigma]")
            si = header.index("sigma") if "sigma" in header else None
            recs = [(int(float(r[ci["frame"]])), int(float(r[ci["point"]])), _float(r[ci["x"]]), _float(r[ci["y"]]),
                     _float(r[si]) if si is not None else np.nan) for r in body]
            frames = np.unique([r[0] for r in recs])
            K = max(r[1] for r in recs) + 1
            fpos = {f: i for i, f in enumerate(frames)}
            pts = np.full((len(frames), K, 2), np.nan)
            sig = np.full((len(frames), K), np.nan)
            for f, k, x, y, s in recs:
                if k < 0:
                    raise InputError(f"CSV {path}: negative point index {k}")
                pts[fpos[f], k] = (x, y)
                sig[fpos[f], k] = s
            out = {"points": pts, "frame_index": frames.astype(np.int64)}
            if si is not None:
                out["sigma"] = sig
            return out
        # wide format
        first_is_frame = (has_header and header[0] == "frame") or (not has_header and (len(rows[0]) % 2 == 1))
        ncol = len(body[0])
        if any(len(r) != ncol for r in body):
            raise InputError(f"CSV {path}: rows have different numbers of columns; expected frame,x0,y0,...")
        vals = np.array([[_float(c) for c in r] for r in body], dtype=np.float64)
    except ValueError as exc:
        raise InputError(f"CSV {path} has a non-numeric cell ({exc}); expected frame,x0,y0,x1,y1,...") from None
    if first_is_frame:
        frames, xy = vals[:, 0].astype(np.int64), vals[:, 1:]
    else:
        frames, xy = np.arange(len(vals)), vals
    if xy.shape[1] % 2 or xy.shape[1] == 0:
        raise InputError(f"CSV {path}: {xy.shape[1]} coordinate columns is not x,y pairs")
    return {"points": xy.reshape(len(vals), -1, 2), "frame_index": frames}


def _is_number(s: str) -> bool:
    try:
        float(s)
        return True
    except ValueError:
        return False


class FileAligner(Aligner):
    """Points from a file (see module docstring). ``sigma_px`` is used where the file gives none."""

    name = "file"

    def __init__(self, path: str | os.PathLike, sigma_px: float = 2.0, scheme: str | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"landmark file not found: {self.path}")
        if not sigma_px > 0:
            raise InputError(f"sigma_px must be positive, got {sigma_px}")
        self.sigma_px = float(sigma_px)
        data = _load_csv(self.path) if self.path.suffix.lower() in (".csv", ".txt") else _load_npz(self.path)
        self._data = data
        if "track" in data:
            self.scheme = scheme or data["track"].scheme
        else:
            K = data["points"].shape[1]
            self.scheme = scheme or ("mediapipe478" if K == 478 else "custom")
            if len(np.unique(data["frame_index"])) != len(data["frame_index"]):
                raise InputError(f"{self.path} lists a frame number twice; one row per frame")

    @property
    def n_points(self) -> int:
        return (self._data["track"].n_points if "track" in self._data else int(self._data["points"].shape[1]))

    def track(self, frames: Iterable[tuple[int, float, np.ndarray]], image_size: tuple[int, int], fps: float,
              progress: ProgressCallback | None = None, n_frames: int | None = None) -> LandmarkTrack:
        idx_t = [(int(i), float(t)) for i, t, _ in frames]
        return self.track_indices([i for i, _ in idx_t], [t for _, t in idx_t], image_size, fps)

    def track_indices(self, frame_index, time_s, image_size: tuple[int, int], fps: float) -> LandmarkTrack:
        """Build the track for the given frame numbers/times without decoding any image."""
        fi = np.asarray(frame_index, dtype=np.int64)
        T = len(fi)
        d = self._data
        if "track" in d:
            src = d["track"]
            pts, sig, val, vis = src.points, src.sigma, src.valid, src.visible
            sfi = src.frame_index
        else:
            pts = d["points"]
            Ts, K = pts.shape[:2]
            finite = np.all(np.isfinite(pts), axis=2)
            sig = d.get("sigma", np.full((Ts, K), self.sigma_px))
            sig = np.where(np.isfinite(sig) & (sig > 0), sig, self.sigma_px)
            val = d.get("valid", finite.any(axis=1))
            vis = d.get("visible", finite)
            sfi = d["frame_index"]
        K = pts.shape[1]
        pos = {int(f): i for i, f in enumerate(sfi)}
        rows = np.array([pos.get(int(f), -1) for f in fi], dtype=np.int64)
        have = rows >= 0
        points = np.full((T, K, 2), np.nan, dtype=np.float32)
        sigma = np.full((T, K), np.nan, dtype=np.float32)
        valid = np.zeros(T, dtype=bool)
        visible = np.zeros((T, K), dtype=bool)
        points[have] = pts[rows[have]]
        sigma[have] = sig[rows[have]]
        valid[have] = val[rows[have]]
        visible[have] = vis[rows[have]] & np.all(np.isfinite(points[have]), axis=2)
        points[~valid] = np.nan
        sigma[~valid] = np.nan
        visible[~valid] = False
        if T and not have.all():
            log.warning("%s has no points for %d of %d frames; they are marked invalid", self.path,
                        int((~have).sum()), T)
        if T and not valid.any():
            log.warning("%s matched none of the footage's frames (file frames %s..%s, footage %s..%s)", self.path,
                        int(sfi.min()) if len(sfi) else "-", int(sfi.max()) if len(sfi) else "-",
                        int(fi.min()), int(fi.max()))
        return LandmarkTrack(points=points, sigma=sigma, valid=valid, visible=visible, frame_index=fi,
                             time_s=np.asarray(time_s, dtype=np.float64), image_size=tuple(int(x) for x in image_size),
                             fps=float(fps), scheme=self.scheme,
                             meta={"aligner": self.name, "landmark_file": str(self.path)})

    @property
    def surface_points(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(face_idx (K,), bary (K, 3)) when the point file says where its points lie on the head, else None."""
        d = self._data
        return (d["face_idx"], d["bary"]) if "face_idx" in d else None
