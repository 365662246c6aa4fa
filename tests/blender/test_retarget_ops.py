"""Retarget operators in real headless Blender (bpy 5.0), each scenario in a clean ``python3`` subprocess
(this file's ``__main__``): the shape-key retarget end to end (character in the scene → operator → the core's
``retarget shapekeys`` → keyed F-curves, compared with the core solve), the FLAME-head take copy (identity
swap in the scene, compared with the core's swap + skinning), the Live Link Face CSV import, and the bone
copy onto a Rigify-named armature. Bad targets give one-line operator errors and leave the scene unchanged."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import run_scenario

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]

pytestmark = pytest.mark.blender

KEYS = ["jawOpen", "eyeBlinkLeft", "mouthSmileLeft", "browInnerUp", "mouthFunnel", "cheekPuff"]


def _run(name: str, args: dict, tmp_path: Path) -> dict:
    return run_scenario(name, args, tmp_path, script=Path(__file__))


def _one_line_errors(out: dict, keys, must_contain: dict):
    for k in keys:
        msg = out[k]["error"]
        assert msg != "no error" and "\n" not in msg.strip(), (k, msg)
        assert must_contain[k] in msg, (k, msg)
        assert out[k]["unchanged"], (k, out[k])


def test_shapekey_retarget_operator_matches_core(tmp_path):
    from flamecap.contract.result import save_result
    from flamecap.retarget import Correspondences, ShapeKeyTarget, SolveConfig, retarget_shape_keys
    from flamecap.retarget.synthetic import make_arkit_character, tiny_head_model
    m = tiny_head_model(subdivisions=2, n_expr=8)
    ch = make_arkit_character(m, KEYS, n_frames=10, warp=0.03)
    save_result(tmp_path / "take.npz", ch.source)
    np.savez(tmp_path / "char.npz", vertices=ch.vertices, faces=ch.faces, deltas=ch.key_deltas,
             flame=ch.flame_landmarks, target=ch.target_landmarks)
    out = _run("shapekeys", {"result": str(tmp_path / "take.npz"), "char": str(tmp_path / "char.npz"),
                             "names": KEYS}, tmp_path)
    tgt = ShapeKeyTarget(ch.vertices, ch.faces, KEYS, ch.key_deltas, name="Character")
    ref = retarget_shape_keys(ch.source, tgt, Correspondences.from_vertices(ch.source, tgt, ch.flame_landmarks,
                                                                            ch.target_landmarks),
                              solve=SolveConfig(smooth=0.05))
    assert out["status"] == ["FINISHED"] and out["keyed_names"] == ref.names
    got = np.array(out["values"])                                       # (T, K) evaluated F-curves
    assert out["frames"] == list(range(1, 11))
    diff = np.abs(got - ref.weights).max()
    truth = np.abs(got - ch.weights)
    print(f"operator vs core solve: max |Δw| {diff:.2e}; vs true weights: mean {truth.mean():.4f} "
          f"max {truth.max():.4f}")
    assert diff < 2e-3
    assert truth.mean() < 0.05 and truth.max() < 0.2   # a coarse 162-vertex head (quality: test_retarget*)
    assert out["n_keys_per_fcurve"] == [10]
    _one_line_errors(out, ["no_keys", "not_face", "not_mesh", "flame_head"],
                     {"no_keys": "has no shape keys", "not_face": "does not look like a face",
                      "not_mesh": "pick the character's mesh", "flame_head": "FlameCap head itself"})
    assert not out["temp_left"]
    # progress from the core while it ran (the runner the Track button uses), ending complete
    stages = {st for st, _ in out["progress"] if st}
    fractions = [f for _, f in out["progress"]]
    assert {"calibrate", "solve"} <= stages and fractions[-1] == 1.0, out["progress"]
    assert any(0.0 < f < 1.0 for f in fractions), out["progress"]
    # mapping table: a row per channel, defaults drive the key of the same name; edits re-key without solving
    assert out["rows"] == [[n, n, True, 1.0] for n in KEYS]
    from flamecap.contract import apply_mapping
    raw = np.array(out["raw"])
    mapping = {"jawOpen": {"gain": 0.5}, "mouthSmileLeft": {"target": "cheekPuff"},
               "browInnerUp": {"enabled": False}, "eyeBlinkLeft": {"upper": 0.3}, "mouthFunnel": {"smooth": 1.0}}
    names, want = apply_mapping(KEYS, raw, mapping, out["fps"])
    assert out["rekey_status"] == ["FINISHED"] and sorted(out["rekeyed"]) == sorted(names)
    for k, n in enumerate(names):
        np.testing.assert_allclose(out["rekeyed"][n], want[:, k], atol=1e-5, err_msg=n)
    assert max(out["rekeyed"]["eyeBlinkLeft"]) <= 0.3 + 1e-6
    # neutral frame 3: its solved values key to the offsets (0), the rest relative to it
    _, want_n = apply_mapping(KEYS, raw, mapping, out["fps"], neutral=raw[2])
    assert out["neutral_status"] == ["FINISHED"] and out["neutral_frame"] == 3
    for k, n in enumerate(names):
        np.testing.assert_allclose(out["neutral_keyed"][n], want_n[:, k], atol=1e-5, err_msg=n)
    assert out["clear_status"] == ["FINISHED"] and out["neutral_cleared"] == -1
    assert "outside the take" in out["neutral_outside"]["error"] and out["neutral_outside"]["unchanged"]
    assert out["neutral_after_bad"] == -1
    for drawn in (["template_list", "flamecap_channels"], ["prop_search", "target"],
                  ["operator", "flamecap.set_neutral_frame"], ["operator", "flamecap.rekey_shapekeys"]):
        assert drawn in out["panel"], (drawn, out["panel"])
    # cancel mid-run: the core is stopped and the scene (keys, actions) is as it was
    assert out["cancel_status"] == ["CANCELLED"] and out["cancel_scene_status"] == "cancelled"
    assert out["cancel_unchanged"]


def test_flame_head_copy_and_bones_onto_rigify(tmp_path):
    from flamecap.contract.result import save_result
    from flamecap.retarget.synthetic import make_result, tiny_head_model
    m = tiny_head_model(subdivisions=2, n_expr=6)
    T = 8
    s = np.sin(np.linspace(0, 2 * np.pi, T))[:, None]
    z = 0 * s
    a = make_result(m, np.zeros(m.n_shape), expr=s * np.linspace(-1, 1, 6)[None],
                    jaw_pose=np.hstack([0.2 + 0.1 * s, z, 0.05 * s]), neck_pose=np.hstack([0.1 * s, 0.25 * s, z]),
                    eye_pose=np.hstack([0.1 * s, 0.2 * s, z, 0.1 * s, 0.15 * s, z]),
                    global_rot=np.hstack([z, 0.2 * s, z]), eyelids=np.hstack([s.clip(0), (-s).clip(0)]),
                    transl=np.hstack([0.01 * s, z, z - 0.5]))
    b = make_result(m, np.linspace(-1.5, 1.5, m.n_shape), n_frames=2)
    save_result(tmp_path / "actor.npz", a)
    save_result(tmp_path / "other.npz", b)
    out = _run("flame_and_bones", {"src": str(tmp_path / "actor.npz"), "dst": str(tmp_path / "other.npz")},
               tmp_path)
    print("FLAME head copy / bones:", json.dumps({k: v for k, v in out.items() if "err" in k}))
    assert out["copy_status"] == ["FINISHED"]
    assert out["copy_vertex_err_m"] < 1e-4, out        # target identity, actor's motion (core swap + skinning)
    assert out["copy_target_neutral_kept"]
    assert out["bones_status"] == ["FINISHED"] and out["bones_keyed"] == ["MCH-eye.L", "MCH-eye.R", "head", "jaw_master"]
    assert out["bone_rot_err_rad"] < 1e-4, out
    assert out["jaw_moved_rad"] > 0.1
    _one_line_errors(out, ["copy_not_flame", "bones_not_armature", "bones_no_match"],
                     {"copy_not_flame": "select the FlameCap head", "bones_not_armature": "pick an armature",
                      "bones_no_match": "none of the bones"})


def test_live_link_csv_operator(tmp_path):
    from flamecap.export_formats import take_from_weights, write_live_link_csv
    T, fps = 61, 60.0
    t = np.arange(T) / fps
    w = {"eyeBlinkLeft": 0.5 + 0.5 * np.sin(2 * np.pi * t), "jawOpen": np.clip(t, 0, 1),
         "mouthSmileRight": 0.3 * np.ones(T)}
    write_live_link_csv(tmp_path / "take.csv", take_from_weights(w, t + 3600.0, fps))
    (tmp_path / "bad.csv").write_text("Timecode,BlendShapeCount,EyeBlinkLeft\n01:00:00:xx,61,0.5\n")
    (tmp_path / "other.csv").write_text("name,value\na,1\n")
    out = _run("live_link", {"csv": str(tmp_path / "take.csv"), "bad": str(tmp_path / "bad.csv"),
                             "other": str(tmp_path / "other.csv")}, tmp_path)
    assert out["status"] == ["FINISHED"]
    # keys named with variants: EyeBlink_L, JawOpen, mouthSmile_R; scene at 30 fps, frame_start 1
    assert sorted(out["values"]) == ["EyeBlink_L", "JawOpen", "mouthSmile_R"]
    frames = np.array(out["frames"])
    ts = (frames - 1) / 30.0
    assert frames[0] == 1 and frames[-1] == 31
    for name, key in (("EyeBlink_L", "eyeBlinkLeft"), ("JawOpen", "jawOpen"), ("mouthSmile_R", "mouthSmileRight")):
        np.testing.assert_allclose(out["values"][name], np.interp(ts, t, w[key]), atol=1e-4, err_msg=name)
    assert out["untouched_key_animated"] is False
    _one_line_errors(out, ["bad", "other", "no_keys"],
                     {"bad": "bad timecode or value", "other": "not a Live Link Face CSV",
                      "no_keys": "ARKit-named shape keys"})


# --------------------------------------------------------------------------------------------------
# scenarios (run inside the subprocess)
# --------------------------------------------------------------------------------------------------
def _setup():
    sys.path.insert(0, str(REPO))
    import bpy
    bpy.ops.wm.read_factory_settings(use_empty=True)
    import blender_addon
    blender_addon.register()
    return bpy


def _state():
    """What an operator must not change when it fails: objects, actions, animation data, key values."""
    import bpy
    st = {"objects": sorted(o.name for o in bpy.data.objects), "actions": sorted(a.name for a in bpy.data.actions)}
    for o in bpy.data.objects:
        ad = o.animation_data
        st["ad_" + o.name] = None if ad is None or ad.action is None else ad.action.name
        if o.type == "MESH" and o.data.shape_keys is not None:
            kad = o.data.shape_keys.animation_data
            st["kad_" + o.name] = None if kad is None or kad.action is None else kad.action.name
            st["kv_" + o.name] = [round(kb.value, 6) for kb in o.data.shape_keys.key_blocks]
    return st


def _try(op, **kw) -> dict:
    before = _state()
    try:
        r = op(**kw)
        msg = "no error" if r != {"CANCELLED"} else "cancelled without a message"
    except RuntimeError as exc:
        msg = str(exc).strip()
        msg = msg[len("Error: "):] if msg.startswith("Error: ") else msg
    return {"error": msg, "unchanged": _state() == before}


def _activate(obj):
    import bpy
    for o in bpy.context.scene.objects:
        o.select_set(False)
    if obj is not None:
        obj.select_set(True)
    bpy.context.view_layer.objects.active = obj


def _mesh(name, verts, faces, keys=None):
    import bpy
    me = bpy.data.meshes.new(name)
    me.from_pydata(np.asarray(verts).tolist(), [], np.asarray(faces).tolist())
    obj = bpy.data.objects.new(name, me)
    bpy.context.scene.collection.objects.link(obj)
    if keys:
        obj.shape_key_add(name="Basis", from_mix=False)
        for n, d in keys.items():
            kb = obj.shape_key_add(name=n, from_mix=False)
            kb.data.foreach_set("co", (np.asarray(verts) + d).astype(np.float32).ravel())
    return obj


def _key_curves(obj, names, frames):
    import bpy
    from blender_addon import anim_compat
    kad = obj.data.shape_keys.animation_data
    slot = kad.action_slot if anim_compat.SLOTTED else None
    vals, counts = {}, set()
    for n in names:
        fc = anim_compat.find_fcurve(kad.action, slot, f'key_blocks["{n}"].value', 0)
        if fc is not None:
            vals[n] = [fc.evaluate(float(f)) for f in frames]
            counts.add(len(fc.keyframe_points))
    # and what the scene evaluates
    bpy.context.scene.frame_set(int(frames[0]))
    return vals, sorted(counts)


def s_shapekeys(a: dict) -> dict:
    bpy = _setup()
    import glob
    import tempfile
    import trimesh
    from blender_addon import operators, retarget, scene
    from blender_addon._contract import contract
    from scenarios import MockLayout
    scene.import_result(a["result"], scene.ImportOptions(camera=False, background=False))
    z = np.load(a["char"])
    names = a["names"]
    char = _mesh("Character", z["vertices"], z["faces"], {n: z["deltas"][k] for k, n in enumerate(names)})
    # the object is rotated and scaled in the scene: the export goes to world space
    import mathutils
    char.matrix_world = (mathutils.Matrix.Translation((1.0, 2.0, 0.5)) @ mathutils.Matrix.Rotation(0.4, 4, "Z")
                         @ mathutils.Matrix.Scale(0.5, 4))
    char[retarget.PROP_PAIRS_FLAME] = [int(i) for i in z["flame"]]
    char[retarget.PROP_PAIRS_TARGET] = [int(i) for i in z["target"]]
    out = {}
    n_tmp = len(glob.glob(os.path.join(tempfile.gettempdir(), "flamecap_rt_*")))
    # bad targets first: the scene must not change
    cube = _mesh("Cube", [(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1)], [(0, 1, 2), (0, 1, 3), (0, 2, 3), (1, 2, 3)])
    _activate(cube)
    out["no_keys"] = _try(bpy.ops.flamecap.retarget_shapekeys)
    torus = trimesh.creation.torus(major_radius=0.3, minor_radius=0.1)
    tv = np.asarray(torus.vertices)
    tor = _mesh("Torus", tv, np.asarray(torus.faces), {"jawOpen": np.tile([0.0, 0.0, 0.01], (len(tv), 1))})
    tor[retarget.PROP_PAIRS_FLAME] = [int(i) for i in z["flame"]]
    tor[retarget.PROP_PAIRS_TARGET] = [int(i) * 7 % len(tv) for i in range(len(z["flame"]))]
    _activate(tor)
    out["not_face"] = _try(bpy.ops.flamecap.retarget_shapekeys)
    empty = bpy.data.objects.new("Empty", None)
    bpy.context.scene.collection.objects.link(empty)
    _activate(empty)
    out["not_mesh"] = _try(bpy.ops.flamecap.retarget_shapekeys)
    rig = next(o for o in bpy.data.objects if o.get("flamecap_result"))
    _activate(rig["flamecap_mesh"])
    out["flame_head"] = _try(bpy.ops.flamecap.retarget_shapekeys)
    # the character
    _activate(char)
    progress = []
    set_status = operators._set_status

    def record(settings, state):
        progress.append([state.stage, round(state.fraction, 3)])
        set_status(settings, state)
    operators._set_status = record
    out["status"] = sorted(bpy.ops.flamecap.retarget_shapekeys(smooth=0.05))
    operators._set_status = set_status
    frames = list(range(1, 11))
    vals, counts = _key_curves(char, names, frames)
    out["keyed_names"] = [n for n in names if n in vals]
    out["values"] = np.array([vals[n] for n in out["keyed_names"]]).T.tolist()
    out["frames"] = frames
    out["n_keys_per_fcurve"] = counts
    out["progress"] = progress
    # the mapping table: one row per solved channel; edits re-key without a solve
    rows = char.flamecap_channels
    out["rows"] = [[r.source, r.target, r.enabled, r.gain] for r in rows]
    anim, meta = contract.load_animation(char[retarget.PROP_ANIM])
    out["raw"], out["fps"] = anim["raw"].tolist(), float(meta["fps"])
    rows[names.index("jawOpen")].gain = 0.5
    rows[names.index("mouthSmileLeft")].target = "cheekPuff"     # two channels onto one key add up
    rows[names.index("browInnerUp")].enabled = False
    rows[names.index("eyeBlinkLeft")].upper = 0.3
    rows[names.index("mouthFunnel")].smooth = 1.0
    out["rekey_status"] = sorted(bpy.ops.flamecap.rekey_shapekeys())
    vals, _ = _key_curves(char, names, frames)
    out["rekeyed"] = {n: vals[n] for n in vals}
    bpy.context.scene.frame_set(3)
    out["neutral_status"] = sorted(bpy.ops.flamecap.set_neutral_frame())
    vals, _ = _key_curves(char, names, frames)
    out["neutral_keyed"] = {n: vals[n] for n in vals}
    out["neutral_frame"] = char.flamecap_neutral_frame
    out["clear_status"] = sorted(bpy.ops.flamecap.set_neutral_frame(clear=True))
    out["neutral_cleared"] = char.flamecap_neutral_frame
    bpy.context.scene.frame_set(999)
    out["neutral_outside"] = _try(bpy.ops.flamecap.set_neutral_frame)
    out["neutral_after_bad"] = char.flamecap_neutral_frame
    log = []
    retarget.draw_panel(MockLayout(log), bpy.context)
    retarget.FLAMECAP_UL_channels.draw_item(None, bpy.context, MockLayout(log), char, rows[0], 0, char,
                                            "flamecap_channel_index")
    out["panel"] = [x for x in log if x[0] in ("operator", "template_list", "prop_search")]
    # cancel: the core is stopped, nothing is keyed, the last solve stays
    before = _state()
    out["cancel_status"] = sorted(bpy.ops.flamecap.retarget_shapekeys(blocking=True, timeout=0.2))
    out["cancel_scene_status"] = bpy.context.scene.flamecap.status
    out["cancel_unchanged"] = _state() == before
    out["temp_left"] = len(glob.glob(os.path.join(tempfile.gettempdir(), "flamecap_rt_*"))) > n_tmp
    return out


def _bone_local_world(rig, bone, frames):
    """The pose-bone rotation (matrix_basis) expressed in world axes around the bone's rest: (F, 3, 3)."""
    import bpy
    mw = np.array(rig.matrix_world)[:3, :3]
    rest = mw @ np.array(rig.data.bones[bone].matrix_local)[:3, :3]
    U, _, Vt = np.linalg.svd(rest)
    rest = U @ Vt
    out = []
    for f in frames:
        bpy.context.scene.frame_set(int(f))
        Rb = np.array(rig.pose.bones[bone].matrix_basis)[:3, :3]
        out.append(rest @ Rb @ rest.T)
    return np.array(out)


