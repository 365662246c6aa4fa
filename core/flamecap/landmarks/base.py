"""The aligner interface every 2D alignment backend implements, and its data types.

A backend turns frames into a :class:`LandmarkTrack` (points in pixels, per-point σ in pixels, per-frame
validity); how its point scheme lands on a head is :mod:`flamecap.binding`'s business. Pixel
coordinates follow :mod:`flamecap.contract.conventions`.
"""
from __future__ import annotations

import abc
import mmap
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..contract.events import ProgressCallback
from ..contract.npzio import read_npz, write_npz_atomic
from ..errors import FlameCapError, InputError
from ..paths import cache_dir

LANDMARKS_FORMAT = "flamecap.landmarks"
LANDMARKS_VERSION = 1


@dataclass
class LandmarkTrack:
    """Per-frame 2D points of one face.

    points (T, K, 2) float32 px; sigma (T, K) float16 px (> 0; NaN where unknown; a weight, so three
    significant digits are plenty and an hour of 478 points saves 86 MB); valid (T,) bool (a face
    was found; invalid rows hold NaN points); visible (T, K) bool (per point, e.g. self-occluded points
    are False); frame_index (T,) source frame numbers; time_s (T,); image_size (width, height); fps;
    scheme names the point set ("mediapipe478", "vertices", "custom"); meta is JSON-able provenance."""

    points: np.ndarray
    sigma: np.ndarray
    valid: np.ndarray
    visible: np.ndarray
    frame_index: np.ndarray
    time_s: np.ndarray
    image_size: tuple[int, int]
    fps: float
    scheme: str
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return int(self.points.shape[0])

    @property
    def n_points(self) -> int:
        return int(self.points.shape[1])

    def save(self, path: str | os.PathLike) -> Path:
        arrays = {"points": self.points.astype(np.float32, copy=False), "sigma": self.sigma.astype(np.float16, copy=False),
                  "valid": self.valid.astype(bool, copy=False), "visible": self.visible.astype(bool, copy=False),
                  "frame_index": self.frame_index.astype(np.int64), "time_s": self.time_s.astype(np.float64),
                  "image_size": np.asarray(self.image_size, dtype=np.int64)}
        meta = {"format": LANDMARKS_FORMAT, "version": LANDMARKS_VERSION, "fps": float(self.fps),
                "scheme": self.scheme, **{k: v for k, v in self.meta.items() if k not in ("format", "version")}}
        return write_npz_atomic(path, arrays, meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "LandmarkTrack":
        if Path(path).suffix.lower() in (".csv", ".txt"):
            raise InputError(f"{path} is a CSV; a landmarks file is the .npz from 'flamecap landmarks'; use CSV "
                             f"points with 'flamecap track FOOTAGE --aligner file --points {Path(path).name}'")
        arrays, meta = read_npz(path, what="landmarks file")
        if meta.get("format") != LANDMARKS_FORMAT:
            raise InputError(f"{path} is not a FlameCap landmarks file (format '{meta.get('format')}'); "
                             f"create one with 'flamecap landmarks FOOTAGE -o {Path(path).name}'")
        if not isinstance(meta.get("version"), int) or meta["version"] > LANDMARKS_VERSION:
            raise InputError(f"landmarks file {path} has format version {meta.get('version')!r}; this FlameCap "
                             f"reads version {LANDMARKS_VERSION} (update FlameCap, or re-create the file)")
        for key in ("points", "sigma", "valid", "visible", "frame_index", "time_s", "image_size"):
            if key not in arrays:
                raise InputError(f"landmarks file {path} lacks '{key}'; re-create it with 'flamecap landmarks'")
        if arrays["points"].ndim != 3:
            raise InputError(f"landmarks file {path}: 'points' has shape {arrays['points'].shape}, expected "
                             f"(T, K, 2); re-create it with 'flamecap landmarks'")
        T, K = arrays["points"].shape[:2]
        want = {"points": (T, K, 2), "sigma": (T, K), "valid": (T,), "visible": (T, K), "frame_index": (T,),
                "time_s": (T,), "image_size": (2,)}
        for key, shape in want.items():
            if arrays[key].shape != shape:
                raise InputError(f"landmarks file {path} has inconsistent shapes ('{key}' is "
                                 f"{arrays[key].shape}, expected {shape}); re-create it with 'flamecap landmarks'")
            if arrays[key].dtype.kind not in "biuf":
                raise InputError(f"landmarks file {path}: '{key}' has dtype {arrays[key].dtype}, expected numbers")
        if "fps" not in meta or "scheme" not in meta:
            raise InputError(f"landmarks file {path} lacks its 'fps'/'scheme' metadata; re-create it with "
                             f"'flamecap landmarks'")
        try:
            fps = float(meta["fps"])
        except (TypeError, ValueError):
            fps = float("nan")
        if not (np.isfinite(fps) and fps > 0):
            raise InputError(f"landmarks file {path}: fps {meta['fps']!r} is not a positive number")
        w, h = (int(x) for x in arrays["image_size"])
        if w <= 0 or h <= 0:
            raise InputError(f"landmarks file {path}: image size {w}x{h} is not positive")
        if not np.all(np.isfinite(arrays["time_s"])):
            raise InputError(f"landmarks file {path}: 'time_s' has NaN or infinite values")
        return cls(points=arrays["points"], sigma=arrays["sigma"], valid=arrays["valid"].astype(bool),
                   visible=arrays["visible"].astype(bool), frame_index=arrays["frame_index"],
                   time_s=arrays["time_s"], image_size=(w, h), fps=float(meta["fps"]),
                   scheme=str(meta["scheme"]), meta={k: v for k, v in meta.items()
                                                     if k not in ("format", "version", "fps", "scheme")})


class _SpillRows:
    """One field's rows in an unlinked scratch file, mapped shared. Rows are written in place and their
    pages dropped from the resident set once written (MADV_DONTNEED; readers drop them again with
    :func:`flamecap.contract.npzio.release_pages`): the kernel keeps them in the page cache or writes them
    back, so an hour of landmarks is disk, not process memory. The file lives
    under FlameCap's cache (a disk, where /tmp may be RAM) and is unlinked from the start, so nothing is
    left behind by a killed run."""

    def __init__(self, row: tuple[int, ...], dtype, cap: int):
        self.row, self.dtype = row, np.dtype(dtype)
        self.row_bytes = int(np.prod(row, dtype=np.int64)) * self.dtype.itemsize
        try:
            self.folder = str(cache_dir("scratch"))
        except OSError:           # no writable FlameCap home: the system's temporary folder
            self.folder = tempfile.gettempdir()
        self.fh = tempfile.TemporaryFile(prefix="flamecap-rows-", dir=self.folder)
        self.cap, self.released = 0, 0
        self.grow(cap)

    def grow(self, cap: int) -> None:
        """Extend the file to ``cap`` rows, space reserved now so a full disk is an error here, not a
        SIGBUS when a row is written; the rows so far stay in the file (no copy)."""
        old, new = self.cap * self.row_bytes, cap * self.row_bytes
        try:
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(self.fh.fileno(), old, new - old)
            else:
                self.fh.seek(old)
                for a in range(old, new, 1 << 20):
                    self.fh.write(bytes(min(1 << 20, new - a)))
                self.fh.flush()
        except OSError as exc:
            raise FlameCapError(f"cannot reserve {(new - old) / 1e6:.0f} MB for the landmark track in "
                                f"{self.folder} ({exc.strerror or exc}); free disk space there or set "
                                f"FLAMECAP_HOME to a folder on a larger disk") from None
        self.mm = mmap.mmap(self.fh.fileno(), new)
        self.arr = np.frombuffer(self.mm, self.dtype).reshape((cap,) + self.row)
        self.cap, self.released = cap, 0

    def write(self, start: int, values: np.ndarray) -> None:
        self.arr[start:start + len(values)] = values
        done = (start + len(values)) * self.row_bytes // mmap.PAGESIZE * mmap.PAGESIZE
        if done > self.released and hasattr(mmap, "MADV_DONTNEED"):
            self.mm.madvise(mmap.MADV_DONTNEED, self.released, done - self.released)
            self.released = done


class TrackRows:
    """A track's per-frame arrays filled block by block as an aligner goes, spilled to a scratch file
    (:class:`_SpillRows`) so memory stays flat in clip length; sized for the expected number of frames and
    grown by half in place when a clip runs longer.

    Fields, per frame: frame_index (int64), time_s (float64), points (K, 2) float32, sigma (K,) float16,
    valid (bool), visible (K,) bool."""

    FIELDS = ("frame_index", "time_s", "points", "sigma", "valid", "visible")

    def __init__(self, n_points: int, expected_frames: int | None = None):
        self.n = 0
        cap = max(int(expected_frames or 0), 64)
        shapes = {"frame_index": ((), np.int64), "time_s": ((), np.float64),
                  "points": ((n_points, 2), np.float32), "sigma": ((n_points,), np.float16),
                  "valid": ((), bool), "visible": ((n_points,), bool)}
        self._rows = {k: _SpillRows(sh, dt, cap) for k, (sh, dt) in shapes.items()}

    def append(self, frame_index, time_s, points, sigma, valid, visible) -> None:
        """Add a block of m frames (arrays with a leading m axis)."""
        block = dict(zip(self.FIELDS, (frame_index, time_s, points, sigma, valid, visible)))
        m = len(block["valid"])
        cap = self._rows["valid"].cap
        if self.n + m > cap:
            for rows in self._rows.values():
                rows.grow(max(self.n + m, cap + cap // 2))
        for k, v in block.items():
            self._rows[k].write(self.n, np.asarray(v))
        self.n += m

    def arrays(self) -> dict[str, np.ndarray]:
        """The filled rows of each field (views of the mapped files, no copy)."""
        return {k: r.arr[:self.n] for k, r in self._rows.items()}


class Aligner(abc.ABC):
    """A 2D alignment backend. ``track`` consumes frames (RGB uint8 (H, W, 3) with their frame numbers and
    times, streamed) and returns a :class:`LandmarkTrack` of its point ``scheme``."""

    name: str = "base"
    scheme: str = "custom"

    @abc.abstractmethod
    def track(self, frames: Iterable[tuple[int, float, np.ndarray]], image_size: tuple[int, int], fps: float,
              progress: ProgressCallback | None = None, n_frames: int | None = None) -> LandmarkTrack:
        """frames yields (frame_index, time_s, rgb)."""
