"""Blender scenarios for the add-on tests, each run in a clean ``python3`` subprocess (bpy = headless
Blender 5.0) so bpy state and add-on registration never leak between tests:

    python3 tests/blender/scenarios.py NAME JSON_ARGS

Each prints one line ``RESULT <json>`` with what it observed; checks that are easier here raise (the test then
sees a non-zero exit and the traceback). ``BLENDER_USER_RESOURCES`` should point at a temporary folder.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

import fixtures  # noqa: E402  (puts core/ on sys.path for the contract)
import bpy  # noqa: E402
from flamecap.contract import flame_to_blender_points, load_result  # noqa: E402

EXT_MODULE = "bl_ext.user_default.flamecap"


def install(zip_path: str) -> str:
    r = bpy.ops.extensions.package_install_files(repo="user_default", filepath=zip_path, enable_on_install=True)
    assert r == {"FINISHED"}, r
    assert EXT_MODULE in bpy.context.preferences.addons, "extension not enabled"
    return EXT_MODULE


def scene_state() -> dict:
    return {"objects": sorted(o.name for o in bpy.data.objects),
            "meshes": len(bpy.data.meshes), "actions": sorted(a.name for a in bpy.data.actions),
            "collections": sorted(c.name for c in bpy.data.collections),
            "frame_range": [bpy.context.scene.frame_start, bpy.context.scene.frame_end]}


def evaluated_world_vertices(obj) -> np.ndarray:
    dg = bpy.context.evaluated_depsgraph_get()
    ev = obj.evaluated_get(dg)
    m = ev.to_mesh()
    co = np.empty(len(m.vertices) * 3, np.float32)
    m.vertices.foreach_get("co", co)
    ev.to_mesh_clear()
    mw = np.array(obj.matrix_world)
    return co.reshape(-1, 3) @ mw[:3, :3].T + mw[:3, 3]


def describe_import(rig, result_path: str, check_frames=(0, -1)) -> dict:
    """What a person would check after an import: objects, keys, bones, keyed frames, camera; plus the
    largest distance between Blender's evaluated mesh and FLAME's skinning computed in numpy."""
    from importlib import import_module
    compat = import_module(_addon_pkg() + ".anim_compat")
    res = load_result(result_path)
    mesh = rig["flamecap_mesh"]
    cam = rig.get("flamecap_camera")
    keys = [kb.name for kb in mesh.data.shape_keys.key_blocks]
    rig_action = rig.animation_data.action
    key_ad = mesh.data.shape_keys.animation_data
    fcs = compat.fcurves(rig_action, rig.animation_data.action_slot if compat.SLOTTED else None)
    kfcs = compat.fcurves(key_ad.action, key_ad.action_slot if compat.SLOTTED else None)
    key_counts = sorted({len(fc.keyframe_points) for fc in list(fcs) + list(kfcs)})
    frames = res["frame_index"] + 1
    errs = {}
    for t in check_frames:
        t = t % res.n_frames
        if not res["valid"][t]:
            continue
        bpy.context.scene.frame_set(int(frames[t]))
        got = evaluated_world_vertices(mesh)
        ref = flame_to_blender_points(fixtures.reference_vertices(res, t))
        errs[int(t)] = float(np.abs(got - ref).max())
    out = {
        "mesh": mesh.name, "n_vertices": len(mesh.data.vertices), "n_faces": len(mesh.data.polygons),
        "keys": keys, "bones": [b.name for b in rig.data.bones],
        "bone_parents": {b.name: (b.parent.name if b.parent else None) for b in rig.data.bones},
        "bone_rest_rot": [np.round(np.array(b.matrix_local)[:3, :3], 6).tolist() for b in rig.data.bones],
        "vertex_groups": [g.name for g in mesh.vertex_groups],
        "modifiers": [m.type for m in mesh.modifiers],
        "rig_action": rig_action.name, "key_action": key_ad.action.name, "slotted": compat.SLOTTED,
        "n_rig_fcurves": len(fcs), "n_key_fcurves": len(kfcs), "key_counts": key_counts,
        "key_frame_range": [min(fc.range()[0] for fc in kfcs), max(fc.range()[1] for fc in kfcs)],
        "scene_range": [bpy.context.scene.frame_start, bpy.context.scene.frame_end],
        "fps": bpy.context.scene.render.fps / bpy.context.scene.render.fps_base,
        "resolution": [bpy.context.scene.render.resolution_x, bpy.context.scene.render.resolution_y],
        "vertex_err_m": errs,
        "pose_drivers": sum(1 for d in (key_ad.drivers if key_ad else []) if d.data_path.startswith('key_blocks["pose')
                            and d.driver.is_valid and d.driver.is_simple_expression),
    }
    if cam is not None:
        out["camera"] = {"name": cam.name, "lens": cam.data.lens, "sensor_width": cam.data.sensor_width,
                         "matrix_world": np.array(cam.matrix_world).tolist(),
                         "is_scene_camera": bpy.context.scene.camera == cam,
                         "backgrounds": [(b.source, b.clip.filepath if b.clip else None)
                                         for b in cam.data.background_images]}
        # project the head's joints with the Blender camera and compare with the contract's projection
        from bpy_extras.object_utils import world_to_camera_view
        from mathutils import Vector
        from flamecap.contract import project_points
        t = 0
        bpy.context.scene.frame_set(int(frames[t]))
        v_ref = fixtures.reference_vertices(res, t)[:20]
        px_ref = project_points(v_ref @ res["cam_R"].T + res["cam_t"], res["K"])
        w, h = res.image_size
        px = []
        for p in flame_to_blender_points(v_ref):
            c = world_to_camera_view(bpy.context.scene, cam, Vector(p.tolist()))
            px.append([c.x * w, (1.0 - c.y) * h])
        out["camera"]["projection_err_px"] = float(np.abs(np.array(px) - px_ref).max())
    return out


def _addon_pkg() -> str:
    return EXT_MODULE if EXT_MODULE in sys.modules else "blender_addon"


def s_install_import(a: dict) -> dict:
    install(a["zip"])
    before = scene_state()
    r = bpy.ops.flamecap.import_result(filepath=a["result"])
    assert r == {"FINISHED"}, r
    rig = next(o for o in bpy.data.objects if o.get("flamecap_result"))
    out = describe_import(rig, a["result"], check_frames=tuple(a.get("check_frames", (0, -1))))
    out["before"] = before
    out["after"] = scene_state()
    # a broken result must leave the scene as it is
    state = scene_state()
    try:
        bpy.ops.flamecap.import_result(filepath=a["bad_result"])
        out["bad_import"] = "no error"
    except RuntimeError as exc:
        out["bad_import"] = str(exc).strip().splitlines()[-1]
    out["unchanged_after_bad"] = scene_state() == state
    return out


def s_repo_import(a: dict) -> dict:
    """The scene builder used straight from the source tree (as bpy scripts and the FBX export do)."""
    sys.path.insert(0, str(REPO))
    from blender_addon import scene
    opts = scene.ImportOptions(bake_per_frame=bool(a.get("bake", False)), smoothing=float(a.get("smoothing", 0)))
    imp = scene.import_result(a["result"], opts)
    out = describe_import(imp.rig, a["result"], check_frames=tuple(a.get("check_frames", (0, -1))))
    res = load_result(a["result"])
    # invalid rows: the keyed values must be the interpolation of their valid neighbours
    inv = np.flatnonzero(~res["valid"])
    if inv.size:
        t = int(inv[0])
        bpy.context.scene.frame_set(int(res["frame_index"][t]) + 1)
        jaw = np.array(imp.rig.pose.bones["jaw"].rotation_quaternion)
        mid = 0.5 * (res["jaw_pose"][t - 1].astype(np.float64) + res["jaw_pose"][t + 1])  # axis-angle lerp
        q = scene.axis_angle_to_quaternion(mid[None])[0]
        out["invalid_frame_jaw_err"] = float(np.abs(jaw - q).max())
    if a.get("reapply") is not None:
        from blender_addon import _contract
        n_actions = len(bpy.data.actions)
        scene.reapply_smoothing(imp.rig, 0.0)            # rebuild the take from the file, unfiltered
        t = int(np.flatnonzero(res["valid"])[0])
        bpy.context.scene.frame_set(int(res["frame_index"][t]) + 1)
        ref = flame_to_blender_points(fixtures.reference_vertices(res, t))
        out["reapply0_err"] = float(np.abs(evaluated_world_vertices(imp.mesh) - ref).max())
        out["reapply0_same_actions"] = len(bpy.data.actions) == n_actions
        if _contract.load_contract_module("smoothing") is None:
            out["reapply"] = "no smoothing module"
        else:
            scene.reapply_smoothing(imp.rig, float(a["reapply"]))
            jaw_raw = scene.axis_angle_to_quaternion(res["jaw_pose"].astype(np.float64))
            got = []
            for f in res["frame_index"] + 1:
                bpy.context.scene.frame_set(int(f))
                got.append(list(imp.rig.pose.bones["jaw"].rotation_quaternion))
            out["reapply"] = {"strength": imp.rig["flamecap_smoothing"].to_dict(),
                              "max_change": float(np.nanmax(np.abs(np.array(got) - jaw_raw)))}
    return out


def s_track(a: dict) -> dict:
    mod = install(a["zip"])
    prefs = bpy.context.preferences.addons[mod].preferences
    prefs.python_path = a["python"]
    prefs.device = "cpu"
    s = bpy.context.scene.flamecap
    s.footage_source = "FILE"
    s.footage_path = a["footage"]
    prefs.model_path = a.get("model", "")
    s.output_path = a["output"]
    if a.get("range"):
        s.use_range = True
        s.frame_start, s.frame_end = a["range"]
    if a.get("blocker"):  # an artist's object between the tracking camera and the head
        me = bpy.data.meshes.new("Character")
        me.from_pydata([(x, y, z) for x in (-0.05, 0.05) for y in (0.25, 0.35) for z in (-0.05, 0.05)], [],
                       [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)])
        bpy.context.scene.collection.objects.link(bpy.data.objects.new("Character", me))
    if a.get("lens"):
        s.lens = "KNOWN"
        s.focal_mm, s.sensor_mm = a["lens"]
    before = scene_state()
    error = ""
    try:
        r = bpy.ops.flamecap.track_footage(blocking=True, timeout=float(a.get("timeout", 0)))
    except RuntimeError as exc:
        r = {"RAISED"}
        error = str(exc).strip().splitlines()[-1]
    out = {"op": sorted(r), "status": s.status, "error": s.error, "raised": error, "stage": s.stage,
           "progress": s.progress, "before": before, "after": scene_state(),
           "output_exists": os.path.exists(a["output"]), "last_result": s.last_result}
    rig = next((o for o in bpy.data.objects if o.get("flamecap_result")), None)
    if rig is not None:
        out["import"] = describe_import(rig, rig["flamecap_result"])
        out["view"] = camera_view_state(rig)
    return out


def camera_view_state(rig) -> dict:
    """What the artist sees through the scene camera: which camera, the default Cube, the fit-error curve."""
    from importlib import import_module
    compat = import_module(_addon_pkg() + ".anim_compat")
    cube = bpy.data.objects.get("Cube")
    ad = rig.animation_data
    fc = compat.find_fcurve(ad.action, ad.action_slot if compat.SLOTTED else None, '["flamecap_landmark_residual_px"]')
    return {"scene_camera": bpy.context.scene.camera.name if bpy.context.scene.camera else None,
            "rig_camera": rig["flamecap_camera"].name,
            "cube": None if cube is None else {"hidden": not cube.visible_get(), "hide_render": cube.hide_render},
            "collection": [c.name for c in rig.users_collection],
            "fit_error_keys": 0 if fc is None else len(fc.keyframe_points),
            "worst_frames": list(rig.get("flamecap_worst_frames", [])),
            "view_warning": bpy.context.scene.flamecap.view_warning}


def render_alpha(path: str, width: int = 96) -> np.ndarray:
    """Render the scene camera with Cycles (CPU, few samples, transparent film) and return the alpha (H, W):
    1 where geometry covers the footage, 0 where the camera's background (the footage) shows."""
    sc = bpy.context.scene
    sc.render.engine = "CYCLES"
    sc.cycles.device = "CPU"
    sc.cycles.samples = 2
    sc.render.film_transparent = True
    sc.render.resolution_percentage = max(1, int(100 * width / sc.render.resolution_x))
    sc.render.image_settings.file_format = "PNG"
    sc.render.image_settings.color_mode = "RGBA"
    sc.render.filepath = path
    bpy.ops.render.render(write_still=True)
    img = bpy.data.images.load(path)
    px = np.empty(img.size[0] * img.size[1] * 4, np.float32)
    img.pixels.foreach_get(px)
    alpha = px.reshape(img.size[1], img.size[0], 4)[::-1, :, 3]
    bpy.data.images.remove(img)
    return alpha


