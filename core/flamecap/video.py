"""Footage input: video files (whatever OpenCV decodes) and image sequences, streamed frame by frame.

``open_footage(path)`` accepts

- a video file (``.mp4``, ``.mov``, ``.mpg``, ``.avi``, ... anything ``cv2.VideoCapture`` opens);
- a folder of images (``.png .jpg .jpeg .bmp .tif .tiff .webp .exr``), natural-sorted by file name;
- a printf pattern such as ``frames/%04d.png`` (frame numbers taken from the file names);
- a single image file (a one-frame sequence).

Iterating a :class:`Footage` yields ``(frame_index, time_s, rgb)`` with ``rgb`` uint8 ``(H, W, 3)``; only one
frame is in memory at a time. ``frame_index`` counts decoded frames from 0 for videos, the position in the
sorted list for image folders, and the number in the file name for printf patterns. ``time_s`` is
``frame_index / fps``. A clip that ends before its announced length logs a warning and sets
``ended_early``; the frames read so far are kept (``frames_read``).
"""
from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, TypeVar

import numpy as np

from .errors import FootageError

log = logging.getLogger(__name__)

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".exr")
DEFAULT_IMAGE_FPS = 25.0
T_item = TypeVar("T_item")


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


@dataclass
class Footage:
    """An opened clip (see module docstring). ``size`` is (width, height); ``n_frames`` the expected number
    of frames in ``[start, end)`` at ``stride`` (None when a video does not announce its length)."""

    path: Path
    kind: str                    # "video" | "images"
    fps: float
    size: tuple[int, int]
    start: int
    end: int | None
    stride: int
    n_frames_total: int | None
    _images: list[tuple[int, Path]] = field(default_factory=list, repr=False)
    frames_read: int = 0
    ended_early: bool = False
    first_frame_at: float | None = None   # time.perf_counter() when the first frame was decoded (timing)

    @property
    def n_frames(self) -> int | None:
        if self.kind == "images":
            return len(self._selected_images())
        if self.n_frames_total is None:
            return None
        stop = self.n_frames_total if self.end is None else min(self.end, self.n_frames_total)
        return len(range(self.start, stop, self.stride))

    @property
    def source(self) -> dict:
        """JSON-able provenance for result metadata."""
        return {"path": str(self.path), "kind": self.kind, "fps": self.fps, "size": list(self.size),
                "start": self.start, "end": self.end, "stride": self.stride,
                "n_frames_total": self.n_frames_total, "frames_read": self.frames_read,
                "ended_early": self.ended_early}

    def _selected_images(self) -> list[tuple[int, Path]]:
        sel = [(i, p) for i, p in self._images if i >= self.start and (self.end is None or i < self.end)]
        return sel[:: self.stride]

    def __iter__(self) -> Iterator[tuple[int, float, np.ndarray]]:
        self.frames_read = 0
        self.ended_early = False
        self.first_frame_at = None
        yield from (self._iter_images() if self.kind == "images" else self._iter_video())

    def _finish_early(self, expected: int | None, why: str) -> None:
        self.ended_early = True
        log.warning("%s ended early (%s): %d of %s frames read; keeping the frames read so far",
                    self.path, why, self.frames_read, expected if expected is not None else "?")

    def _iter_images(self):
        import cv2
        sel = self._selected_images()
        for idx, p in sel:
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if img is None:
                self._finish_early(len(sel), f"{p.name} is unreadable")
                return
            if (img.shape[1], img.shape[0]) != self.size:
                raise FootageError(f"image {p} is {img.shape[1]}x{img.shape[0]} but the sequence is "
                                   f"{self.size[0]}x{self.size[1]}; all frames must have the same size")
            self.frames_read += 1
            if self.first_frame_at is None:
                self.first_frame_at = time.perf_counter()
            yield idx, idx / self.fps, cv2.cvtColor(img, cv2.COLOR_BGR2RGB)

    def _iter_video(self):
        import cv2
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise FootageError(f"{self.path} could not be reopened; check the file is still there")
        expected = self.n_frames
        try:
            idx = 0
            while self.end is None or idx < self.end:
                wanted = idx >= self.start and (idx - self.start) % self.stride == 0
                if not wanted:
                    if not cap.grab():
                        break
                    idx += 1
                    continue
                ok, bgr = cap.read()
                if not ok or bgr is None:
                    break
                if bgr.ndim == 2:
                    bgr = cv2.cvtColor(bgr, cv2.COLOR_GRAY2BGR)
                self.frames_read += 1
                if self.first_frame_at is None:
                    self.first_frame_at = time.perf_counter()
                yield idx, idx / self.fps, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                idx += 1
        finally:
            cap.release()
        if expected is not None and self.frames_read < expected:
            self._finish_early(expected, "truncated or shorter than its header says")


def prefetch(frames: Iterable[T_item], depth: int = 4) -> Iterator[T_item]:
    """Iterate ``frames`` in a background thread, ``depth`` items ahead (bounded queue: flat memory).

    Decoding (OpenCV releases the GIL) then overlaps with whatever consumes the frames. Items and their order
    are unchanged; an exception raised by the source is re-raised here, in the consumer's thread. Closing or
    abandoning the returned generator stops the thread (it never blocks on a full queue for long)."""
    import queue
    import threading
    if depth < 1:
        yield from frames
        return
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for item in frames:
                if not put((None, item)):
                    return
            put((None, done))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            put((exc, None))
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()   # a source left early releases its decoder here, in its own thread

    th = threading.Thread(target=work, name="flamecap-decode", daemon=True)
    th.start()
    try:
        while True:
            exc, item = q.get()
            if exc is not None:
                raise exc
            if item is done:
                return
            yield item
    finally:
        stop.set()
        th.join(timeout=5.0)