def _rigify_like_armature():
    """An armature with Rigify's control names, bones pointing and rolled unlike FlameCap's, the object
    rotated (as after an FBX import)."""
    import bpy
    import mathutils
    arm = bpy.data.armatures.new("Rigify")
    obj = bpy.data.objects.new("RIG-character", arm)
    bpy.context.scene.collection.objects.link(obj)
    obj.rotation_euler = (0.3, 0.0, 0.5)
    obj.scale = (0.01, 0.01, 0.01)
    bpy.context.view_layer.objects.active = obj
    bpy.ops.object.mode_set(mode="EDIT")
    eb = arm.edit_bones
    spine = eb.new("spine.004")
    spine.head, spine.tail, spine.roll = (0, 0, 140), (0, 1, 150), 0.2
    head = eb.new("head")
    head.head, head.tail, head.roll, head.parent = (0, 1, 150), (0, 2, 170), 0.3, spine
    jaw = eb.new("jaw_master")
    jaw.head, jaw.tail, jaw.roll, jaw.parent = (0, 2, 158), (0, -6, 152), -0.7, head
    for side, x in (("L", 3.2), ("R", -3.2)):
        e = eb.new(f"MCH-eye.{side}")
        e.head, e.tail, e.roll, e.parent = (x, -7, 162), (x, -9, 162), 1.1 if side == "L" else -0.4, head
    bpy.ops.object.mode_set(mode="OBJECT")
    obj.matrix_world = obj.matrix_world @ mathutils.Matrix.Identity(4)
    return obj