def s_demo(a: dict) -> dict:
    """Try the demo in the factory startup file (Cube, Light, Camera), then look through the scene camera."""
    mod = install(a["zip"])
    prefs = bpy.context.preferences.addons[mod].preferences
    prefs.python_path = a["python"]
    before = scene_state()
    r = bpy.ops.flamecap.try_demo(blocking=True, frames=int(a["frames"]))
    s = bpy.context.scene.flamecap
    out = {"op": sorted(r), "status": s.status, "error": s.error, "before": before, "after": scene_state()}
    rig = next(o for o in bpy.data.objects if o.get("flamecap_result"))
    out["view"] = camera_view_state(rig)
    cam = rig["flamecap_camera"]
    out["backgrounds"] = [(b.source, b.clip.filepath if b.clip else None) for b in cam.data.background_images]
    out["show_background"] = cam.data.show_background_images
    sc = bpy.context.scene
    sc.frame_set(sc.frame_start)
    # where the head is in the camera's frame (its evaluated vertices projected with Blender's camera)
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector
    head = rig["flamecap_mesh"]
    uv = np.array([tuple(world_to_camera_view(sc, cam, Vector(v.tolist())))[:2] for v in evaluated_world_vertices(head)])
    alpha = render_alpha(os.path.join(a["out"], "view.png"))
    H, W = alpha.shape
    covered = alpha > 0.5
    ys, xs = np.nonzero(covered)
    out["render"] = {"size": [W, H], "coverage": float(covered.mean()),
                     "bbox": [float(xs.min() / W), float(ys.min() / H), float(xs.max() / W), float(ys.max() / H)]
                     if xs.size else None,
                     "head_uv_bbox": [float(uv[:, 0].min()), float(1 - uv[:, 1].max()), float(uv[:, 0].max()),
                                      float(1 - uv[:, 1].min())]}
    cube = bpy.data.objects.get("Cube")
    if cube is not None:  # the same view with the default Cube left visible: it fills the frame
        cube.hide_render = False
        out["render"]["coverage_with_cube"] = float((render_alpha(os.path.join(a["out"], "cube.png")) > 0.5).mean())
        cube.hide_render = True
    ui = sys.modules[mod + ".ui"]
    panel = []
    ui.draw_result(MockLayout(panel), bpy.context)
    out["panel"] = panel
    bpy.ops.flamecap.overlay(on=True)
    out["overlay_on"] = [head.display_type, head.show_in_front]
    bpy.ops.flamecap.overlay(on=False)
    out["overlay_off"] = [head.display_type, head.show_in_front]
    return out