def open_footage(path: str | os.PathLike, start: int = 0, end: int | None = None, stride: int = 1,
                 fps: float | None = None) -> Footage:
    """Open a video file, image folder, printf image pattern or single image (see module docstring).

    ``start``/``end`` are frame numbers (end exclusive), ``stride`` keeps every n-th frame; ``fps`` overrides
    the frame rate (image sequences default to 25). Raises :class:`FootageError` (one line) when the path
    is missing, empty or not decodable."""
    if start < 0 or stride < 1 or (end is not None and end <= start):
        raise FootageError(f"bad frame range start={start} end={end} stride={stride}; need 0 <= start < end "
                           f"and stride >= 1")
    if fps is not None and not (fps > 0):
        raise FootageError(f"fps must be positive, got {fps}")
    p = Path(path)
    spath = str(path)
    if "%" in p.name:
        return _open_pattern(p, start, end, stride, fps)
    if not p.exists():
        raise FootageError(f"footage not found: {p}; give a video file, an image folder or a pattern like "
                           f"frames/%04d.png")
    if p.is_dir():
        files = sorted((q for q in p.iterdir() if q.is_file() and q.suffix.lower() in IMAGE_EXTS),
                       key=lambda q: _natural_key(q.name))
        if not files:
            raise FootageError(f"folder {p} holds no images ({', '.join(IMAGE_EXTS)}); put the frames there "
                               f"or give a video file")
        return _images_footage(p, list(enumerate(files)), start, end, stride, fps)
    if p.suffix.lower() in IMAGE_EXTS:
        return _images_footage(p, [(0, p)], start, end, stride, fps)
    return _open_video(Path(spath), start, end, stride, fps)


def _open_pattern(p: Path, start, end, stride, fps) -> Footage:
    folder = p.parent if str(p.parent) else Path(".")
    m = re.fullmatch(r"(.*)%(0?)(\d*)d(.*)", p.name)
    if m is None or "%" in m.group(1) + m.group(4):
        raise FootageError(f"image pattern {p} must contain exactly one %d / %0Nd, e.g. frames/%04d.png")
    pre, zero, width, post = m.groups()
    digits = rf"\d{{{int(width)}}}" if zero and width else r"\d+"
    rx = re.compile(re.escape(pre) + f"({digits})" + re.escape(post) + "$")
    if not folder.is_dir():
        raise FootageError(f"folder {folder} of image pattern {p.name} does not exist")
    files = sorted((int(mm.group(1)), q) for q in folder.iterdir()
                   if q.is_file() and (mm := rx.match(q.name)))
    if not files:
        raise FootageError(f"no files match {p} in {folder}; check the pattern (e.g. frames/%04d.png)")
    return _images_footage(p, files, start, end, stride, fps)


def _images_footage(p: Path, files: list[tuple[int, Path]], start, end, stride, fps) -> Footage:
    import cv2
    foot = Footage(path=p, kind="images", fps=float(fps or DEFAULT_IMAGE_FPS), size=(0, 0), start=start, end=end,
                   stride=stride, n_frames_total=len(files), _images=files)
    sel = foot._selected_images()
    if not sel:
        raise FootageError(f"{p} has no frames in range start={start} end={end} (frames "
                           f"{files[0][0]}..{files[-1][0]})")
    first = cv2.imread(str(sel[0][1]), cv2.IMREAD_COLOR)
    if first is None:
        raise FootageError(f"{sel[0][1]} is not an image OpenCV can decode; re-export the frames as PNG/JPEG")
    foot.size = (int(first.shape[1]), int(first.shape[0]))
    return foot


def _open_video(p: Path, start, end, stride, fps) -> Footage:
    import cv2
    if p.stat().st_size == 0:
        raise FootageError(f"{p} is empty (0 bytes); re-export or re-copy the video")
    cap = cv2.VideoCapture(str(p))
    try:
        ok, bgr = (cap.read() if cap.isOpened() else (False, None))
        if not ok or bgr is None:
            raise FootageError(f"{p} is not a video OpenCV can decode (text file renamed .mp4? unsupported "
                               f"codec?); convert it with e.g. 'ffmpeg -i IN -c:v libx264 OUT.mp4'")
        vfps = cap.get(cv2.CAP_PROP_FPS)
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()
    if fps is None:
        if not (vfps and np.isfinite(vfps) and 0 < vfps < 1000):
            log.warning("%s does not report a usable frame rate (%s); assuming %s fps", p, vfps, DEFAULT_IMAGE_FPS)
            vfps = DEFAULT_IMAGE_FPS
        fps = float(vfps)
    total = count if count > 0 else None
    if total is not None and start >= total:
        raise FootageError(f"start frame {start} is past the end of {p} ({total} frames)")
    return Footage(path=p, kind="video", fps=float(fps), size=(int(bgr.shape[1]), int(bgr.shape[0])),
                   start=start, end=end, stride=stride, n_frames_total=total)