def s_flame_and_bones(a: dict) -> dict:
    bpy = _setup()
    from blender_addon import scene
    from flamecap.retarget.deform import head_lbs
    from flamecap.contract import flame_to_blender_points, load_result
    from flamecap.retarget import swap_identity
    src = scene.import_result(a["src"], scene.ImportOptions(camera=False, background=False, name="actor"))
    dst = scene.import_result(a["dst"], scene.ImportOptions(camera=False, background=False, name="other",
                                                             set_scene_range=False))
    out = {}
    _activate(None)
    out["copy_not_flame"] = _try(bpy.ops.flamecap.retarget_flame_head)
    neutral_before = np.array([v.co[:] for v in dst.mesh.data.vertices])
    _activate(dst.mesh)
    out["copy_status"] = sorted(bpy.ops.flamecap.retarget_flame_head())
    ra, rb = load_result(a["src"]), load_result(a["dst"])
    swapped = swap_identity(ra, target_result=rb)
    # the core's numpy skinning of the swapped result (expression, eyelids, jaw, neck, eyes, global, transl)
    ref_all = head_lbs(swapped, neck=True, global_pose=True) + np.asarray(swapped["transl"], np.float64)[:, None]
    err = 0.0
    for t in range(ra.n_frames):
        bpy.context.scene.frame_set(int(ra["frame_index"][t]) + 1)
        dg = bpy.context.evaluated_depsgraph_get()
        ev = dst.mesh.evaluated_get(dg)
        me = ev.to_mesh()
        co = np.array([v.co[:] for v in me.vertices])
        ev.to_mesh_clear()
        mw = np.array(dst.mesh.matrix_world)
        got = co @ mw[:3, :3].T + mw[:3, 3]
        ref = flame_to_blender_points(ref_all[t])
        err = max(err, float(np.abs(got - ref).max()))
    out["copy_vertex_err_m"] = err
    out["copy_target_neutral_kept"] = bool(np.allclose(neutral_before, [v.co[:] for v in dst.mesh.data.vertices])
                                           and not np.allclose(neutral_before,
                                                               [v.co[:] for v in src.mesh.data.vertices]))
    # bones onto a Rigify-named armature
    arm = _rigify_like_armature()
    _activate(src.mesh)
    out["bones_not_armature"] = _try(bpy.ops.flamecap.retarget_bones, preset="rigify")
    bare = bpy.data.objects.new("Bare", bpy.data.armatures.new("Bare"))
    bpy.context.scene.collection.objects.link(bare)
    _activate(bare)
    out["bones_no_match"] = _try(bpy.ops.flamecap.retarget_bones, preset="rigify")
    _activate(arm)
    out["bones_status"] = sorted(bpy.ops.flamecap.retarget_bones(preset="rigify"))
    frames = list(range(bpy.context.scene.frame_start, bpy.context.scene.frame_end + 1))
    pairs = {"neck": "head", "jaw": "jaw_master", "eye_l": "MCH-eye.L", "eye_r": "MCH-eye.R"}
    keyed = set()
    from blender_addon import anim_compat
    ad = arm.animation_data
    for fc in anim_compat.fcurves(ad.action, ad.action_slot if anim_compat.SLOTTED else None):
        keyed.add(fc.data_path.split('"')[1])
    out["bones_keyed"] = sorted(keyed)
    err, jaw = 0.0, 0.0
    for s, d in pairs.items():
        Rs = _bone_local_world(src.rig, s, frames)
        Rd = _bone_local_world(arm, d, frames)
        err = max(err, float(np.abs(Rs - Rd).max()))
        if s == "jaw":
            jaw = float(np.max(np.arccos(np.clip((np.trace(Rd, axis1=1, axis2=2) - 1) / 2, -1, 1))))
    out["bone_rot_err_rad"] = err
    out["jaw_moved_rad"] = jaw
    return out