class MockLayout:
    """Stands in for bpy's UILayout: checks that every drawn property exists (catches typos headless)."""

    def __init__(self, log):
        self.log = log
        self.enabled = True

    def _child(self, *a, **k):
        return MockLayout(self.log)

    row = column = box = split = _child

    def prop(self, data, name, **k):
        assert hasattr(data, name), f"{type(data).__name__} has no property {name!r}"
        self.log.append(("prop", name))

    def operator(self, idname, **k):
        mod, op = idname.split(".")
        assert hasattr(getattr(bpy.ops, mod), op), f"no operator {idname}"
        self.log.append(("operator", idname))
        return type("OperatorProperties", (), {})()

    def prop_search(self, data, name, search_data, search_name, **k):
        assert hasattr(data, name), f"{type(data).__name__} has no property {name!r}"
        assert hasattr(search_data, search_name), f"{type(search_data).__name__} has no {search_name!r}"
        self.log.append(("prop_search", name))

    def template_list(self, list_type, list_id, data, name, active_data, active_name, **k):
        assert hasattr(bpy.types, list_type), f"no UIList {list_type}"
        assert hasattr(data, name) and hasattr(active_data, active_name), f"no list {name!r} / {active_name!r}"
        self.log.append(("template_list", name))

    def label(self, text="", **k):
        self.log.append(("label", text))

    def progress(self, factor=0.0, type="BAR", text=""):
        self.log.append(("progress", round(factor, 3), text))


