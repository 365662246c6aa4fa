"""Footage input: video files (decoded with PyAV, i.e. FFmpeg) and image sequences, streamed frame by frame.

``open_footage(path)`` accepts

- a video file (``.mp4``, ``.mov``, ``.mpg``, ``.avi``, ... anything FFmpeg demuxes);
- a folder of images (``.png .jpg .jpeg .bmp .tif .tiff .webp .exr``), natural-sorted by file name;
- a printf pattern such as ``frames/%04d.png`` (frame numbers taken from the file names);
- a single image file (a one-frame sequence).

Iterating a :class:`Footage` yields ``(frame_index, time_s, rgb)`` with ``rgb`` uint8 ``(H, W, 3)`` as a player
shows it (rotation metadata applied); only one frame is in memory at a time. Frame numbers and times are
true ones:

- videos: ``frame_index`` is the frame's rank in presentation order among every frame the file holds (a
  demux pass reads every packet's timestamp first, without decoding), ``time_s`` its presentation time
  relative to the first frame: variable frame rate clips keep their real timing;
- image folders: the number in the file names (relative to the first file) when every name has one, else
  the position in the sorted list; printf patterns: the number itself; ``time_s = frame_index / fps``.

Damage never ends the clip early: a frame that cannot be decoded (a corrupt image, a damaged video packet,
an image number missing from the sequence) is skipped, recorded in ``damaged`` with its true frame number
and time, and becomes an invalid row downstream (:func:`flamecap.landmarks.track_footage`). A video whose
header announces more frames than the file holds (truncated) keeps what it has and sets ``truncated``.
``source`` records frames expected / read / damaged for the result file.
"""
from __future__ import annotations

import logging
import math
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
MAX_LISTED_DAMAGED = 1000      # frame numbers listed in ``source`` (the count is always exact)
REORDER_MARGIN = 32            # frames decoded past ``end`` before stopping (decoders reorder B-frames)
T_item = TypeVar("T_item")


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