def s_live_link(a: dict) -> dict:
    bpy = _setup()
    sc = bpy.context.scene
    sc.render.fps, sc.render.fps_base = 30, 1.0
    v = np.array([(0, 0, 0), (1, 0, 0), (0, 1, 0), (0, 0, 1.0)])
    f = [(0, 1, 2), (0, 1, 3), (0, 2, 3), (1, 2, 3)]
    d = np.full((4, 3), 0.1)
    obj = _mesh("Char", v, f, {"EyeBlink_L": d, "JawOpen": d, "mouthSmile_R": d, "Unrelated": d})
    plain = _mesh("Plain", v, f)
    out = {}
    _activate(obj)
    out["bad"] = _try(bpy.ops.flamecap.import_live_link, filepath=a["bad"], fps=60.0)
    out["other"] = _try(bpy.ops.flamecap.import_live_link, filepath=a["other"], fps=60.0)
    _activate(plain)
    out["no_keys"] = _try(bpy.ops.flamecap.import_live_link, filepath=a["csv"], fps=60.0)
    _activate(obj)
    out["status"] = sorted(bpy.ops.flamecap.import_live_link(filepath=a["csv"], fps=60.0))
    from blender_addon import anim_compat
    kad = obj.data.shape_keys.animation_data
    fcs = anim_compat.fcurves(kad.action, kad.action_slot if anim_compat.SLOTTED else None)
    first = min(fc.keyframe_points[0].co[0] for fc in fcs)
    last = max(fc.keyframe_points[-1].co[0] for fc in fcs)
    frames = list(range(int(first), int(last) + 1))
    vals, _ = _key_curves(obj, ["EyeBlink_L", "JawOpen", "mouthSmile_R", "Unrelated"], frames)
    out["untouched_key_animated"] = "Unrelated" in vals
    vals.pop("Unrelated", None)
    out["values"] = vals
    out["frames"] = frames
    return out


if __name__ == "__main__":
    sys.path.insert(0, str(REPO / "core"))
    sys.path.insert(0, str(HERE))
    name, args = sys.argv[1], json.loads(sys.argv[2])
    res = {"shapekeys": s_shapekeys, "flame_and_bones": s_flame_and_bones, "live_link": s_live_link}[name](args)
    print("RESULT " + json.dumps(res, default=float), flush=True)
