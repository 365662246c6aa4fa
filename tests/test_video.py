"""Footage input: videos, image folders, printf patterns, frame ranges, bad input."""
import logging

import cv2
import numpy as np
import pytest

from flamecap.errors import FootageError
from flamecap.video import open_footage


def _write_video(path, n=12, size=(64, 48), fps=10.0):
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert wr.isOpened()
    for i in range(n):
        img = np.full((size[1], size[0], 3), 0, np.uint8)
        img[:, :, 2] = (i * 20) % 256  # red channel encodes the frame number (BGR order)
        wr.write(img)
    wr.release()
    return path


def test_video_stream_range_and_rgb(tmp_path):
    p = _write_video(tmp_path / "clip.avi")
    foot = open_footage(p)
    assert foot.kind == "video" and foot.size == (64, 48) and foot.fps == pytest.approx(10.0)
    assert foot.n_frames == 12
    frames = list(foot)
    assert [f[0] for f in frames] == list(range(12))
    assert frames[3][1] == pytest.approx(0.3)
    rgb = frames[5][2]
    assert rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8
    assert abs(int(rgb[..., 0].mean()) - 100) < 6 and rgb[..., 2].mean() < 6  # red is channel 0 (RGB)
    sub = open_footage(p, start=2, end=9, stride=3)
    assert sub.n_frames == 3 and [f[0] for f in sub] == [2, 5, 8]
    assert sub.frames_read == 3 and not sub.ended_early
    assert sub.source["path"].endswith("clip.avi")


def test_image_folder_pattern_and_single(tmp_path):
    d = tmp_path / "frames"
    d.mkdir()
    for i in (1, 2, 10):
        cv2.imwrite(str(d / f"f{i:04d}.png"), np.full((8, 6, 3), i, np.uint8))
    (d / "notes.txt").write_text("x")
    foot = open_footage(d)
    # true numbers from the names (relative to the first): 0, 1, 9; the 7 missing numbers are expected frames
    assert foot.kind == "images" and foot.size == (6, 8) and foot.n_frames == 10
    assert [(f[0], int(f[2][0, 0, 0])) for f in foot] == [(0, 1), (1, 2), (9, 10)]
    assert [i for i, _ in foot.damaged] == list(range(2, 9))
    pat = open_footage(d / "f%04d.png", start=2)
    assert [f[0] for f in pat] == [2, 10] and pat.n_frames == 9          # 3..9 missing: kept as gaps
    one = open_footage(d / "f0010.png", fps=30)
    assert one.n_frames == 1 and one.fps == 30


@pytest.mark.parametrize("make,msg", [
    (lambda t: (t / "fake.mp4").write_text("this is not a video") and t / "fake.mp4", "not a video FFmpeg can decode"),
    (lambda t: (t / "empty.mp4").write_bytes(b"") or t / "empty.mp4", "is empty"),
    (lambda t: (t / "emptydir").mkdir() or t / "emptydir", "holds no images"),
    (lambda t: t / "missing.mp4", "not found"),
    (lambda t: t / "nomatch_%04d.png", "no files match"),
])
def test_bad_footage_one_line_error(tmp_path, make, msg):
    with pytest.raises(FootageError) as ei:
        open_footage(make(tmp_path))
    assert msg in str(ei.value) and "\n" not in str(ei.value)


def test_bad_range(tmp_path):
    p = _write_video(tmp_path / "clip.avi")
    with pytest.raises(FootageError):
        open_footage(p, start=5, end=3)
    with pytest.raises(FootageError):
        open_footage(p, start=50)


def test_truncated_video_keeps_frames_and_warns(tmp_path, caplog):
    p = _write_video(tmp_path / "clip.avi", n=30)
    data = p.read_bytes()
    q = tmp_path / "cut.avi"
    q.write_bytes(data[: len(data) // 2])  # header still announces 30 frames
    foot = open_footage(q)
    with caplog.at_level(logging.WARNING):
        frames = list(foot)
    assert foot.frames_header == 30 and 0 < len(frames) < 30
    assert foot.truncated and foot.source["truncated"] and foot.frames_read == len(frames)
    assert "truncated" in caplog.text


def test_unreadable_image_in_sequence_is_recorded(tmp_path, caplog):
    d = tmp_path / "seq"
    d.mkdir()
    for i in range(3):
        cv2.imwrite(str(d / f"{i}.png"), np.zeros((4, 4, 3), np.uint8))
    (d / "3.png").write_text("broken")
    foot = open_footage(d)
    with caplog.at_level(logging.WARNING):
        frames = list(foot)
    assert len(frames) == 3 and foot.damaged == [(3, 3 / 25)] and "could not be read" in caplog.text
