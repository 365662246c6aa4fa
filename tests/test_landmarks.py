"""Landmark backends: MediaPipe tracking on real footage (the default backend, litert; the legacy package is
only compared with, in test_litert_frontend.py), no-face footage, several faces, file backend, registry and the
CLI."""
import logging
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from flamecap.cli import main
from flamecap.errors import InputError
from flamecap.landmarks import DEFAULT_ALIGNER, LandmarkTrack, get_aligner, track_footage
from flamecap.video import open_footage

GRID_CLIPS = ["bbaf2n", "brbk7n", "lbax4n", "lbbc2a", "lrwp9a", "lwbsza", "pwij3p", "sbia1a", "sbwe5n", "swiz3n",
              "id2_vcd_swwp2s"]


def _noise_video(path, n=6, size=(96, 72)):
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, size)
    rng = np.random.default_rng(0)
    for _ in range(n):
        wr.write(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    wr.release()
    return path


def test_registry():
    assert DEFAULT_ALIGNER == "litert"
    assert get_aligner(DEFAULT_ALIGNER, face_index=1).face_index == 1
    assert get_aligner().name == DEFAULT_ALIGNER
    with pytest.raises(InputError, match="unknown aligner"):
        get_aligner("nope")


def test_legacy_backend_missing_is_one_actionable_line(monkeypatch, tmp_path, capsys):
    """Without the legacy package (the 'legacy' extra) --aligner mediapipe stops before any frame, naming the fix."""
    import flamecap.optional as opt
    real = opt.available
    monkeypatch.setattr(opt, "available", lambda m: False if m == "mediapipe" else real(m))
    with pytest.raises(InputError, match=r"pip install 'flamecap\[legacy\]'") as ei:
        get_aligner("mediapipe")
    assert "\n" not in str(ei.value) and "litert" in str(ei.value)
    clip = _noise_video(tmp_path / "noise.avi")
    assert main(["landmarks", str(clip), "-o", str(tmp_path / "x.npz"), "--aligner", "mediapipe",
                 "--progress", "none"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "flamecap[legacy]" in err[0]


def test_no_face_footage_gives_all_invalid_track_and_cli_error(tmp_path, caplog):
    p = _noise_video(tmp_path / "noise.avi")
    with caplog.at_level(logging.WARNING):
        tr = track_footage(open_footage(p), DEFAULT_ALIGNER)
    assert tr.n_frames == 6 and tr.n_points == 478 and not tr.valid.any()
    assert np.isnan(tr.points).all() and not tr.visible.any() and "no face found" in caplog.text
    out = tmp_path / "lm.npz"
    assert main(["landmarks", str(p), "-o", str(out), "--progress", "none"]) == 4
    assert not out.exists()


def test_cli_bad_footage_one_line(tmp_path, capsys):
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video")
    assert main(["landmarks", str(fake), "-o", str(tmp_path / "x.npz"), "--progress", "none"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a video FFmpeg can decode" in err[0]


def test_grid_clips_478_points_every_frame(grid_dir):
    """Every GRID clip, every 8th frame: a face with 478 finite points, σ > 0, mostly visible."""
    aligner = get_aligner(DEFAULT_ALIGNER)
    for name in GRID_CLIPS:
        foot = open_footage(grid_dir / f"{name}.mpg", stride=8)
        tr = track_footage(foot, aligner)
        assert tr.n_frames == foot.n_frames == 10, name
        assert tr.valid.all(), f"{name}: face missing in frames {tr.frame_index[~tr.valid]}"
        assert tr.points.shape == (10, 478, 2) and np.isfinite(tr.points).all()
        assert (tr.sigma > 0).all() and tr.visible.mean() > 0.9
        w, h = tr.image_size
        assert (tr.points[..., 0] > 0).all() and (tr.points[..., 0] < w).all() and (tr.points[..., 1] < h).all()


def test_sigma_by_region_and_cache_roundtrip(grid_dir, tmp_path, capsys):
    from types import SimpleNamespace

    from flamecap.contract.events import parse_event
    from flamecap.landmarks.mp_common import _connections
    c = SimpleNamespace(**_connections())       # MediaPipe's mesh tables, from the fetched model files
    out = tmp_path / "lm.npz"
    assert main(["landmarks", str(grid_dir / "bbaf2n.mpg"), "-o", str(out), "--end", "12", "--stride", "3",
                 "--progress", "jsonl"]) == 0
    events = [e for e in map(parse_event, capsys.readouterr().out.splitlines()) if e]
    assert events[0]["event"] == "start" and events[-1]["event"] == "done"
    assert any(e["event"] == "progress" and e["stage"] == "landmarks" for e in events)
    assert events[-1]["valid_frames"] == 4
    tr = LandmarkTrack.load(out)
    assert tr.n_frames == 4 and tr.valid.all() and tr.scheme == "mediapipe478"
    assert tr.meta["footage"]["path"].endswith("bbaf2n.mpg")
    oval = sorted({i for e in c.FACEMESH_FACE_OVAL for i in e})
    eyes = sorted({i for e in c.FACEMESH_LEFT_EYE | c.FACEMESH_RIGHT_EYE for i in e})
    assert np.median(tr.sigma[:, oval]) > 2 * np.median(tr.sigma[:, eyes])
    assert np.median(tr.sigma[:, 468:]) <= np.median(tr.sigma[:, eyes])
    # the cache re-fits without re-detecting: the file backend reproduces the track exactly
    fa = get_aligner("file", path=out)
    tr2 = fa.track_indices(tr.frame_index, tr.time_s, tr.image_size, tr.fps)
    np.testing.assert_array_equal(tr2.points, tr.points)
    np.testing.assert_array_equal(tr2.sigma, tr.sigma)


def test_several_faces_follow_one(grid_dir):
    foot = open_footage(grid_dir / "bbaf2n.mpg", end=6)
    frames = [f for f in foot]
    small = [(i, t, cv2.resize(img, None, fx=0.7, fy=0.7)) for i, t, img in frames]
    h, w = frames[0][2].shape[:2]

    def pair(left_small):
        for (i, t, big), (_, _, sm) in zip(frames, small):
            canvas = np.full((h, 2 * w, 3), 90, np.uint8)
            a, b = (sm, big) if left_small else (big, sm)
            canvas[: a.shape[0], : a.shape[1]] = a
            canvas[: b.shape[0], w: w + b.shape[1]] = b
            yield i, t, canvas

    for left_small in (True, False):
        tr = get_aligner(DEFAULT_ALIGNER).track(pair(left_small), (2 * w, h), 25.0)
        assert tr.valid.all()
        cx = np.nanmean(tr.points[..., 0], axis=1)
        assert ((cx > w) if left_small else (cx < w)).all()  # the largest face, every frame
        tr0 = get_aligner(DEFAULT_ALIGNER, face_index=0).track(pair(left_small), (2 * w, h), 25.0)
        assert (np.nanmean(tr0.points[..., 0], axis=1) < w).all()  # the leftmost face, every frame
        assert tr.meta["frames_with_several_faces"] == 6


def test_single_face_handover_gives_the_same_landmarks(grid_dir, monkeypatch):
    """A face found alone is tracked by the single-face graph (no per-frame detector) and handed back to
    the multi-face graph when lost: the landmarks are bit-identical to multi-face tracking throughout."""
    from flamecap.landmarks import mediapipe_aligner as mpa
    frames = [(i, t, np.full_like(img, 90) if 10 <= i < 15 else img)       # face gone on frames 10..14
              for i, t, img in open_footage(grid_dir / "bbaf2n.mpg", end=30)]
    size = frames[0][2].shape[1::-1]
    switches = []
    real_switch = mpa._Graphs.switch
    monkeypatch.setattr(mpa._Graphs, "switch", lambda g, single: (switches.append(single), real_switch(g, single)))
    fast = get_aligner(DEFAULT_ALIGNER).track(iter(frames), size, 25.0)
    assert switches == [True, False, True]          # hand-over, lost on frame 10, hand-over on its return
    real_init = mpa._Graphs.__init__
    monkeypatch.setattr(mpa._Graphs, "__init__", lambda g, make, n, may_switch=True: real_init(g, make, n, False))
    plain = get_aligner(DEFAULT_ALIGNER).track(iter(frames), size, 25.0)
    np.testing.assert_array_equal(fast.valid, plain.valid)
    assert (~fast.valid[10:15]).all() and fast.valid[15:].all()
    np.testing.assert_array_equal(fast.points, plain.points)
    np.testing.assert_array_equal(fast.sigma, plain.sigma)


def test_file_aligner_csv_wide_long_and_npz(tmp_path, caplog):
    wide = tmp_path / "wide.csv"
    wide.write_text("# my points\nframe,x0,y0,x1,y1\n0,1.5,2.5,3.5,4.5\n2,5,6,,\n")
    fa = get_aligner("file", path=wide)
    with caplog.at_level(logging.WARNING):
        tr = fa.track_indices([0, 1, 2], [0.0, 0.04, 0.08], (10, 10), 25.0)
    assert tr.valid.tolist() == [True, False, True] and "no points for 1 of 3" in caplog.text
    np.testing.assert_allclose(tr.points[0], [[1.5, 2.5], [3.5, 4.5]])
    assert tr.visible[2].tolist() == [True, False] and np.isnan(tr.points[2, 1]).all()
    assert tr.sigma[0, 0] == pytest.approx(2.0)
    long = tmp_path / "long.csv"
    long.write_text("frame,point,x,y,sigma\n3,0,1,2,0.5\n3,1,3,4,0.7\n")
    tr = get_aligner("file", path=long).track_indices([3], [0.1], (10, 10), 30.0)
    np.testing.assert_allclose(tr.points[0], [[1, 2], [3, 4]])
    np.testing.assert_allclose(tr.sigma[0], [0.5, 0.7])
    npz = tmp_path / "pts.npz"
    np.savez(npz, points=np.ones((2, 478, 2)), frame_index=np.array([5, 6]))
    fa = get_aligner("file", path=npz)
    assert fa.scheme == "mediapipe478"
    assert fa.track_indices([5, 6, 7], [0, 1, 2], (8, 8), 1.0).valid.tolist() == [True, True, False]


@pytest.mark.parametrize("content,msg", [
    ("frame,x0,y0\n0,abc,1\n", "non-numeric"),
    ("frame,x0,y0,x1\n0,1,2,3\n", "not x,y pairs"),
    ("", "is empty"),
])
def test_file_aligner_bad_csv(tmp_path, content, msg):
    p = tmp_path / "bad.csv"
    p.write_text(content)
    with pytest.raises(InputError, match=msg):
        get_aligner("file", path=p)


def test_file_aligner_binding_vertices():
    from flamecap.contract.model_format import FlameModelData
    from flamecap.binding.vertices import vertex_binding
    v = np.random.default_rng(0).normal(size=(6, 3))
    f = np.array([[0, 1, 2], [2, 3, 4], [4, 5, 0]])
    b = vertex_binding(FlameModelData(arrays={"v_template": v, "faces": f}))
    np.testing.assert_array_equal(b.point_index, np.arange(6))
    pts = np.einsum("rk,rkc->rc", b.bary, v[f[b.face_idx]])
    np.testing.assert_allclose(pts, v)


def test_track_rows_grow_past_the_expected_length_and_keep_every_row():
    from flamecap.landmarks.base import TrackRows
    rows = TrackRows(3, expected_frames=10)
    rng = np.random.default_rng(0)
    blocks = []
    for a in range(0, 250, 32):
        m = min(32, 250 - a)
        b = (np.arange(a, a + m), np.arange(a, a + m) / 25.0, rng.normal(size=(m, 3, 2)).astype(np.float32),
             rng.random((m, 3)).astype(np.float16), rng.random(m) > 0.3, rng.random((m, 3)) > 0.5)
        blocks.append(b)
        rows.append(*b)
    got = rows.arrays()
    assert rows.n == 250
    for k, name in enumerate(TrackRows.FIELDS):
        np.testing.assert_array_equal(got[name], np.concatenate([b[k] for b in blocks]))
        assert got[name].dtype == rows.arrays()[name].dtype
    assert got["sigma"].dtype == np.float16 and got["points"].dtype == np.float32   # σ is a weight: 3 digits


def _resident_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the resident set from /proc")
def test_track_rows_live_on_disk_not_in_the_resident_set(tmp_path):
    """An hour of landmarks is ~480 MB: the rows are spilled to an unlinked scratch file and dropped from
    the resident set once written, and again after the fitter or a save reads them."""
    from flamecap.contract.npzio import mapping_of
    from flamecap.fit.tracker import gather_observations
    from flamecap.landmarks.base import LandmarkTrack, TrackRows
    T, K = 6000, 478                                   # 6000 x 5.3 KB = 32 MB of rows
    rows = TrackRows(K, expected_frames=T)
    before = _resident_mib()
    pts = np.random.default_rng(1).normal(size=(100, K, 2)).astype(np.float32)
    for a in range(0, T, 100):
        rows.append(np.arange(a, a + 100), np.arange(a, a + 100) / 25.0, pts + a, np.ones((100, K), np.float16),
                    np.ones(100, bool), np.ones((100, K), bool))
    assert _resident_mib() - before < 8
    a = rows.arrays()
    assert mapping_of(a["points"]) is not None
    assert not any(Path(os.environ["FLAMECAP_HOME"]).glob("**/flamecap-rows-*"))   # unlinked: nothing left
    track = LandmarkTrack(points=a["points"], sigma=a["sigma"], valid=a["valid"], visible=a["visible"],
                          frame_index=a["frame_index"], time_s=a["time_s"], image_size=(64, 64), fps=25.0,
                          scheme="mediapipe478")
    for f0 in range(0, T, 1000):
        fr = np.arange(f0, f0 + 1000)
        obs = gather_observations(track, fr, np.arange(0, K, 7), 1.0)[0]
        np.testing.assert_array_equal(obs, (pts[fr % 100] + (fr // 100 * 100)[:, None, None].astype(np.float32))[:, ::7])
    assert _resident_mib() - before < 8
    path = track.save(tmp_path / "lm.npz")
    assert _resident_mib() - before < 24                # written in 16 MB blocks, each dropped after
    back = LandmarkTrack.load(path)
    np.testing.assert_array_equal(back.points, track.points)
    np.testing.assert_array_equal(back.frame_index, np.arange(T))


def test_track_rows_on_a_full_disk_fail_in_one_line(monkeypatch):
    import errno
    from flamecap.errors import FlameCapError
    from flamecap.landmarks import base

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(base.os, "posix_fallocate", full, raising=False)
    with pytest.raises(FlameCapError, match="cannot reserve .* MB for the landmark track .*No space left.*"
                                            "FLAMECAP_HOME"):
        base.TrackRows(478, expected_frames=90000)
