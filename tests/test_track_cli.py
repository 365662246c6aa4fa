"""CLI: flamecap fit / smooth on synthetic landmarks (result valid, JSON-lines events, atomic, errors), and
flamecap track on a GRID clip when ../shared/data is present."""
from __future__ import annotations


import numpy as np
import pytest

from flamecap.cli import main
from flamecap.contract.events import parse_event
from flamecap.contract.model_format import save_model_npz
from flamecap.contract.result import load_result
from flamecap.fit.synthetic import make_clip
from flamecap.flame.synthetic import make_synthetic_model


@pytest.fixture(scope="module")
def model_and_landmarks(tmp_path_factory):
    d = tmp_path_factory.mktemp("fitcli")
    model = make_synthetic_model(n_shape=10, n_expr=8, subdivisions=3)
    mpath = save_model_npz(d / "head.npz", model)
    from flamecap.binding.vertices import vertex_binding
    b = vertex_binding(model)
    clip = make_clip(model, b, n_frames=6, n_shape=8, n_expr=6, outlier_frac=0.0, seed=3)
    track = clip.track
    full = np.full((6, model.n_vertices, 2), np.nan, np.float32)
    full[:, b.point_index] = track.points
    track.points = full
    track.sigma = np.ones((6, model.n_vertices), np.float32)
    track.visible = np.zeros((6, model.n_vertices), bool)
    track.visible[:, b.point_index] = model["v_template"][b.point_index, 2] > 0.03   # front only
    track.scheme = "vertices"
    lpath = track.save(d / "lmk.npz")
    return d, mpath, lpath


def test_fit_cli_jsonl_and_smooth(model_and_landmarks, capsys):
    d, mpath, lpath = model_and_landmarks
    out = d / "res.npz"
    code = main(["fit", str(lpath), "-o", str(out), "--model", str(mpath), "--progress", "jsonl"])
    assert code == 0
    events = [e for e in map(parse_event, capsys.readouterr().out.splitlines()) if e]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and "progress" in kinds
    assert all(0 <= e["fraction"] <= 1 for e in events if e["event"] == "progress")
    assert any(e.get("stage") == "refine" for e in events)
    r = load_result(out)
    assert r.n_frames == 6 and r["valid"].all() and np.nanmean(r["landmark_residual_px"]) < 2.0
    assert r.meta["quality"] == "fast" and r.meta["aligner"] and r.meta["focal_source"] == "estimated"
    sm = d / "sm.npz"
    assert main(["smooth", str(out), "-o", str(sm), "--strength", "2", "--progress", "none"]) == 0
    s = load_result(sm)
    assert s.meta["smoothing"]["strength"] == 2.0 and s["expr"].shape == r["expr"].shape


def test_fit_cli_errors_leave_no_output(model_and_landmarks, tmp_path, capsys):
    d, mpath, lpath = model_and_landmarks
    out = tmp_path / "x.npz"
    assert main(["fit", str(tmp_path / "missing.npz"), "-o", str(out), "--model", str(mpath)]) == 2
    from flamecap.landmarks.base import LandmarkTrack
    t = LandmarkTrack.load(lpath)
    t.points[:] = np.nan
    t.valid[:] = False
    bad = t.save(tmp_path / "nan.npz")
    code = main(["fit", str(bad), "-o", str(out), "--model", str(mpath), "--progress", "jsonl"])
    assert code != 0 and not out.exists()
    err = [e for e in map(parse_event, capsys.readouterr().out.splitlines()) if e and e["event"] == "error"]
    assert err and "\n" not in err[0]["message"]
    assert list(tmp_path.glob(".x.npz*")) == []


@pytest.mark.slow
def test_track_grid_clip(grid_dir, flame_reference_dir, tmp_path):
    from flamecap.flame.synthetic import flame_reference_head
    mpath = save_model_npz(tmp_path / "head.npz", flame_reference_head(flame_reference_dir))
    out = tmp_path / "grid.npz"
    code = main(["track", str(grid_dir / "bbaf2n.mpg"), "-o", str(out), "--model", str(mpath),
                 "--end", "30", "--progress", "none"])
    assert code == 0
    r = load_result(out)
    assert r.n_frames == 30 and r["valid"].all()
    assert np.nanmean(r["landmark_residual_px"]) < 1.5     # px on 360x288 (inter-ocular ≈ 60 px)
    assert (r["transl"][:, 2] < 0).all()


@pytest.fixture(scope="module")
def tiny_footage(tmp_path_factory):
    import cv2
    d = tmp_path_factory.mktemp("frames")
    for i in range(3):
        img = np.full((48, 64, 3), 40 * i, np.uint8)
        cv2.imwrite(str(d / f"{i:04d}.png"), img)
    return d


@pytest.mark.parametrize("extra", [["--aligner", "dense"], ["--aligner", "dense", "--weights", "MISSING"],
                                   ["--identity", "mica"], ["--identity", "mica", "--identity-weights", "MISSING"]])
def test_track_weight_paths_fail_one_line(model_and_landmarks, tiny_footage, tmp_path, capsys, extra):
    """`track --aligner dense [--weights W]` and `--identity mica [--identity-weights W]` exist and, without
    weights, stop with one actionable line before any landmark work, leaving no output."""
    d, mpath, lpath = model_and_landmarks
    out = tmp_path / "r.npz"
    args = [a if a != "MISSING" else str(tmp_path / "nope.safetensors") for a in extra]
    code = main(["track", str(tiny_footage), "-o", str(out), "--model", str(mpath), "--progress", "jsonl"] + args)
    events = [e for e in map(parse_event, capsys.readouterr().out.splitlines()) if e]
    assert code != 0 and not out.exists()
    err = [e for e in events if e["event"] == "error"]
    assert len(err) == 1 and "\n" not in err[0]["message"] and "weights" in err[0]["message"].lower()
    assert not any(e.get("stage") == "landmarks" for e in events if e["event"] == "progress")


def test_lens_sources_and_their_order():
    """--focal, then a lens in mm over the sensor width, then the footage's 35 mm equivalent (over the
    diagonal, as EXIF and phone metadata define it), else the fitter estimates it."""
    import math

    from flamecap.commands.track import TrackOptions, lens_focal
    from flamecap.errors import InputError
    assert lens_focal(TrackOptions(focal=1200.0), (1920, 1080), 26.0) == (1200.0, "given")
    f, src = lens_focal(TrackOptions(lens_mm=50.0, sensor_mm=36.0), (1920, 1080), 26.0)
    assert src == "lens" and f == pytest.approx(50 / 36 * 1920)
    f, src = lens_focal(TrackOptions(), (1920, 1080), 26.0)
    assert src == "metadata" and f == pytest.approx(26.0 * math.hypot(1920, 1080) / 43.27)
    assert lens_focal(TrackOptions(), (1920, 1080), None) == (None, "estimated")
    with pytest.raises(InputError, match="go together"):
        TrackOptions(lens_mm=50.0)
    with pytest.raises(InputError, match="not both"):
        TrackOptions(lens_mm=50.0, sensor_mm=36.0, focal=1000.0)
    with pytest.raises(InputError, match="positive"):
        TrackOptions(lens_mm=-5.0, sensor_mm=36.0)
