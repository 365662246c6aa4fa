"""``flamecap demo``: render FlameCap's synthetic head, track it, build scene.blend and an FBX — checked by
opening both in a clean bpy subprocess; without bpy the result is still written."""
from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from flamecap.cli import main

HAVE_BPY = importlib.util.find_spec("bpy") is not None

_INSPECT = r"""
import json, sys
import bpy
blend, fbx = sys.argv[1:3]
bpy.ops.wm.open_mainfile(filepath=blend)
head = bpy.data.objects["demo_head"]
cam = next(o for o in bpy.data.objects if o.type == "CAMERA")
rig = next(o for o in bpy.data.objects if o.type == "ARMATURE")
out = {"blend": {"head_vertices": len(head.data.vertices), "keys": len(head.data.shape_keys.key_blocks),
                 "parent": head.parent.name if head.parent else None, "rig_action": bool(rig.animation_data
                 and rig.animation_data.action), "camera_bg": [b.clip.name for b in cam.data.background_images
                 if b.clip], "scene_camera": bpy.context.scene.camera.name if bpy.context.scene.camera else None,
                 "frames": [bpy.context.scene.frame_start, bpy.context.scene.frame_end]}}
bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.import_scene.fbx(filepath=fbx)
meshes = [o for o in bpy.data.objects if o.type == "MESH"]
m = max(meshes, key=lambda o: len(o.data.vertices))
sk = m.data.shape_keys
anim_keys = 0
if sk is not None and sk.animation_data and sk.animation_data.action:
    act = sk.animation_data.action
    anim_keys = len(list(act.fcurves)) if hasattr(act, "fcurves") else sum(
        len(cb.fcurves) for layer in act.layers for strip in layer.strips for cb in strip.channelbags)
out["fbx"] = {"head_vertices": len(m.data.vertices), "keys": len(sk.key_blocks) if sk else 0,
              "animated_key_curves": anim_keys, "armatures": sum(o.type == "ARMATURE" for o in bpy.data.objects)}
print("INSPECT " + json.dumps(out))
"""


def _inspect(blend, fbx) -> dict:
    proc = subprocess.run([sys.executable, "-c", _INSPECT, str(blend), str(fbx)], capture_output=True, text=True,
                          timeout=300)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("INSPECT ")), None)
    assert proc.returncode == 0 and line, proc.stderr[-3000:]
    return json.loads(line[len("INSPECT "):])


def _check_result(out, n_frames):
    from flamecap.contract.result import load_result
    from flamecap.synth import load_ground_truth
    res = load_result(out / "result.npz")
    gt, _ = load_ground_truth(out / "footage" / "gt.npz")
    assert res.n_frames == n_frames
    valid = np.asarray(res["valid"], bool)
    assert valid.sum() >= n_frames - 1                         # MediaPipe finds the synthetic head
    assert float(np.nanmean(res["landmark_residual_px"][valid])) < 5.0  # the fit follows the landmarks
    assert res.meta["source"]["path"].endswith("clip.mp4")
    assert res["head_vertices"].shape == gt["vertices"].shape[1:]
    return res


@pytest.mark.slow
@pytest.mark.blender
@pytest.mark.skipif(not HAVE_BPY, reason="bpy (headless Blender) is not installed")
def test_demo_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--frames", "10", "--size", "256x192"]) == 0
    text = capsys.readouterr().out
    assert "scene.blend" in text and "head.fbx" in text
    assert int(re.search(r"(\d+)/10 frames tracked", text).group(1)) >= 9
    res = _check_result(out, 10)
    info = _inspect(out / "scene.blend", out / "head.fbx")
    b, f = info["blend"], info["fbx"]
    n_v = res["head_vertices"].shape[0]
    assert b["head_vertices"] == n_v and b["keys"] > 30 and b["rig_action"]
    assert b["camera_bg"] == ["clip.mp4"] and b["scene_camera"] and b["frames"] == [1, 10]
    assert f["head_vertices"] == n_v and f["keys"] > 30 and f["armatures"] == 1 and f["animated_key_curves"] > 0


@pytest.mark.slow
def test_demo_without_bpy_still_writes_the_result(tmp_path, capsys):
    # a Python whose 'import bpy' fails: the real interpreter with a blocking bpy module first on the path
    block = tmp_path / "block"
    block.mkdir()
    (block / "bpy.py").write_text("raise ImportError('bpy blocked for this test')\n")
    py = tmp_path / "python_without_bpy"
    py.write_text(f"#!/bin/sh\nPYTHONPATH={block} exec {sys.executable} \"$@\"\n")
    py.chmod(0o755)
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out), "--frames", "8", "--size", "224x168", "--blender-python", str(py)]) == 0
    text = capsys.readouterr().out
    notes = [ln for ln in text.splitlines() if "is not installed" in ln]
    assert len(notes) == 1 and "skipped" in notes[0]
    _check_result(out, 8)
    assert not (out / "scene.blend").exists() and not (out / "head.fbx").exists()


def test_demo_rejects_bad_arguments(tmp_path, capsys):
    assert main(["demo", "-o", str(tmp_path / "d"), "--frames", "1"]) == 2
    assert "--frames" in capsys.readouterr().err
    assert main(["demo", "-o", str(tmp_path / "d"), "--size", "big"]) == 2
    assert not (tmp_path / "d").exists()
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["demo", "-o", str(f), "--frames", "5"]) == 2


def test_demo_fetches_missing_face_models_once_and_says_so(tmp_path, monkeypatch):
    """The demo is a new user's first command: missing MediaPipe model files are fetched (announced), present
    ones are not touched. The fetch itself is replaced here (no network in tests)."""
    from flamecap import demo
    from flamecap.landmarks import mp_models
    calls, msgs = [], []
    monkeypatch.setattr(mp_models, "fetch", lambda *a, **k: calls.append(a) or [])
    demo.ensure_face_models(lambda stage, frac, msg: msgs.append(msg))
    assert calls == [] and msgs == []                     # the session's files are there: nothing to do
    monkeypatch.setenv(mp_models.DIR_ENV, str(tmp_path / "none"))
    demo.ensure_face_models(lambda stage, frac, msg: msgs.append(msg))
    assert len(calls) == 1 and len(msgs) == 1
    assert "flamecap models fetch-mediapipe" in msgs[0] and str(tmp_path / "none") in msgs[0]
