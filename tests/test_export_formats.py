"""Live Link Face CSV, FLAME parameter export, and the export CLI (FBX via a headless-bpy subprocess)."""
from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest

from flamecap import export_formats as ef
from flamecap.cli import main
from flamecap.contract.result import save_result
from flamecap.retarget.synthetic import make_result, tiny_head_model


@pytest.fixture(scope="module")
def result():
    m = tiny_head_model(subdivisions=2, n_expr=4)
    T = 8
    s = np.sin(np.linspace(0, 3, T))[:, None]
    r = make_result(m, expr=s * [1, -1, 0.5, 0], jaw_pose=np.hstack([0.1 * s, 0 * s, 0 * s]),
                    neck_pose=np.hstack([0.1 * s, 0.2 * s, 0.05 * s]), eye_pose=np.hstack([0.1 * s, 0.2 * s, 0 * s] * 2),
                    global_rot=np.hstack([0 * s, 0.1 * s, 0 * s]), fps=30.0)
    r.arrays["valid"][3] = False
    r.arrays["expr"][3] = np.nan
    return r


def test_live_link_csv_header_and_roundtrip(tmp_path, result):
    assert ef.LLF_HEADER[:3] == ("Timecode", "BlendShapeCount", "EyeBlinkLeft")
    assert ef.LLF_HEADER[16:20] == ("JawForward", "JawRight", "JawLeft", "JawOpen")
    assert ef.LLF_HEADER[-9:] == ef.LLF_ROTATIONS and len(ef.LLF_HEADER) == 2 + 61
    T = result.n_frames
    rng = np.random.default_rng(0)
    ark = {"jawOpen": rng.uniform(size=T), "EyeBlink_L": rng.uniform(size=T)}
    take = ef.take_from_weights(ark, result["time_s"], result.fps, ef.result_rotations(result))
    p = ef.write_live_link_csv(tmp_path / "take.csv", take)
    lines = p.read_text().splitlines()
    assert lines[0].split(",") == list(ef.LLF_HEADER) and lines[1].startswith("00:00:00:00.000,61,")
    assert lines[2].startswith("00:00:00:01.000,61,")
    back = ef.read_live_link_csv(p, fps=30.0)
    np.testing.assert_allclose(back.weights, take.weights, atol=1e-6)
    np.testing.assert_allclose(back.rotations, take.rotations, atol=1e-6)
    np.testing.assert_allclose(back.time_s, result["time_s"] - result["time_s"][0], atol=1e-6)
    # head rotation columns decompose global_rot∘neck_pose exactly
    from flamecap.contract.conventions import axis_angle_to_matrix
    R = axis_angle_to_matrix(result["global_rot"].astype(float)) @ axis_angle_to_matrix(result["neck_pose"].astype(float))
    np.testing.assert_allclose(ef.matrix_from_euler_yxz(take.rotations[:, :3]), R, atol=1e-6)
    bad = tmp_path / "bad.csv"
    bad.write_text("frame,a\n1,2\n")
    with pytest.raises(ef.InputError, match="not a Live Link Face CSV"):
        ef.read_live_link_csv(bad)
    with pytest.raises(ef.InputError, match="not an ARKit"):
        ef.take_from_weights({"smile": np.zeros(T)}, result["time_s"], 30.0)


def test_params_npz_and_json(tmp_path, result):
    ef.write_params_npz(tmp_path / "p.npz", result)
    with np.load(tmp_path / "p.npz") as z:
        np.testing.assert_array_equal(z["jaw_pose"], result["jaw_pose"])
        assert "head_vertices" not in z.files
    ef.write_params_json(tmp_path / "p.json", result)
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["format"] == "flamecap.params" and len(doc["frames"]) == result.n_frames
    assert doc["frames"][3]["valid"] is False and doc["frames"][3]["expr"][0] is None
    np.testing.assert_allclose(doc["frames"][1]["neck_pose"], result["neck_pose"][1], atol=1e-7)


def test_export_cli(tmp_path, result, capsys):
    save_result(tmp_path / "take.npz", result)
    assert main(["export", str(tmp_path / "take.npz"), "--params-json", str(tmp_path / "p.json"),
                 "--params-npz", str(tmp_path / "p.npz")]) == 0
    assert (tmp_path / "p.json").is_file() and (tmp_path / "p.npz").is_file()
    rc = main(["export", str(tmp_path / "take.npz"), "--livelink-csv", str(tmp_path / "x.csv")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--anim" in err[0] and not (tmp_path / "x.csv").exists()
    # a Python without bpy → one-line error, no file
    nobpy = tmp_path / "nobpy"
    nobpy.mkdir()
    (nobpy / "bpy.py").write_text("raise ImportError('blocked for the test')\n")
    fake = tmp_path / "py.sh"
    fake.write_text(f"#!/bin/sh\nPYTHONPATH={nobpy} exec {sys.executable} \"$@\"\n")
    fake.chmod(0o755)
    rc = main(["export", str(tmp_path / "take.npz"), "--fbx", str(tmp_path / "o.fbx"), "--blender-python", str(fake)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "no bpy" in err[0] and not (tmp_path / "o.fbx").exists()


@pytest.mark.blender
@pytest.mark.skipif(importlib.util.find_spec("bpy") is None, reason="bpy not installed")
def test_export_cli_fbx_headless(tmp_path, result, capsys):
    save_result(tmp_path / "take.npz", result)
    assert main(["export", str(tmp_path / "take.npz"), "--fbx", str(tmp_path / "o.fbx"), "--preset", "unreal"]) == 0
    assert (tmp_path / "o.fbx").stat().st_size > 1000