@dataclass
class Footage:
    """An opened clip (see module docstring). ``size`` is (width, height) as displayed; ``n_frames`` the
    expected number of frames in ``[start, end)`` at ``stride`` (None when unknown). ``rotation`` is the
    counter-clockwise rotation (degrees) applied to decoded frames for display; ``focal_35mm`` the 35 mm
    equivalent focal length (mm) the file's metadata carries, else None."""

    path: Path
    kind: str                    # "video" | "images"
    fps: float
    size: tuple[int, int]
    start: int
    end: int | None
    stride: int
    n_frames_total: int | None
    _images: list[tuple[int, Path]] = field(default_factory=list, repr=False)
    _pts: np.ndarray | None = field(default=None, repr=False)      # video: stream pts of every frame, sorted
    _time_base: float = 0.0
    _step: int = 1                                                 # images: frame-number step of the sequence
    rotation: int = 0
    focal_35mm: float | None = None
    vfr: bool = False
    frames_header: int | None = None    # frames the video header announces (None: not announced)
    frames_read: int = 0
    damaged: list[tuple[int, float]] = field(default_factory=list)   # (frame_index, time_s), selected frames
    truncated: bool = False
    first_frame_at: float | None = None   # time.perf_counter() when the first frame was decoded (timing)

    @property
    def ended_early(self) -> bool:
        return self.truncated

    @property
    def n_frames(self) -> int | None:
        if self.kind == "images":
            return len(self._grid())
        if self.n_frames_total is None:
            return None
        stop = self.n_frames_total if self.end is None else min(self.end, self.n_frames_total)
        return len(range(self.start, stop, self.stride))

    @property
    def source(self) -> dict:
        """JSON-able provenance for result metadata (see :data:`flamecap.contract.result.SOURCE_FIELDS`)."""
        damaged = sorted(i for i, _ in self.damaged)
        return {"path": str(self.path), "kind": self.kind, "fps": self.fps, "size": list(self.size),
                "start": self.start, "end": self.end, "stride": self.stride,
                "n_frames_total": self.n_frames_total, "frames_expected": self.n_frames,
                "frames_read": self.frames_read, "frames_damaged": len(damaged),
                "damaged_frames": damaged[:MAX_LISTED_DAMAGED], "truncated": self.truncated,
                "frames_header": self.frames_header, "ended_early": self.truncated, "vfr": self.vfr,
                "rotation": self.rotation, "focal_35mm": self.focal_35mm}

    def fingerprint(self) -> dict:
        """What this footage is, for binding caches to it: kind, displayed size, frame selection, byte size
        and a sha256 over sampled content (video: 3 blocks of 1 MiB at the start, middle and end of the
        file; images: every file name and size, plus the first and last image's bytes)."""
        import hashlib
        h = hashlib.sha256()
        if self.kind == "video":
            n = os.path.getsize(self.path)
            with open(self.path, "rb") as fh:
                for off in sorted({0, max(n // 2 - (1 << 19), 0), max(n - (1 << 20), 0)}):
                    fh.seek(off)
                    h.update(fh.read(1 << 20))
            nbytes = n
        else:
            nbytes = 0
            for idx, p in self._images:
                size = os.path.getsize(p)
                nbytes += size
                h.update(f"{idx}:{p.name}:{size};".encode())
            for _, p in (self._images[0], self._images[-1]):
                h.update(Path(p).read_bytes())
        return {"kind": self.kind, "size": list(self.size), "start": self.start, "end": self.end,
                "stride": self.stride, "bytes": int(nbytes), "sha256_sampled": h.hexdigest()}

    def input_files(self) -> list[Path]:
        return [p for _, p in self._images] if self.kind == "images" else [self.path]

    # ------------------------------------------------------------------------------------------ images
    def _grid(self) -> list[int]:
        """Selected frame numbers of an image sequence (present or missing), on its numbering step."""
        nums = [i for i, _ in self._images if i >= self.start and (self.end is None or i < self.end)]
        if not nums:
            return []
        return list(range(nums[0], nums[-1] + 1, self._step * self.stride))

    def _selected_images(self) -> list[tuple[int, Path | None]]:
        by_num = dict(self._images)
        return [(i, by_num.get(i)) for i in self._grid()]

    def __iter__(self) -> Iterator[tuple[int, float, np.ndarray]]:
        self.frames_read = 0
        self.damaged = []
        self.truncated = False
        self.first_frame_at = None
        yield from (self._iter_images() if self.kind == "images" else self._iter_video())
        if self.damaged:
            log.warning("%s: %d frame(s) could not be read (%s%s); they are kept as invalid frames", self.path,
                        len(self.damaged), ", ".join(str(i) for i, _ in self.damaged[:10]),
                        "..." if len(self.damaged) > 10 else "")

    def _got(self, idx: int, t: float, rgb: np.ndarray):
        self.frames_read += 1
        if self.first_frame_at is None:
            self.first_frame_at = time.perf_counter()
        return idx, t, rgb

    def _iter_images(self):
        import cv2
        for idx, p in self._selected_images():
            img = cv2.imread(str(p), cv2.IMREAD_COLOR) if p is not None else None
            if img is None:
                self.damaged.append((idx, idx / self.fps))
                continue
            if (img.shape[1], img.shape[0]) != self.size:
                raise FootageError(f"image {p} is {img.shape[1]}x{img.shape[0]} but the sequence is "
                                   f"{self.size[0]}x{self.size[1]}; all frames must have the same size")
            yield self._got(idx, idx / self.fps, cv2.cvtColor(img, cv2.COLOR_BGR2RGB))

    # ------------------------------------------------------------------------------------------ video
    def _wanted(self, i: int) -> bool:
        return i >= self.start and (self.end is None or i < self.end) and (i - self.start) % self.stride == 0

    def _iter_video(self):
        import av
        pts = self._pts
        times = (pts - pts[0]) * self._time_base
        rank = {int(v): i for i, v in enumerate(pts)}
        seen = np.zeros(pts.size, bool)    # decoded (each frame once)
        ok = np.zeros(pts.size, bool)      # decoded intact and handed out
        stop = None if self.end is None else self.end + REORDER_MARGIN
        try:
            container = av.open(str(self.path))
        except (av.error.FFmpegError, OSError) as exc:
            raise FootageError(f"{self.path} could not be reopened ({exc}); check the file is still there") from None
        k = self.rotation // 90
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            packets = container.demux(stream)
            while True:
                try:
                    packet = next(packets)
                except StopIteration:
                    break
                except av.error.FFmpegError as exc:   # the container itself is damaged from here on
                    log.warning("%s: demuxing stopped at a damaged part (%s)", self.path, exc)
                    self.truncated = True
                    break
                try:
                    frames = packet.decode()
                except av.error.FFmpegError:
                    continue                           # this packet's frame is recorded as damaged below
                for fr in frames:
                    i = rank.get(fr.pts if fr.pts is not None else -1)
                    if i is None or seen[i]:
                        continue
                    seen[i] = True
                    if not self._wanted(i) or fr.is_corrupt:   # a corrupt frame is recorded as damaged below
                        continue
                    rgb = fr.to_ndarray(format="rgb24")
                    if k:
                        rgb = np.ascontiguousarray(np.rot90(rgb, k))
                    ok[i] = True
                    yield self._got(i, float(times[i]), rgb)
                if stop is not None and seen[min(stop, seen.size) - 1:].any():
                    break
        finally:
            container.close()
        last = pts.size if self.end is None else min(self.end, pts.size)
        self.damaged += [(i, float(times[i])) for i in range(self.start, last, self.stride) if not ok[i]]
        if self.frames_header is not None and self.frames_header > pts.size:
            self.truncated = True
        if self.truncated:
            log.warning("%s is truncated: the header announces %s frames, the file holds %d; keeping the "
                        "frames it has", self.path, self.frames_header or "more", pts.size)


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
        return _images_footage(p, _number_files(files), start, end, stride, fps)
    if p.suffix.lower() in IMAGE_EXTS:
        return _images_footage(p, [(0, p)], start, end, stride, fps)
    return _open_video(p, start, end, stride, fps)


def _number_files(files: list[Path]) -> list[tuple[int, Path]]:
    """Frame numbers of a folder's images: the last number in each name, relative to the first, when every
    name has a distinct one (a missing number stays a gap: later frames keep their true numbers); else the
    position in the natural sort."""
    nums = []
    for q in files:
        m = re.findall(r"\d+", q.stem)
        nums.append(int(m[-1]) if m else None)
    if None in nums or len(set(nums)) != len(nums):
        return list(enumerate(files))
    first = min(nums)
    return sorted(((n - first, q) for n, q in zip(nums, files)), key=lambda t: t[0])


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


def _exif_focal_35mm(path: Path) -> float | None:
    """EXIF FocalLengthIn35mmFilm (tag 0xA405 in the Exif IFD) of an image, in mm; None when absent."""
    try:
        from PIL import Image
        with Image.open(path) as im:
            v = im.getexif().get_ifd(0x8769).get(0xA405)
    except (ImportError, OSError, ValueError, SyntaxError):
        return None
    return _positive_float(v)


def _positive_float(v) -> float | None:
    try:
        f = float(str(v).strip().split()[0]) if not isinstance(v, (int, float)) else float(v)
    except (ValueError, IndexError):
        return None
    return f if math.isfinite(f) and f > 0 else None


def _images_footage(p: Path, files: list[tuple[int, Path]], start, end, stride, fps) -> Footage:
    import cv2
    diffs = np.diff([i for i, _ in files])
    step = int(np.gcd.reduce(diffs)) if diffs.size else 1
    foot = Footage(path=p, kind="images", fps=float(fps or DEFAULT_IMAGE_FPS), size=(0, 0), start=start, end=end,
                   stride=stride, n_frames_total=len(files), _images=files, _step=max(step, 1))
    sel = [(i, q) for i, q in foot._selected_images() if q is not None]
    if not sel:
        raise FootageError(f"{p} has no frames in range start={start} end={end} (frames "
                           f"{files[0][0]}..{files[-1][0]})")
    first = next((img for _, q in sel if (img := cv2.imread(str(q), cv2.IMREAD_COLOR)) is not None), None)
    if first is None:
        raise FootageError(f"{sel[0][1]} is not an image OpenCV can decode; re-export the frames as PNG/JPEG")
    foot.size = (int(first.shape[1]), int(first.shape[0]))
    foot.focal_35mm = _exif_focal_35mm(sel[0][1])
    return foot


FOCAL_35MM_KEYS = ("com.apple.quicktime.camera.focal_length.35mm_equivalent",)


def _metadata_focal_35mm(*dicts) -> float | None:
    """The 35 mm-equivalent focal length from container / stream metadata: the QuickTime key, else any key
    naming a focal length "35mm" (e.g. Android / camera-app variants)."""
    for d in dicts:
        for key in FOCAL_35MM_KEYS:
            if key in d:
                return _positive_float(d[key])
    for d in dicts:
        for key, v in d.items():
            k = key.lower()
            if "focal" in k and "35" in k:
                return _positive_float(v)
    return None


def _open_video(p: Path, start, end, stride, fps) -> Footage:
    import av
    if p.stat().st_size == 0:
        raise FootageError(f"{p} is empty (0 bytes); re-export or re-copy the video")
    not_video = (f"{p} is not a video FFmpeg can decode (text file renamed .mp4? unsupported codec?); convert it "
                 f"with e.g. 'ffmpeg -i IN -c:v libx264 OUT.mp4'")
    try:
        container = av.open(str(p))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError):
        raise FootageError(not_video) from None
    try:
        if not container.streams.video:
            raise FootageError(f"{p} has no video stream (an audio file?); give a video file")
        stream = container.streams.video[0]
        header = int(stream.frames or 0) or None
        tb = float(stream.time_base) if stream.time_base else 0.0
        meta_focal = _metadata_focal_35mm(dict(container.metadata), dict(stream.metadata))
        # demux pass (no decoding): every frame's presentation timestamp, in order
        pts, n_no_pts = [], 0
        try:
            for packet in container.demux(stream):
                if packet.size == 0 or packet.is_discard:
                    continue
                v = packet.pts if packet.pts is not None else packet.dts
                if v is None:
                    n_no_pts += 1
                    continue
                pts.append(int(v))
        except av.error.FFmpegError as exc:
            log.warning("%s: the container is damaged after %d frames (%s)", p, len(pts), exc)
        rate = stream.average_rate or stream.guessed_rate
    finally:
        container.close()
    first, rotation = None, 0
    if pts:   # the first decodable frame: size and rotation (a fresh open: seeking back fails on some files)
        with av.open(str(p)) as c2:
            packets = c2.demux(c2.streams.video[0])
            while first is None:
                try:
                    frames = next(packets).decode()
                except StopIteration:
                    break
                except av.error.FFmpegError:   # a damaged first packet: the next one may decode
                    continue
                if frames:
                    first, rotation = frames[0], int(round(frames[0].rotation or 0)) % 360
    if first is None:
        raise FootageError(not_video)
    w, h = first.width, first.height
    if n_no_pts:
        log.warning("%s: %d packets carry no timestamp; they are not counted as frames", p, n_no_pts)
    pts_arr = np.unique(np.asarray(pts, dtype=np.int64))      # sorted presentation order, duplicates once
    if tb <= 0:
        raise FootageError(f"{p} has no usable time base; convert it with 'ffmpeg -i IN -c:v libx264 OUT.mp4'")
    dt = np.diff(pts_arr) * tb
    vfr = bool(dt.size > 1 and (dt.max() - dt.min()) > 0.05 * float(np.median(dt)))
    if fps is None:
        vfps = float(rate) if rate else (1.0 / float(np.median(dt)) if dt.size else 0.0)
        if dt.size and float(np.sum(dt)) > 0:
            vfps = dt.size / float(np.sum(dt)) if vfr else vfps   # VFR: the mean rate over the clip
        if not (math.isfinite(vfps) and 0 < vfps < 1000):
            log.warning("%s does not report a usable frame rate (%s); assuming %s fps", p, vfps, DEFAULT_IMAGE_FPS)
            vfps = DEFAULT_IMAGE_FPS
        fps = vfps
    if vfr:
        log.info("%s has a variable frame rate (%.1f fps on average); frames keep their real timestamps", p, fps)
    total = int(pts_arr.size)
    if start >= total:
        raise FootageError(f"start frame {start} is past the end of {p} ({total} frames)")
    if rotation % 90:
        log.warning("%s: rotation %d deg is not a multiple of 90; frames are used unrotated", p, rotation)
        rotation = 0
    size = (h, w) if rotation in (90, 270) else (w, h)
    return Footage(path=p, kind="video", fps=float(fps), size=(int(size[0]), int(size[1])), start=start, end=end,
                   stride=stride, n_frames_total=total, _pts=pts_arr, _time_base=tb, rotation=rotation,
                   focal_35mm=meta_focal, vfr=vfr, frames_header=header)
