"""``flamecap bench``: the quick run writes a complete report with finite numbers; geometry helpers agree with
the renderer; bad inputs fail in one line without writing anything."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from flamecap import bench
from flamecap.cli import main


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def test_geometry_matches_renderer_and_ssme_of_truth_is_zero():
    from flamecap.contract.conventions import DEFAULT_CAM_R, DEFAULT_CAM_T, intrinsics_from_fov
    from flamecap.flame.synthetic import make_synthetic_model
    from flamecap.metrics import ssme
    from flamecap.render import project
    from flamecap.synth import SynthConfig, motion_sequence
    model = make_synthetic_model(n_shape=20, n_expr=10, subdivisions=3)
    params = motion_sequence(model, SynthConfig(n_frames=6, yaw_max_deg=45))
    verts = bench.fit_vertices(model, params, chunk=4)
    assert verts.shape == (6, model.n_vertices, 3)
    K = intrinsics_from_fov(320, 240, 35.0)
    cam = bench.to_camera(verts, DEFAULT_CAM_R, DEFAULT_CAM_T)
    uv = bench.project_points(cam, K)
    np.testing.assert_allclose(uv, project(cam, K), atol=1e-6)
    assert ssme(uv, uv).mean == 0.0
    # per-frame shape rows give the same mesh as one shared shape vector
    p2 = dict(params, shape=np.repeat(params["shape"][None], 6, 0))
    np.testing.assert_allclose(bench.fit_vertices(model, p2), verts, atol=1e-6)
    # barycentric points at a vertex corner are that vertex
    f = np.asarray(model.faces)[:3]
    pts = bench.bound_points(verts, model.faces, np.arange(3), np.eye(3))
    np.testing.assert_allclose(pts, verts[:, np.diag(f)], atol=1e-9)
    # head rotation composes root and neck
    R = bench.head_rotation(params["global_rot"], np.zeros_like(params["neck_pose"]))
    from flamecap.contract.conventions import axis_angle_to_matrix
    np.testing.assert_allclose(R, axis_angle_to_matrix(params["global_rot"]), atol=1e-9)


def test_bad_inputs_fail_without_output(tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["bench", "-o", str(out), "--quick", "--grid", str(tmp_path / "nope")]) == 2
    assert "--grid" in capsys.readouterr().err
    assert main(["bench", "-o", str(out), "--quick", "--baseline", str(tmp_path / "nope.py")]) == 2
    assert "baseline" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["bench", "-o", str(out), "--quick", "--grid", str(tmp_path / "empty")]) == 2
    assert not out.exists()


@pytest.mark.slow
def test_quick_bench_report(tmp_path, capsys):
    out = tmp_path / "rep"
    assert main(["bench", "-o", str(out), "--quick", "--progress", "none"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["format"] == bench.REPORT_FORMAT and rep["quick"] is True
    md = (out / "report.md").read_text()
    assert "| FlameCap fast |" in md and "| per-frame Adam baseline |" in md
    for name in rep["plots"]:
        p = out / name
        assert p.is_file() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any(n.endswith("_overlay.png") for n in rep["plots"])
    assert any(n.endswith("_over_time.png") for n in rep["plots"])
    # synthetic: every method, every metric finite; SSME on the gaps the clip allows
    (clip,) = rep["synthetic"]["clips"]
    assert clip["n_frames"] == 10 and clip["yaw_max_deg"] == 45
    assert set(clip["methods"]) == {"fast", "production", "adam"}
    for m, v in clip["methods"].items():
        assert set(v["ssme_px"]) == {"1", "2", "4", "8"}, m
        for key in ("ssme_mean_px", "vertex_error_mm", "jaw_error_deg", "head_rot_error_deg", "focal_error_rel",
                    "landmark_residual_px", "fit_s", "fit_fps"):
            assert _finite(v[key]) and v[key] >= 0, (m, key, v[key])
        assert all(_finite(x) for x in v["ssme_px"].values())
        assert v["valid_frames"] >= 9
    # speed: every method and the ratio vs the baseline
    sp = rep["speed"]
    assert _finite(sp["landmarks_fps"]) and sp["landmarks_fps"] > 0
    for m in ("fast", "production"):
        assert _finite(sp["methods"][m]["fit_fps"]) and _finite(sp["methods"][m]["speed_ratio_vs_adam"])
        assert _finite(sp["methods"][m]["end_to_end_fps"])
    # real footage when the GRID clips are present
    if bench.DEFAULT_GRID.is_dir():
        (rc,) = rep["real"]["clips"]
        assert rc["valid_frames"] >= 9 and _finite(rc["raw_jitter_px"])
        for m, v in rc["methods"].items():
            for key in ("jitter_px", "jitter_ratio_vs_raw", "nme"):
                assert _finite(v[key]), (m, key)
            assert 0 < v["nme"] < 0.5
            assert isinstance(v["lag_frames"], int)
    else:
        assert rep["real"]["skipped"]
