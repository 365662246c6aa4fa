"""FBX round trip in headless Blender: export the FLAME rig (scene builder) and a retargeted ARKit character
with blender_addon.export_fbx.export_fbx, import the FBX into a fresh scene, and compare bone rotations
(world-space, rest-relative, so bone-axis conventions do not matter), shape-key values and the evaluated
mesh at sampled frames. Each scenario runs in a clean ``python3`` subprocess (this file's ``__main__``)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import run_scenario

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

pytestmark = pytest.mark.blender


def _run(name: str, args: dict, tmp_path: Path) -> dict:
    return run_scenario(name, args, tmp_path, script=Path(__file__))


def _write_source(path: Path, n_frames: int = 10):
    from flamecap.contract.result import save_result
    from flamecap.retarget.synthetic import tiny_head_model, make_result
    m = tiny_head_model(subdivisions=2, n_expr=6)
    t = np.linspace(0, 1, n_frames)[:, None]
    s = np.sin(2 * np.pi * t)
    res = make_result(m, expr=s * np.linspace(-1, 1, 6)[None], jaw_pose=np.hstack([0.15 + 0.1 * s, 0 * s, 0 * s]),
                      neck_pose=np.hstack([0.1 * s, 0.2 * s, 0.05 * s]), eye_pose=np.hstack([0.1 * s, 0.2 * s, 0 * s] * 2),
                      global_rot=np.hstack([0.05 * s, 0.3 * s, 0 * s]), eyelids=np.hstack([s.clip(0), (-s).clip(0)]),
                      fps=24.0)
    save_result(path, res)
    return res


@pytest.mark.slow
def test_fbx_roundtrip_flame_rig_and_character(tmp_path):
    _write_source(tmp_path / "take.npz")
    out = _run("roundtrip", {"result": str(tmp_path / "take.npz"), "fbx": str(tmp_path / "out.fbx"),
                             "fbx_char": str(tmp_path / "char.fbx")}, tmp_path)
    print("FBX round trip:", json.dumps(out))
    assert out["n_bones"] == 5 and out["n_keys_rig"] > 40
    assert out["max_bone_rot_diff_rad"] < 1e-3, out
    assert out["max_rig_key_diff"] < 1e-3, out
    assert out["max_vertex_diff_m"] < 1e-4, out
    assert out["n_keys_char"] == 4 and out["max_char_key_diff"] < 1e-3, out
    assert out["reimported_key_range"] == out["source_range"]   # no one-frame offset with the importer's defaults
    assert (tmp_path / "out.fbx").is_file() and not list(tmp_path.glob(".out.*"))


def test_fbx_export_errors(tmp_path):
    out = _run("errors", {"fbx": str(tmp_path / "bad.txt")}, tmp_path)
    assert "must end in .fbx" in out["suffix"]
    assert "nothing to export" in out["empty"]
    assert "unknown FBX preset" in out["preset"]
    assert not list(tmp_path.glob("*.fbx"))


# --------------------------------------------------------------------------------------------------
# scenarios (run inside the subprocess)
# --------------------------------------------------------------------------------------------------
def _bone_world_deltas(rig, frames):
    """{bone: (F, 3, 3)} world rotation of each posed bone relative to its rest (axis-convention free)."""
    import bpy
    out = {b.name: [] for b in rig.pose.bones}
    for f in frames:
        bpy.context.scene.frame_set(int(f))
        mw = np.array(rig.matrix_world)[:3, :3]
        for pb in rig.pose.bones:
            pose = mw @ np.array(pb.matrix)[:3, :3]
            rest = mw @ np.array(pb.bone.matrix_local)[:3, :3]
            pose /= np.linalg.norm(pose, axis=0, keepdims=True)
            rest /= np.linalg.norm(rest, axis=0, keepdims=True)
            out[pb.name].append(pose @ rest.T)
    return {k: np.array(v) for k, v in out.items()}


def _key_values(mesh, frames):
    import bpy
    kbs = mesh.data.shape_keys.key_blocks
    vals = {}
    for f in frames:
        bpy.context.scene.frame_set(int(f))
        for kb in kbs[1:]:
            vals.setdefault(kb.name, []).append(kb.value)
    return {k: np.array(v) for k, v in vals.items()}


def _world_vertices(obj):
    import bpy
    dg = bpy.context.evaluated_depsgraph_get()
    ev = obj.evaluated_get(dg)
    m = ev.to_mesh()
    co = np.empty(len(m.vertices) * 3, np.float32)
    m.vertices.foreach_get("co", co)
    ev.to_mesh_clear()
    mw = np.array(obj.matrix_world)
    return co.reshape(-1, 3).astype(np.float64) @ mw[:3, :3].T + mw[:3, 3]


def _rot_angle(a, b):
    """Largest rotation angle (rad) between matching rotations; via the chord, stable near 0."""
    chord = np.linalg.norm(a - b, axis=(1, 2)) / np.sqrt(8.0)   # = sin(θ/2) for rotations
    return float(np.max(2.0 * np.arcsin(np.clip(chord, 0.0, 1.0))))


def _character(scene_mod, anim_compat, result_path):
    """A shape-key character (subdivided, moved copy of a head) with 4 ARKit keys keyed from a retarget."""
    import bpy
    from flamecap.retarget import Correspondences, ShapeKeyTarget, retarget_shape_keys, SolveConfig
    from flamecap.retarget.synthetic import make_arkit_character, tiny_head_model
    m = tiny_head_model(subdivisions=2, n_expr=6)
    names = ["jawOpen", "eyeBlinkLeft", "mouthSmileLeft", "browInnerUp"]
    ch = make_arkit_character(m, names, n_frames=10, warp=0.0)
    tgt = ShapeKeyTarget(ch.vertices, ch.faces, names, ch.key_deltas, name="char")
    corr = Correspondences.from_vertices(ch.source, tgt, ch.flame_landmarks, ch.target_landmarks)
    anim = retarget_shape_keys(ch.source, tgt, corr, solve=SolveConfig(smooth=0.0))
    me = bpy.data.meshes.new("char")
    me.from_pydata(ch.vertices.tolist(), [], ch.faces.tolist())
    obj = bpy.data.objects.new("char", me)
    bpy.context.scene.collection.objects.link(obj)
    obj.shape_key_add(name="Basis", from_mix=False)
    for k, n in enumerate(names):
        kb = obj.shape_key_add(name=n, from_mix=False)
        kb.data.foreach_set("co", (ch.vertices + ch.key_deltas[k]).astype(np.float32).ravel())
    act = anim_compat.new_action("char_take")
    slot = anim_compat.assign(me.shape_keys, act, "char_keys")
    frames = np.arange(1, anim.weights.shape[0] + 1, dtype=np.float64)
    anim_compat.write_channels(act, slot, [(f'key_blocks["{n}"].value', 0, anim.weights[:, k])
                                           for k, n in enumerate(anim.names)], frames)
    return obj, frames


def s_roundtrip(a: dict) -> dict:
    sys.path.insert(0, str(REPO))
    import bpy
    from blender_addon import anim_compat, export_fbx, scene
    bpy.ops.wm.read_factory_settings(use_empty=True)
    imp = scene.import_result(a["result"], scene.ImportOptions(camera=False, background=False))
    frames = [imp.frame_start, (imp.frame_start + imp.frame_end) // 2, imp.frame_end - 1, imp.frame_end]
    ref_rot = _bone_world_deltas(imp.rig, frames)
    ref_keys = _key_values(imp.mesh, frames)
    ref_verts = []
    for f in frames:
        bpy.context.scene.frame_set(f)
        ref_verts.append(_world_vertices(imp.mesh))
    s = export_fbx.export_fbx(a["fbx"], [imp.rig], preset="blender")
    char, cframes = _character(scene, anim_compat, a["result"])
    bpy.context.scene.frame_start, bpy.context.scene.frame_end = 1, int(cframes[-1])
    ref_char = _key_values(char, cframes)
    export_fbx.export_fbx(a["fbx_char"], [char], preset="unity")

    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.import_scene.fbx(filepath=a["fbx"])  # the importer's defaults: keys land on their frames
    rig = next(o for o in bpy.data.objects if o.type == "ARMATURE")
    mesh = next(o for o in bpy.data.objects if o.type == "MESH")
    got_rot = _bone_world_deltas(rig, frames)
    got_keys = _key_values(mesh, frames)
    rot_diff = max(_rot_angle(ref_rot[b], got_rot[b]) for b in ref_rot)
    key_diff = max(float(np.max(np.abs(ref_keys[k] - got_keys[k]))) for k in ref_keys)
    vdiff = 0.0
    for i, f in enumerate(frames):
        bpy.context.scene.frame_set(f)
        vdiff = max(vdiff, float(np.max(np.linalg.norm(_world_vertices(mesh) - ref_verts[i], axis=1))))
    n_bones, n_keys_rig = len(rig.pose.bones), len(got_keys)
    rfc = anim_compat.fcurves(rig.animation_data.action)
    key_range = [min(fc.range()[0] for fc in rfc), max(fc.range()[1] for fc in rfc)]

    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.import_scene.fbx(filepath=a["fbx_char"])
    cm = next(o for o in bpy.data.objects if o.type == "MESH")
    got_char = _key_values(cm, cframes)
    char_diff = max(float(np.max(np.abs(ref_char[k] - got_char[k]))) for k in ref_char)
    return {"n_bones": n_bones, "n_keys_rig": n_keys_rig, "max_bone_rot_diff_rad": rot_diff,
            "max_rig_key_diff": key_diff, "max_vertex_diff_m": vdiff, "n_keys_char": len(got_char),
            "max_char_key_diff": char_diff, "frames": frames, "exported": s["objects"],
            "source_range": [imp.frame_start, imp.frame_end], "reimported_key_range": key_range}


def s_errors(a: dict) -> dict:
    sys.path.insert(0, str(REPO))
    import bpy
    from blender_addon import export_fbx
    bpy.ops.wm.read_factory_settings(use_empty=True)
    out = {}
    me = bpy.data.meshes.new("m")
    me.from_pydata([(0, 0, 0), (1, 0, 0), (0, 1, 0)], [], [(0, 1, 2)])
    obj = bpy.data.objects.new("m", me)
    bpy.context.scene.collection.objects.link(obj)
    for key, call in (("suffix", lambda: export_fbx.export_fbx(a["fbx"], [obj])),
                      ("empty", lambda: export_fbx.export_fbx(a["fbx"] + ".fbx", [])),
                      ("preset", lambda: export_fbx.export_fbx(a["fbx"] + ".fbx", [obj], preset="maya"))):
        try:
            call()
            out[key] = "no error"
        except export_fbx.FbxExportError as exc:
            out[key] = str(exc)
    return out


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "core"))
    name, args = sys.argv[1], json.loads(sys.argv[2])
    res = {"roundtrip": s_roundtrip, "errors": s_errors}[name](args)
    print("RESULT " + json.dumps(res, default=float), flush=True)