def s_ui_and_prefs(a: dict) -> dict:
    mod = install(a["zip"])
    pkg = sys.modules[mod]
    ui, ops, runner_mod = (sys.modules[f"{mod}.{n}"] for n in ("ui", "operators", "runner"))
    out = {}
    ctx = bpy.context
    for status in ("idle", "running", "failed"):
        log = []
        s = ctx.scene.flamecap
        s.status, s.error = status, ("cannot read footage x" if status == "failed" else "")
        if status == "running":
            run = runner_mod.CoreRun(["true"])
            run.state.status, run.state.stage = "running", "fit"
            s.stage, s.progress, s.eta = "fit", 0.4, "3 s left"
            ops._ACTIVE["run"] = run
        ui.draw_track(MockLayout(log), ctx)
        ui.draw_result(MockLayout(log), ctx)
        ops._ACTIVE["run"] = None
        out[status] = log
    prefs = ctx.preferences.addons[mod].preferences
    plog = []
    type(prefs).draw(type("P", (), {"layout": MockLayout(plog), **{k: getattr(prefs, k) for k in (
        "python_path", "base_python", "check_report", "check_ok", "model_path", "device")}})(), ctx)
    out["prefs_draw"] = plog
    try:
        bpy.ops.flamecap.setup_runtime()
        out["setup_runtime"] = "ran"
    except RuntimeError as exc:
        out["setup_runtime"] = str(exc).strip().splitlines()[-1]
    prefs.python_path = a["python"]
    try:
        bpy.ops.flamecap.check_runtime()
    except RuntimeError:
        pass
    out["check_report"], out["check_ok"] = prefs.check_report, prefs.check_ok
    prefs.python_path = "/nonexistent/python3"
    try:
        bpy.ops.flamecap.check_runtime()
    except RuntimeError:
        pass
    out["check_report_bad"], out["check_ok_bad"] = prefs.check_report, prefs.check_ok
    out["menu"] = ops.menu_import in bpy.types.TOPBAR_MT_file_import._dyn_ui_initialize()
    pkg.unregister()
    out["unregistered"] = not hasattr(bpy.types, "FLAMECAP_OT_track_footage")
    return out


