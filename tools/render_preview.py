#!/usr/bin/env python3
"""Render one frame of an imported FlameCap result with the head over the footage (Cycles, CPU).

    python3 tools/render_preview.py RESULT.npz -o preview.png [--frame N] [--samples 8] [--scale 1.0]

Runs in a Python where ``import bpy`` works (pip ``bpy`` or ``blender -b --python tools/render_preview.py -- ...``).
The scene is built by the add-on's scene builder (``blender_addon/scene.py``); the plate is the source footage
on a plane filling the camera frustum behind the head (camera background images do not render), shown with
an emission shader and the Standard view transform so its colours are unchanged. ``--frame`` is the row of
the result (default: the middle row). Prints a JSON line with the render time and paths.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _args(argv):
    if "--" in argv:  # blender -b --python tools/render_preview.py -- ARGS
        argv = argv[argv.index("--") + 1:]
    ap = argparse.ArgumentParser(description="Render one frame of a FlameCap result over its footage.")
    ap.add_argument("result")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--frame", type=int, default=None, help="row of the result (default: middle)")
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--scale", type=float, default=1.0, help="resolution scale (1 = footage size)")
    ap.add_argument("--plate-distance", type=float, default=5.0, help="metres from the camera")
    return ap.parse_args(argv)


def _use_nodes(idb) -> None:
    """Node trees exist by default from Blender 5.0 (``use_nodes`` is deprecated there)."""
    if getattr(idb, "node_tree", None) is None:
        idb.use_nodes = True


def _plate(scene, cam_obj, clip_path: str, distance: float, n_frames: int):
    import bpy
    from mathutils import Matrix
    cam = cam_obj.data
    w, h = scene.render.resolution_x, scene.render.resolution_y
    big = cam.sensor_width / cam.lens  # frustum size at distance 1 along the larger image side
    sx, sy = (big, big * h / w) if w >= h else (big * w / h, big)
    me = bpy.data.meshes.new("flamecap_plate")
    hx, hy = 0.5 * sx * distance, 0.5 * sy * distance
    ox, oy = cam.shift_x * big * distance, cam.shift_y * big * distance
    me.from_pydata([(ox - hx, oy - hy, -distance), (ox + hx, oy - hy, -distance), (ox + hx, oy + hy, -distance),
                    (ox - hx, oy + hy, -distance)], [], [(0, 1, 2, 3)])
    uv = me.uv_layers.new(name="UVMap")
    for i, c in enumerate([(0, 0), (1, 0), (1, 1), (0, 1)]):
        uv.data[i].uv = c
    plate = bpy.data.objects.new("flamecap_plate", me)
    scene.collection.objects.link(plate)
    plate.matrix_world = cam_obj.matrix_world @ Matrix.Identity(4)
    mat = bpy.data.materials.new("flamecap_plate")
    _use_nodes(mat)
    nt = mat.node_tree
    nt.nodes.clear()
    tex = nt.nodes.new("ShaderNodeTexImage")
    img = bpy.data.images.load(clip_path, check_existing=True)
    tex.image = img
    if img.source == "MOVIE":
        tex.image_user.frame_duration = n_frames
        tex.image_user.frame_start = 1
        tex.image_user.frame_offset = 0
        tex.image_user.use_auto_refresh = True
    em = nt.nodes.new("ShaderNodeEmission")
    out = nt.nodes.new("ShaderNodeOutputMaterial")
    nt.links.new(tex.outputs["Color"], em.inputs["Color"])
    nt.links.new(em.outputs["Emission"], out.inputs["Surface"])
    me.materials.append(mat)
    plate.visible_shadow = False
    return plate


def render_preview(result_path: str, output: str, frame: int | None = None, samples: int = 8,
                   scale: float = 1.0, plate_distance: float = 5.0) -> dict:
    import bpy
    sys.path.insert(0, str(REPO))
    from blender_addon import scene as fc_scene
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scn = bpy.context.scene
    imp = fc_scene.import_result(result_path, fc_scene.ImportOptions(background=True))
    res = fc_scene.contract.load_result(result_path)
    row = res.n_frames // 2 if frame is None else int(frame)
    bl_frame = int(res["frame_index"][row]) + 1
    src = (res.meta.get("source") or {}).get("path", "")
    n_src = int((res.meta.get("source") or {}).get("n_frames", res["frame_index"][-1] + 1))
    if imp.clip is not None and src:
        _plate(scn, imp.camera, imp.clip.filepath, plate_distance, max(n_src, int(res["frame_index"][-1]) + 1))
    # head material and light
    mat = bpy.data.materials.new("flamecap_head")
    _use_nodes(mat)
    bsdf = mat.node_tree.nodes.get("Principled BSDF")
    if bsdf is not None:
        bsdf.inputs["Base Color"].default_value = (0.8, 0.55, 0.45, 1.0)
        bsdf.inputs["Roughness"].default_value = 0.5
    imp.mesh.data.materials.append(mat)
    light = bpy.data.objects.new("flamecap_key", bpy.data.lights.new("flamecap_key", "SUN"))
    light.data.energy = 3.0
    light.rotation_euler = (math.radians(60), 0.0, math.radians(20))
    scn.collection.objects.link(light)
    world = bpy.data.worlds.new("flamecap_world")
    _use_nodes(world)
    world.node_tree.nodes["Background"].inputs["Strength"].default_value = 0.3
    scn.world = world
    scn.render.engine = "CYCLES"
    scn.cycles.device = "CPU"
    scn.cycles.samples = samples
    scn.cycles.use_denoising = False
    scn.render.threads_mode = "FIXED"
    scn.render.threads = 2
    scn.render.resolution_percentage = max(1, int(round(100 * scale)))
    scn.view_settings.view_transform = "Standard"
    scn.render.image_settings.file_format = "PNG"
    scn.render.filepath = str(Path(output).resolve())
    scn.frame_set(bl_frame)
    t0 = time.monotonic()
    bpy.ops.render.render(write_still=True)
    return {"output": scn.render.filepath, "frame": bl_frame, "row": row, "render_s": round(time.monotonic() - t0, 2),
            "resolution": [scn.render.resolution_x * scn.render.resolution_percentage // 100,
                           scn.render.resolution_y * scn.render.resolution_percentage // 100],
            "plate": bool(imp.clip is not None)}


def main(argv=None) -> int:
    a = _args(sys.argv[1:] if argv is None else argv)
    info = render_preview(a.result, a.output, a.frame, a.samples, a.scale, a.plate_distance)
    print(json.dumps(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
