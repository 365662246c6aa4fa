"""Issue 14 (reliability): footage read through damage with true frame numbers and timestamps (VFR,
gaps, corrupt frames, truncation), rotation metadata, the 35 mm focal from metadata, caches and registered
models bound to what they were made from, and the model registry locked and contained.

Clips are written here with PyAV (a few 64x48 frames whose grey level encodes the frame number)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from flamecap import cli
from flamecap.errors import ModelError
from flamecap.video import open_footage

av = pytest.importorskip("av")
REPO = Path(__file__).resolve().parents[1]
W, H = 64, 48


def _level(i: int) -> int:
    return 20 + 3 * i          # < 256 for the 60-frame clips


def write_clip(path: Path, n: int, *, times_ms=None, rotation=None, metadata=None, gop: int = 10,
               faststart: bool = True) -> Path:
    """An H.264 .mp4 whose frame i is grey level _level(i) with a white block at the top left; ``times_ms``
    gives per-frame presentation times (VFR), ``rotation`` a display matrix (counter-clockwise degrees)."""
    opts = {"movflags": "+faststart" + ("+use_metadata_tags" if metadata else "")} if faststart or metadata else {}
    c = av.open(str(path), "w", options=opts)
    for k, v in (metadata or {}).items():
        c.metadata[k] = v
    s = c.add_stream("libx264", rate=25)
    s.width, s.height, s.pix_fmt = W, H, "yuv420p"
    s.codec_context.gop_size = gop
    s.options = {"bf": "0"}
    if times_ms is not None:
        s.codec_context.time_base = Fraction(1, 1000)
    if rotation is not None:
        s.set_display_rotation(rotation)
    for i in range(n):
        img = np.full((H, W, 3), _level(i), np.uint8)
        img[:8, :12] = 255
        img[H // 2:, : W // 2] = np.random.default_rng(i).integers(0, 255, (H - H // 2, W // 2, 3))  # real bytes
        fr = av.VideoFrame.from_ndarray(img, format="rgb24")
        if times_ms is not None:
            fr.pts, fr.time_base = int(times_ms[i]), Fraction(1, 1000)
        for p in s.encode(fr):
            c.mux(p)
    for p in s.encode():
        c.mux(p)
    c.close()
    return path


def frames_of(foot):
    return [(i, t, rgb) for i, t, rgb in foot]


def _grey(rgb) -> float:
    return float(np.median(rgb[H // 2:, W // 2:]))


# ---------------------------------------------------------------------------------------------- video
def test_plain_clip_true_numbers_and_times(tmp_path):
    foot = open_footage(write_clip(tmp_path / "c.mp4", 12))
    fr = frames_of(foot)
    assert [i for i, _, _ in fr] == list(range(12))
    assert np.allclose([t for _, t, _ in fr], np.arange(12) / 25)
    assert all(abs(_grey(rgb) - _level(i)) < 4 for i, _, rgb in fr)
    s = foot.source
    assert (s["frames_expected"], s["frames_read"], s["frames_damaged"], s["truncated"]) == (12, 12, 0, False)


def test_variable_frame_rate_keeps_presentation_times(tmp_path):
    """Issue 14 item 8: time_s was index / fps (a 7 s clip ended at 2.36 s) with a false 'ended early'."""
    times = np.cumsum([0] + [40] * 9 + [400] * 10 + [40] * 9)            # ms: 29 frames over 4.72 s
    foot = open_footage(write_clip(tmp_path / "vfr.mp4", len(times), times_ms=times))
    fr = frames_of(foot)
    assert foot.vfr and [i for i, _, _ in fr] == list(range(len(times)))
    assert np.allclose([t for _, t, _ in fr], times / 1000.0, atol=1e-3)
    assert fr[-1][1] == pytest.approx(4.72, abs=1e-3)          # index / mean fps would be 2.7 s
    assert not foot.source["truncated"] and foot.source["frames_damaged"] == 0


def test_rotation_metadata_is_honoured(tmp_path):
    """Issue 14 item 10: a phone clip shown upright by players (display matrix -90 = 90 deg clockwise)."""
    foot = open_footage(write_clip(tmp_path / "rot.mp4", 3, rotation=-90))
    assert foot.rotation == 270 and foot.size == (H, W)
    rgb = frames_of(foot)[0][2]
    assert rgb.shape == (W, H, 3)
    assert rgb[:6, -6:].mean() > 240 and rgb[-6:, :6].mean() < 100     # the top-left block is now top-right


def test_damaged_middle_keeps_every_frame_number(tmp_path):
    """Issue 14 item 3: an mp4 with a damaged middle kept 5 of 60 frames. Now every frame has a row (read or
    damaged) with its true number and time, and the frames after the damage are read."""
    clip = write_clip(tmp_path / "c.mp4", 60, gop=5)
    data = bytearray(clip.read_bytes())
    mid = len(data) // 2
    data[mid: mid + 600] = os.urandom(600)
    bad = tmp_path / "damaged.mp4"
    bad.write_bytes(bytes(data))
    foot = open_footage(bad)
    fr = frames_of(foot)
    got = [i for i, _, _ in fr]
    damaged = [i for i, _ in foot.damaged]
    assert sorted(got + damaged) == list(range(60)) and not set(got) & set(damaged)
    assert max(got) == 59 and len(got) >= 45          # frames after the damage are kept
    assert all(t == pytest.approx(i / 25) for i, t, _ in fr)
    assert all(abs(_grey(rgb) - _level(i)) < 12 for i, _, rgb in fr if i > 40)   # the right frames, in order
    s = foot.source
    assert s["frames_read"] + s["frames_damaged"] == 60 and s["frames_expected"] == 60


def test_truncated_video_is_recorded(tmp_path):
    """Issue 14 item 11: a truncated file gave exit 0 and a partial result that did not say so."""
    clip = write_clip(tmp_path / "c.mp4", 40)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(clip.read_bytes()[: int(clip.stat().st_size * 0.6)])
    foot = open_footage(cut)
    fr = frames_of(foot)
    s = foot.source
    assert s["truncated"] and s["frames_header"] == 40 and 0 < s["frames_read"] < 40
    assert [i for i, _, _ in fr] == list(range(len(fr)))


def test_image_folder_gap_keeps_true_numbers(tmp_path):
    """Issue 14 item 9: a missing number renumbered every later frame one early."""
    import cv2
    d = tmp_path / "frames"
    d.mkdir()
    for i in (1, 2, 3, 4, 6, 7, 8):                              # 5 is missing; numbering starts at 1
        cv2.imwrite(str(d / f"img_{i:04d}.png"), np.full((H, W, 3), _level(i), np.uint8))
    foot = open_footage(d)
    fr = frames_of(foot)
    assert [i for i, _, _ in fr] == [0, 1, 2, 3, 5, 6, 7]
    assert foot.damaged == [(4, pytest.approx(4 / 25))]
    assert foot.source["frames_expected"] == 8 and foot.source["frames_damaged"] == 1


def test_corrupt_image_in_the_middle_keeps_the_rest(tmp_path):
    """Issue 14 item 3: a corrupt PNG at #12 of 30 kept 12 frames and dropped the 17 good ones after it."""
    import cv2
    d = tmp_path / "frames"
    d.mkdir()
    for i in range(30):
        cv2.imwrite(str(d / f"{i:04d}.png"), np.full((H, W, 3), _level(i), np.uint8))
    (d / "0012.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    foot = open_footage(d)
    fr = frames_of(foot)
    assert [i for i, _, _ in fr] == [i for i in range(30) if i != 12]
    assert [i for i, _ in foot.damaged] == [12]
    s = foot.source
    assert (s["frames_expected"], s["frames_read"], s["frames_damaged"], s["damaged_frames"]) == (30, 29, 1, [12])


def test_focal_35mm_from_quicktime_metadata(tmp_path):
    key = "com.apple.quicktime.camera.focal_length.35mm_equivalent"
    foot = open_footage(write_clip(tmp_path / "phone.mov", 2, metadata={key: "26"}))
    assert foot.focal_35mm == 26.0 and foot.source["focal_35mm"] == 26.0
    assert open_footage(write_clip(tmp_path / "plain.mp4", 2)).focal_35mm is None


def test_focal_35mm_from_exif_of_an_image_folder(tmp_path):
    from PIL import Image
    d = tmp_path / "jpgs"
    d.mkdir()
    for i in range(2):
        im = Image.fromarray(np.full((H, W, 3), 100, np.uint8))
        exif = Image.Exif()
        exif.get_ifd(0x8769)[0xA405] = 28                        # FocalLengthIn35mmFilm
        im.save(d / f"{i:03d}.jpg", exif=exif)
    assert open_footage(d).focal_35mm == 28.0


# ---------------------------------------------------------------------------------------------- rows
class _EveryFrame:
    """A stand-in aligner: one valid point per frame (the frame's grey level), so rows can be checked."""

    name, scheme = "test", "custom"

    def track(self, frames, image_size, fps, progress=None, n_frames=None):
        from flamecap.landmarks.base import LandmarkTrack
        rows = [(i, t, float(rgb[H // 2, W // 2, 0])) for i, t, rgb in frames]
        n = len(rows)
        return LandmarkTrack(points=np.array([[[r[2], 0.0]] for r in rows], np.float32).reshape(n, 1, 2),
                             sigma=np.ones((n, 1), np.float32), valid=np.ones(n, bool),
                             visible=np.ones((n, 1), bool), frame_index=np.array([r[0] for r in rows]),
                             time_s=np.array([r[1] for r in rows]), image_size=image_size, fps=fps,
                             scheme=self.scheme)


def test_damaged_frames_become_invalid_rows(tmp_path):
    import cv2
    from flamecap.landmarks import track_footage
    d = tmp_path / "frames"
    d.mkdir()
    for i in range(10):
        cv2.imwrite(str(d / f"{i:04d}.png"), np.full((H, W, 3), _level(i), np.uint8))
    (d / "0004.png").write_bytes(b"not an image")
    (d / "0007.png").unlink()
    tr = track_footage(open_footage(d), _EveryFrame(), prefetch=2)
    assert tr.frame_index.tolist() == list(range(10))
    assert tr.valid.tolist() == [i not in (4, 7) for i in range(10)]
    assert np.isnan(tr.points[[4, 7]]).all() and np.allclose(tr.time_s, np.arange(10) / 25)
    assert tr.meta["footage"]["frames_damaged"] == 2


# ---------------------------------------------------------------------------------------------- caches
@pytest.fixture()
def model_npz(tmp_path):
    from flamecap.contract import save_model_npz
    from flamecap.flame.synthetic import make_synthetic_model
    return save_model_npz(tmp_path / "model.npz", make_synthetic_model(n_shape=10, n_expr=5, subdivisions=2))


def _cli(capsys, argv):
    try:
        rc = cli.main([str(a) for a in argv])
    except SystemExit as exc:
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def test_landmarks_cache_from_another_clip_is_refused(capsys, tmp_path, model_npz):
    """Issue 14 item 4: a cache of clip A was reused for clip B, labelled B but holding A's frames."""
    from flamecap.landmarks import track_footage
    a = write_clip(tmp_path / "a.mp4", 6)
    b = write_clip(tmp_path / "b.mp4", 8)
    cache = track_footage(open_footage(a), _EveryFrame()).save(tmp_path / "cache.npz")
    rc, out, err = _cli(capsys, ["track", b, "-o", tmp_path / "r.npz", "--model", model_npz,
                                 "--landmarks-cache", cache, "--progress", "none"])
    assert rc == 2 and err.count("\n") == 1 and "made from other footage" in err, err
    assert not (tmp_path / "r.npz").exists()
    # the same clip re-encoded identically is the same footage; a changed frame range is not
    rc, out, err = _cli(capsys, ["track", a, "-o", tmp_path / "r.npz", "--model", model_npz, "--start", "2",
                                 "--landmarks-cache", cache, "--progress", "none"])
    assert rc == 2 and "start 0 vs 2" in err, err


def test_landmarks_cache_without_provenance_is_refused(capsys, tmp_path, model_npz):
    from flamecap.landmarks.base import LandmarkTrack
    a = write_clip(tmp_path / "a.mp4", 4)
    n = 4
    old = LandmarkTrack(points=np.zeros((n, 1, 2), np.float32), sigma=np.ones((n, 1), np.float32),
                        valid=np.ones(n, bool), visible=np.ones((n, 1), bool), frame_index=np.arange(n),
                        time_s=np.arange(n) / 25.0, image_size=(W, H), fps=25.0, scheme="custom").save(
        tmp_path / "old.npz")
    rc, out, err = _cli(capsys, ["track", a, "-o", tmp_path / "r.npz", "--model", model_npz,
                                 "--landmarks-cache", old, "--progress", "none"])
    assert rc == 2 and "does not record the footage" in err, err


# ---------------------------------------------------------------------------------------------- registry
def test_registered_model_changed_after_registration_is_refused(capsys, tmp_path, model_npz):
    """Issue 14 item 5: only 'models verify' noticed a tampered registered model."""
    from flamecap.flame.io import add_model_file, load_model
    entry = add_model_file(model_npz, name="m")[0].entry
    load_model("m")
    with open(entry.path(), "r+b") as fh:
        fh.seek(200)
        b = fh.read(1)
        fh.seek(200)
        fh.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(ModelError, match="changed since it was registered"):
        load_model("m")
    with pytest.raises(ModelError, match="changed since it was registered"):
        load_model(None)                                   # the default model too


def test_registry_entries_cannot_escape_the_models_folder(capsys, tmp_path, model_npz):
    """Issue 14 item 6: 'models remove' followed ../ in registry.json and deleted a file outside."""
    from flamecap import paths
    from flamecap.flame.io import add_model_file, load_model
    add_model_file(model_npz, name="m")
    victim = paths.home() / "precious.npz"
    victim.write_bytes(b"keep me")
    reg = paths.models_dir() / "registry.json"
    raw = json.loads(reg.read_text())
    raw["models"][0]["file"] = "../precious.npz"
    reg.write_text(json.dumps(raw))
    with pytest.raises(ModelError, match="not a .npz inside the models folder"):
        load_model("m")
    rc, out, err = _cli(capsys, ["models", "verify", "m"])
    assert rc == 3 and "inside the models folder" in out
    rc, out, err = _cli(capsys, ["models", "remove", "m"])
    assert rc == 0 and "no file deleted" in out, out + err
    assert victim.read_bytes() == b"keep me"
    assert json.loads(reg.read_text())["models"] == []


def test_models_list_with_a_corrupt_registry_fails(capsys):
    from flamecap import paths
    paths.models_dir().mkdir(parents=True)
    (paths.models_dir() / "registry.json").write_text("{not json")
    for argv in (["models", "list"], ["models", "list", "--json"]):
        rc, out, err = _cli(capsys, argv)
        assert rc == 3 and err.startswith("error: model registry") and err.count("\n") == 1, (rc, out, err)


def test_readding_with_other_sizes_is_explicit(capsys, tmp_path):
    """Issue 14 item 7b: re-adding the same file with another --n-shape silently ignored the option."""
    sys.path.insert(0, str(Path(__file__).parent))
    from flame_pkl_fixtures import write_flame_pkl
    from flamecap.flame.registry import Registry
    pkl = write_flame_pkl(tmp_path / "generic_model.pkl")
    rc, out, err = _cli(capsys, ["models", "add", pkl, "--n-shape", "20"])
    assert rc == 0, err
    rc, out, err = _cli(capsys, ["models", "add", pkl, "--n-shape", "20"])
    assert rc == 0 and "already registered" in out
    rc, out, err = _cli(capsys, ["models", "add", pkl, "--n-shape", "10"])
    assert rc == 3 and "not the 10" in err and "--name" in err, err
    rc, out, err = _cli(capsys, ["models", "add", pkl, "--n-shape", "10", "--name", "small"])
    assert rc == 0, err
    assert sorted((e.name, e.n_shape) for e in Registry.load().entries)[-1] == ("small", 10)
    rc, out, err = _cli(capsys, ["models", "add", Registry.load().get("small").path(), "--n-shape", "5"])
    assert rc == 3 and "converted model" in err, err


def _add_in_subprocess(model: Path, name: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO / "core"), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "flamecap", "models", "add", str(model), "--name", name],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_registry_updates_are_locked(tmp_path):
    """Issue 14 item 7a: two concurrent 'models add' both said success but one entry was lost. An add waits
    for the lock a concurrent update holds, then adds to what that update wrote."""
    from flamecap.contract import save_model_npz
    from flamecap.flame.registry import Registry, RegistryEntry
    from flamecap.flame.synthetic import make_synthetic_model
    models = [save_model_npz(tmp_path / f"m{i}.npz", make_synthetic_model(n_shape=4 + i, n_expr=3, subdivisions=2))
              for i in range(3)]
    with Registry.locked() as reg:
        procs = [_add_in_subprocess(m, f"m{i}") for i, m in enumerate(models)]
        time.sleep(3.0)
        assert all(p.poll() is None for p in procs), "an add did not wait for the lock"
        reg.add(RegistryEntry(name="held", release="custom", file="held.npz", source_name="x", source_sha256="0" * 64,
                              npz_sha256="0" * 64, topology_hash="t", n_vertices=1, n_shape=1, n_expr=1))
        reg.save()
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert sorted(Registry.load().names()) == ["held", "m0", "m1", "m2"]