def s_setup_runtime(a: dict) -> dict:
    """Set Up Runtime from a clean user folder, blocking, then Check (downloads from the package index)."""
    import time
    mod = install(a["zip"])
    bpy.context.preferences.system.use_online_access = True
    prefs = bpy.context.preferences.addons[mod].preferences
    t0 = time.monotonic()
    try:
        r = sorted(bpy.ops.flamecap.setup_runtime())
        err = ""
    except RuntimeError as exc:
        r, err = ["RAISED"], str(exc).strip().splitlines()[-1]
    secs = time.monotonic() - t0
    runtime = sys.modules[mod + ".prefs"].runtime_dir()
    size = sum(f.stat().st_size for f in Path(runtime).rglob("*") if f.is_file() and not f.is_symlink())
    return {"op": r, "error": err, "seconds": secs, "python_path": prefs.python_path, "runtime": runtime,
            "runtime_bytes": size, "check_ok": prefs.check_ok, "check_report": prefs.check_report,
            "online": bpy.app.online_access}


def s_add_model(a: dict) -> dict:
    """Add FLAME File… with the real core (``flamecap models add FILE --default``), then the checklist."""
    mod = install(a["zip"])
    prefs = bpy.context.preferences.addons[mod].preferences
    prefs.python_path = a["python"]
    ui = sys.modules[mod + ".ui"]
    before = [list(x) for x in ui.checklist(bpy.context)]
    try:
        r, err = sorted(bpy.ops.flamecap.add_flame_file(filepath=a["model"])), ""
    except RuntimeError as exc:
        r, err = ["RAISED"], str(exc).strip().splitlines()[-1]
    return {"op": r, "error": err, "check_ok": prefs.check_ok, "n_models": prefs.n_models,
            "before": before, "after": [list(x) for x in ui.checklist(bpy.context)]}


SCENARIOS = {"add_model": s_add_model, "setup_runtime": s_setup_runtime, "ui_and_prefs": s_ui_and_prefs, "install_import": s_install_import, "repo_import": s_repo_import,
             "track": s_track, "demo": s_demo}

if __name__ == "__main__":
    name, args = sys.argv[1], json.loads(sys.argv[2])
    result = SCENARIOS[name](args)
    print("RESULT " + json.dumps(result, default=str), flush=True)
