"""Ground-truth clip renders for the reference bench (``flamecap bench --references renders``), with Cycles.

The core prepares everything as numbers (per-frame vertices in OpenCV camera space, faces, per-vertex albedo,
intrinsics, the head's box per frame; ``flamecap.reference.renders``); this job only builds the scene and renders
each frame to ``OUT/NNNN.png`` (RGBA, transparent film). Scene: the head mesh (smooth-shaded, albedo as a colour
attribute, back faces — what shows through the open mouth — dark), a key and a fill area light and a dim grey
world. Only the head's box is path traced (render border, from the ground-truth points); the core composites
the backdrop. Few samples, optionally denoised (OpenImageDenoise costs more than the path tracing here).
The Blender camera sits at the origin looking down −Z, so the OpenCV camera-space vertices map to Blender as
(x, −y, −z).
"""
from __future__ import annotations

import os

import bpy
import numpy as np

MOUTH_DARK = (0.02, 0.012, 0.012, 1.0)


def _material_head() -> bpy.types.Material:
    mat = bpy.data.materials.new("gt_head")
    mat.use_nodes = True
    nt = mat.node_tree
    nt.nodes.remove(nt.nodes["Principled BSDF"])
    bsdf = nt.nodes.new("ShaderNodeBsdfDiffuse")      # diffuse only: the cheapest shading that shows the paint
    nt.links.new(bsdf.outputs["BSDF"], nt.nodes["Material Output"].inputs["Surface"])
    attr = nt.nodes.new("ShaderNodeAttribute")
    attr.attribute_name = "albedo"
    geo = nt.nodes.new("ShaderNodeNewGeometry")
    mix = nt.nodes.new("ShaderNodeMix")
    mix.data_type = "RGBA"
    nt.links.new(geo.outputs["Backfacing"], mix.inputs["Factor"])
    nt.links.new(attr.outputs["Color"], mix.inputs[6])
    mix.inputs[7].default_value = MOUTH_DARK
    nt.links.new(mix.outputs[2], bsdf.inputs["Color"])
    return mat


def _area_light(name: str, loc, target, power: float, size: float) -> None:
    from mathutils import Vector
    data = bpy.data.lights.new(name, type="AREA")
    data.energy = power
    data.size = size
    obj = bpy.data.objects.new(name, data)
    bpy.context.scene.collection.objects.link(obj)
    obj.location = loc
    obj.rotation_euler = (Vector(target) - Vector(loc)).to_track_quat("-Z", "Y").to_euler()


def render_clip(scene_npz: str, out_dir: str) -> str:
    """Render every frame of the prepared clip; returns the job's summary line."""
    d = np.load(scene_npz)
    verts = np.asarray(d["vertices_cam"], np.float64) * np.array([1.0, -1.0, -1.0])   # OpenCV → Blender camera
    faces = np.asarray(d["faces"], np.int64)
    K = np.asarray(d["K"], np.float64)
    W, H = (int(x) for x in d["image_size"])
    T, V = verts.shape[:2]
    sc = bpy.context.scene
    sc.render.engine = "CYCLES"
    sc.cycles.device = "CPU"
    sc.cycles.samples = int(d["samples"])
    sc.cycles.use_denoising = bool(d["denoise"])
    sc.cycles.max_bounces = 1                          # direct light and one diffuse bounce
    sc.cycles.diffuse_bounces = 1
    sc.cycles.glossy_bounces = 0
    sc.cycles.transmission_bounces = 0
    sc.cycles.transparent_max_bounces = 0
    sc.render.threads_mode = "FIXED"
    sc.render.threads = int(d["threads"])
    sc.render.resolution_x, sc.render.resolution_y = W, H
    sc.render.resolution_percentage = 100
    sc.render.film_transparent = True                 # the core composites the backdrop
    sc.render.use_border, sc.render.use_crop_to_border = True, False
    sc.render.image_settings.file_format = "PNG"
    sc.render.image_settings.color_mode = "RGBA"
    sc.view_settings.view_transform = "Standard"
    world = bpy.data.worlds.new("gt_world")
    world.use_nodes = True
    world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.25, 0.25, 0.27, 1.0)
    world.node_tree.nodes["Background"].inputs["Strength"].default_value = 0.35
    sc.world = world
    # camera: at the origin, looking down -Z; horizontal sensor fit, principal point through the lens shift
    cam_data = bpy.data.cameras.new("gt_camera")
    cam_data.sensor_fit = "HORIZONTAL"
    cam_data.sensor_width = 36.0
    cam_data.lens = float(K[0, 0]) * 36.0 / W
    cam_data.shift_x = -(float(K[0, 2]) - W / 2.0) / W
    cam_data.shift_y = (float(K[1, 2]) - H / 2.0) / W
    cam_data.clip_start, cam_data.clip_end = 0.01, 100.0
    cam = bpy.data.objects.new("gt_camera", cam_data)
    sc.collection.objects.link(cam)
    sc.camera = cam
    # head mesh
    mesh = bpy.data.meshes.new("gt_head")
    mesh.from_pydata(verts[0].tolist(), [], faces.tolist())
    mesh.polygons.foreach_set("use_smooth", np.ones(len(faces), bool))
    col = mesh.color_attributes.new("albedo", "FLOAT_COLOR", "POINT")
    rgba = np.concatenate([np.asarray(d["albedo"], np.float32), np.ones((V, 1), np.float32)], 1)
    col.data.foreach_set("color", rgba.ravel())
    mesh.materials.append(_material_head())
    head = bpy.data.objects.new("gt_head", mesh)
    sc.collection.objects.link(head)
    depth = float(-verts[0][:, 2].mean())
    # lights: key upper camera-right, fill lower left, scaled with the head distance
    target = (0.0, 0.0, -depth)
    _area_light("key", (0.55 * depth, 0.45 * depth, -0.35 * depth), target, 12.0 * depth ** 2, 0.6 * depth)
    _area_light("fill", (-0.6 * depth, -0.1 * depth, -0.2 * depth), target, 4.0 * depth ** 2, 0.8 * depth)
    os.makedirs(out_dir, exist_ok=True)
    for i in range(T):
        mesh.vertices.foreach_set("co", verts[i].astype(np.float32).ravel())
        mesh.update()
        x0, y0, x1, y1 = (float(v) for v in d["border"][i])      # the head's box, pixels, y down
        sc.render.border_min_x, sc.render.border_max_x = x0 / W, x1 / W
        sc.render.border_min_y, sc.render.border_max_y = 1.0 - y1 / H, 1.0 - y0 / H
        sc.render.filepath = os.path.join(out_dir, f"{i:04d}.png")
        bpy.ops.render.render(write_still=True)
        print(f"frame {i + 1}/{T}", flush=True)
    return f"GTRENDER {out_dir} {T}"
