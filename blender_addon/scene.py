"""Build a Blender scene from a FlameCap result file (bpy + numpy; no torch).

What :func:`import_result` creates, in a collection ``FlameCap <name>``:

- ``<name>_head``: the identity-baked neutral mesh in the Basis key, expression keys ``exp000..``,
  pose-corrective keys ``pose000..pose035`` (FLAME's ``posedirs``; values = the entries of ``R_j − I`` of
  neck, jaw, eye_l, eye_r per frame, exactly as FLAME's skinning computes them), eyelid keys when the model has
  them, vertex groups from the skinning weights and an Armature modifier. Blender applies shape keys in the rest
  pose and then linear-blend-skins, as FLAME does, so playback matches FLAME.
- ``<name>_rig``: bones root, neck, jaw, eye_l, eye_r at the rest joints. Every bone's rest orientation is the
  FLAME world frame (bone +Y = FLAME +Y = Blender +Z, roll 0), so FLAME's local axis-angle rotations are the
  bones' pose rotations unchanged (as quaternions); ``global_rot`` rotates the root bone about the root joint
  and ``transl`` is the root bone's location (in its rest frame = FLAME axes).
- One action per take (4.4+: one slotted action with a slot for the rig and one for the shape keys; 4.2: an
  object action plus a ``<take>_shapes`` key action). Invalid frames are interpolated from valid neighbours.
- ``<name>_camera``: from K / cam_R / cam_t / image_size via ``contract.conventions``; the render resolution
  and scene fps / frame range follow the result; the footage is the camera's background movie clip.

- The per-frame residual to the landmarks (px: agreement with the detector, not accuracy) is keyed on the rig's
  ``flamecap_landmark_residual_px`` property (a curve in the Graph Editor); the worst frames are listed in ``flamecap_worst_frames``.
- Other objects that would block the tracking camera's view: the factory-default Cube is hidden (viewport and
  render); any other is left alone and named in :attr:`ImportedScene.blocking` for the artist.

Frames: the row with source frame ``frame_index`` is keyed on Blender frame ``frame_index + 1`` (movie clips
start at frame 1), so the head overlays the plate.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import bpy
import numpy as np
from mathutils import Matrix

from . import anim_compat
from ._contract import contract, load_contract_module

log = logging.getLogger(__name__)

PROP_RESULT = "flamecap_result"        # on the rig object: absolute path of the result file
PROP_TAKE = "flamecap_take"            # action name of the current take
PROP_SMOOTHING = "flamecap_smoothing"  # strength last applied
PROP_MESH = "flamecap_mesh"            # the head mesh object (ID pointer)
PROP_CAMERA = "flamecap_camera"
PROP_BAKED = "flamecap_baked"          # per-frame baked keys in use
PROP_RESIDUAL = "flamecap_landmark_residual_px"  # keyed per frame: distance to the detector's points
PROP_WORST = "flamecap_worst_frames"   # Blender frames with the largest residual, worst first
N_WORST = 5
# smoothing channels the artist sets separately, and the result arrays each one filters
SMOOTHING_CHANNELS = {"head": ("global_rot", "transl", "neck_pose"), "jaw": ("jaw_pose",),
                      "expression": ("expr",), "eyes": ("eye_pose", "eyelids")}
BONE_NAMES = tuple(contract.JOINT_NAMES)  # root, neck, jaw, eye_l, eye_r
EXPR_RANGE = 10.0                      # Blender clamps shape-key values to the slider range (max ±10)


class ResultImportError(ValueError):
    """A result cannot be imported (one line, actionable)."""


@dataclass
class ImportOptions:
    name: str = ""                     # base name of the objects (default: result file stem)
    take: str = ""                     # action name (default: "<name>_take")
    smoothing: float | dict = 0.0      # post-filter strength (contract.smoothing), 0 = raw; one for all
                                       # channels or {channel: strength} over SMOOTHING_CHANNELS
    bake_per_frame: bool = False       # one shape key per frame, keyed on its own frame
    pose_drivers: bool = True          # pose-corrective keys driven by the bones (else keyed values)
    camera: bool = True
    background: bool = True            # footage as the camera background (movie clip)
    set_scene_range: bool = True       # scene fps, frame range, render resolution from the result


@dataclass
class ImportedScene:
    rig: object
    mesh: object
    camera: object | None
    actions: list = field(default_factory=list)
    clip: object | None = None
    frame_start: int = 1
    frame_end: int = 1
    collection: object | None = None
    blocking: list = field(default_factory=list)  # names of other objects in the camera's view
    hidden: list = field(default_factory=list)    # names of objects hidden from it (the default Cube)


# ----------------------------------------------------------------------------------------------------
# numpy: per-frame tracks
# ----------------------------------------------------------------------------------------------------
TRACK_KEYS = ("expr", "jaw_pose", "neck_pose", "eye_pose", "global_rot", "transl", "eyelids")


def interpolate_invalid(arrays: dict, valid: np.ndarray, frame_index: np.ndarray) -> dict:
    """Per-frame arrays ``(T, D)`` with invalid rows replaced by linear interpolation (in source-frame time)
    between valid neighbours, held constant at the ends. Raises when no frame is valid."""
    valid = np.asarray(valid, bool)
    if not valid.any():
        raise ResultImportError("the result has no valid frames; re-track with a clip where the face is visible")
    t = np.asarray(frame_index, dtype=np.float64)
    out = {}
    for k, a in arrays.items():
        a = np.asarray(a, dtype=np.float64)
        if valid.all():
            out[k] = a.copy()
            continue
        flat = a.reshape(a.shape[0], -1)
        res = np.empty_like(flat)
        for c in range(flat.shape[1]):  # few columns (≤ E); vectorised over frames
            res[:, c] = np.interp(t, t[valid], flat[valid, c])
        out[k] = res.reshape(a.shape)
    return out


def smoothing_strengths(smoothing) -> dict:
    """``{channel: strength}`` over :data:`SMOOTHING_CHANNELS` from one strength or a (partial) dict."""
    if isinstance(smoothing, dict):
        unknown = set(smoothing) - set(SMOOTHING_CHANNELS)
        if unknown:
            raise ResultImportError(f"unknown smoothing channel(s) {sorted(unknown)}; use {list(SMOOTHING_CHANNELS)}")
        return {c: float(smoothing.get(c, 0.0)) for c in SMOOTHING_CHANNELS}
    return dict.fromkeys(SMOOTHING_CHANNELS, float(smoothing))


def prepare_tracks(result, smoothing=0.0) -> dict:
    """The per-frame parameters to key: invalid frames interpolated, then the post-filter
    (``contract.smoothing.smooth_params``) of each channel whose strength is > 0 (``smoothing``: one strength or
    ``{channel: strength}``). Returns float64 arrays ``(T, D)``."""
    strengths = smoothing_strengths(smoothing)
    arrays = {k: result[k] for k in TRACK_KEYS if k in result}
    tracks = interpolate_invalid(arrays, result["valid"], result["frame_index"])
    if not any(v > 0 for v in strengths.values()):
        return tracks
    mod = load_contract_module("smoothing")
    if mod is None or not hasattr(mod, "smooth_params"):
        raise ResultImportError("this FlameCap build has no smoothing filter (contract.smoothing); "
                                "update the add-on or set smoothing to 0")
    for channel, strength in strengths.items():
        keys = [k for k in SMOOTHING_CHANNELS[channel] if k in tracks]
        if strength <= 0 or not keys:
            continue
        sm = mod.smooth_params({k: tracks[k] for k in keys}, result.fps, strength)
        for k in keys:
            tracks[k] = np.asarray(sm[k], dtype=np.float64).reshape(tracks[k].shape)
    return tracks


def worst_frames(result, n: int = N_WORST) -> list[tuple[int, float]]:
    """``(Blender frame, residual px)`` of the ``n`` valid frames with the largest landmark residual, worst first."""
    err = np.asarray(result["landmark_residual_px"], dtype=np.float64)
    valid = np.asarray(result["valid"], bool) & np.isfinite(err)
    idx = np.flatnonzero(valid)
    idx = idx[np.argsort(-err[idx], kind="stable")][:n]
    frames = scene_frames(result)
    return [(int(frames[i]), float(err[i])) for i in idx]


def axis_angle_to_quaternion(rotvec: np.ndarray) -> np.ndarray:
    """``(T, 3)`` axis-angle → ``(T, 4)`` quaternions (w, x, y, z), sign-continuous over T."""
    r = np.asarray(rotvec, dtype=np.float64)
    theta = np.linalg.norm(r, axis=-1, keepdims=True)
    half = 0.5 * theta
    k = np.where(theta < 1e-12, 0.5, np.sin(half) / np.where(theta < 1e-12, 1.0, theta))
    q = np.concatenate([np.cos(half), r * k], axis=-1)
    if q.shape[0] > 1:  # keep neighbouring quaternions in the same hemisphere (no flips when interpolating)
        dots = np.einsum("ij,ij->i", q[1:], q[:-1])
        sign = np.cumprod(np.where(dots < 0, -1.0, 1.0))
        q[1:] *= sign[:, None]
    return q


def pose_features(tracks: dict) -> np.ndarray:
    """FLAME pose-corrective features ``(T, 36)``: flattened ``R_j − I`` for neck, jaw, eye_l, eye_r."""
    T = tracks["jaw_pose"].shape[0]
    eye = tracks["eye_pose"].reshape(T, 2, 3)
    rots = np.stack([tracks["neck_pose"], tracks["jaw_pose"], eye[:, 0], eye[:, 1]], axis=1)  # (T,4,3)
    R = contract.axis_angle_to_matrix(rots) - np.eye(3)
    return R.reshape(T, 36)


def scene_frames(result) -> np.ndarray:
    """Blender frame of each row (source frame + 1)."""
    return np.asarray(result["frame_index"], dtype=np.int64) + 1


# ----------------------------------------------------------------------------------------------------
# bpy builders
# ----------------------------------------------------------------------------------------------------
def _b(points: np.ndarray) -> np.ndarray:
    return contract.flame_to_blender_points(np.asarray(points, dtype=np.float64))


def _new_mesh(name: str, verts: np.ndarray, faces: np.ndarray):
    me = bpy.data.meshes.new(name)
    V, F = verts.shape[0], faces.shape[0]
    me.vertices.add(V)
    me.vertices.foreach_set("co", verts.astype(np.float32).ravel())
    me.loops.add(F * 3)
    me.loops.foreach_set("vertex_index", faces.astype(np.int32).ravel())
    me.polygons.add(F)
    me.polygons.foreach_set("loop_start", (np.arange(F, dtype=np.int32) * 3))
    me.update(calc_edges=True)
    if hasattr(me, "shade_smooth"):
        me.shade_smooth()
    return me


def _add_key(obj, name: str, coords: np.ndarray, lo: float, hi: float):
    kb = obj.shape_key_add(name=name, from_mix=False)
    kb.data.foreach_set("co", coords.astype(np.float32).ravel())
    kb.slider_min, kb.slider_max = lo, hi
    kb.value = 0.0
    return kb


def _build_rig(name: str, joints_b: np.ndarray, parents: np.ndarray, collection, scene):
    arm = bpy.data.armatures.new(name)
    rig = bpy.data.objects.new(name, arm)
    collection.objects.link(rig)
    rig.show_in_front = True
    # edit mode needs an active object in a view layer
    view_layer = bpy.context.view_layer
    prev_active = view_layer.objects.active
    view_layer.objects.active = rig
    rig.select_set(True)
    bpy.ops.object.mode_set(mode="EDIT")
    try:
        size = float(np.ptp(joints_b[:, 2]) + np.ptp(joints_b[:, 0]))
        length = max(size * 0.25, 0.01)
        ebs = []
        for j, bname in enumerate(BONE_NAMES):
            eb = arm.edit_bones.new(bname)
            eb.head = joints_b[j].tolist()
            # along Blender +Z (= FLAME +Y) with roll 0: bone frame == FLAME axes
            eb.tail = (joints_b[j] + np.array([0.0, 0.0, length * (0.4 if j >= 2 else 1.0)])).tolist()
            eb.roll = 0.0
            eb.use_deform = True
            ebs.append(eb)
        for j, p in enumerate(parents):
            if p >= 0:
                ebs[j].parent = ebs[int(p)]
                ebs[j].use_connect = False
    finally:
        bpy.ops.object.mode_set(mode="OBJECT")
        rig.select_set(False)
        view_layer.objects.active = prev_active
    for pb in rig.pose.bones:
        pb.rotation_mode = "QUATERNION"
    return rig


def _load_clip(source: dict):
    path = str((source or {}).get("path", "") or "")
    if not path:
        return None
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in (".png", ".jpg", ".jpeg", ".exr", ".tif", ".tiff", ".bmp"))
        if not files:
            return None
        p = files[0]
    if not p.is_file():
        log.warning("footage %s not found; camera has no background", p)
        return None
    try:
        clip = bpy.data.movieclips.load(str(p), check_existing=True)
    except RuntimeError as exc:
        log.warning("cannot load footage %s as a movie clip: %s", p, exc)
        return None
    clip.frame_start = 1
    return clip


def _build_camera(name: str, result, collection, clip, set_render: bool, scene):
    cam = bpy.data.cameras.new(name)
    w, h = result.image_size
    intr = contract.blender_camera_intrinsics(result["K"], w, h)
    cam.lens = intr["lens"]
    cam.sensor_width = intr["sensor_width"]
    cam.sensor_fit = intr["sensor_fit"]
    cam.shift_x = intr["shift_x"]
    cam.shift_y = intr["shift_y"]
    cam.clip_start = 0.01
    cam.clip_end = 100.0
    obj = bpy.data.objects.new(name, cam)
    collection.objects.link(obj)
    obj.matrix_world = Matrix(contract.blender_camera_matrix_world(result["cam_R"], result["cam_t"]).tolist())
    if clip is not None:
        cam.show_background_images = True
        bg = cam.background_images.new()
        bg.source = "MOVIE_CLIP"
        bg.clip = clip
        bg.alpha = 1.0
        bg.frame_method = "STRETCH"
        if hasattr(bg, "clip_user"):
            bg.clip_user.use_render_undistorted = False
    if set_render:
        scene.render.resolution_x, scene.render.resolution_y = int(w), int(h)
        scene.render.resolution_percentage = 100
        scene.render.pixel_aspect_x = scene.render.pixel_aspect_y = 1.0
        scene.camera = obj
    return obj


def _skin(mesh_obj, weights: np.ndarray, rig) -> None:
    for j, bname in enumerate(BONE_NAMES):
        vg = mesh_obj.vertex_groups.new(name=bname)
        w = weights[:, j]
        idx = np.flatnonzero(w > 1e-6)
        if idx.size == 0:
            continue
        # group equal weights (rigid regions share one call); the rest one call per vertex
        vals, inv = np.unique(np.round(w[idx], 6), return_inverse=True)
        for k, val in enumerate(vals):
            vg.add(idx[inv == k].tolist(), float(val), "REPLACE")
    mod = mesh_obj.modifiers.new("Armature", "ARMATURE")
    mod.object = rig
    mod.use_vertex_groups = True
    mod.use_deform_preserve_volume = False  # FLAME is linear blend skinning


def import_result(path: str | os.PathLike, options: ImportOptions | None = None, context=None) -> ImportedScene:
    """Load ``path`` (validated by the contract) and build head, rig, take and camera. The scene is only
    changed when loading and validation succeed."""
    options = options or ImportOptions()
    context = context or bpy.context
    scene = context.scene
    path = os.path.abspath(os.fspath(path))
    try:
        result = contract.load_result(path)
    except contract.ContractError as exc:
        raise ResultImportError(str(exc)) from None
    tracks = prepare_tracks(result, options.smoothing)  # validates before touching the scene

    name = options.name or Path(path).stem
    before = _snapshot_ids()
    try:
        return _build(result, tracks, path, name, options, scene)
    except BaseException:
        _remove_new_ids(before)  # a failed import leaves the scene as it was
        raise


_ID_COLLECTIONS = ("objects", "meshes", "armatures", "cameras", "actions", "collections", "shape_keys",
                   "movieclips")


def _snapshot_ids() -> dict:
    return {c: {x.as_pointer() for x in getattr(bpy.data, c)} for c in _ID_COLLECTIONS}


def _remove_new_ids(before: dict) -> None:
    for c in ("objects", "collections", "actions", "meshes", "armatures", "cameras", "movieclips"):
        coll = getattr(bpy.data, c)
        for idb in [x for x in coll if x.as_pointer() not in before[c]]:
            try:
                coll.remove(idb)
            except (RuntimeError, ReferenceError):
                pass


def _build(result, tracks, path, name, options, scene) -> ImportedScene:
    coll = bpy.data.collections.new(f"FlameCap {name}")
    scene.collection.children.link(coll)

    verts_b = _b(result["head_vertices"])
    faces = np.asarray(result["head_faces"], dtype=np.int64)
    mesh_obj = bpy.data.objects.new(f"{name}_head", _new_mesh(f"{name}_head", verts_b, faces))
    coll.objects.link(mesh_obj)

    # shape keys: Basis, expressions, pose correctives, eyelids
    mesh_obj.shape_key_add(name="Basis", from_mix=False)
    exprdirs = np.asarray(result["head_exprdirs"], dtype=np.float64)
    for e in range(exprdirs.shape[2]):
        _add_key(mesh_obj, f"exp{e:03d}", verts_b + _b(exprdirs[:, :, e]), -EXPR_RANGE, EXPR_RANGE)
    posedirs = np.asarray(result["head_posedirs"], dtype=np.float64)
    for p in range(posedirs.shape[2]):
        _add_key(mesh_obj, f"pose{p:03d}", verts_b + _b(posedirs[:, :, p]), -2.0, 2.0)
    if "head_eyelid_dirs" in result:
        lid = np.asarray(result["head_eyelid_dirs"], dtype=np.float64)
        for i, side in enumerate(("l", "r")):
            _add_key(mesh_obj, f"eyelid_{side}", verts_b + _b(lid[:, :, i]), -1.0, 2.0)
    mesh_obj.data.shape_keys.use_relative = True
    mesh_obj.data.shape_keys.name = f"{name}_keys"

    joints_b = _b(result["head_joints"])
    rig = _build_rig(f"{name}_rig", joints_b, np.asarray(result["head_parents"]), coll, scene)
    mesh_obj.parent = rig
    _skin(mesh_obj, np.asarray(result["head_weights"], dtype=np.float64), rig)

    if options.pose_drivers and not options.bake_per_frame:
        add_pose_drivers(mesh_obj, rig, posedirs.shape[2])
    rig[PROP_RESULT] = path
    rig[PROP_MESH] = mesh_obj
    rig[PROP_SMOOTHING] = smoothing_strengths(options.smoothing)
    rig[PROP_BAKED] = bool(options.bake_per_frame)
    rig[PROP_RESIDUAL] = 0.0
    rig[PROP_WORST] = [f for f, _ in worst_frames(result)]
    take = options.take or f"{name}_take"
    actions = write_take(rig, mesh_obj, result, tracks, take, bake_per_frame=options.bake_per_frame)
    rig[PROP_TAKE] = actions[0].name

    frames = scene_frames(result)
    clip = _load_clip(result.meta.get("source", {})) if options.background else None
    cam_obj = None
    if options.camera:
        cam_obj = _build_camera(f"{name}_camera", result, coll, clip, options.set_scene_range, scene)
        rig[PROP_CAMERA] = cam_obj
    if clip is not None:
        scene.active_clip = clip
    hidden, blocking = [], []
    if cam_obj is not None and scene.camera == cam_obj:
        hidden, blocking = clear_camera_view(scene, cam_obj, coll)
    if options.set_scene_range:
        fps = result.fps
        scene.render.fps = max(int(round(fps)), 1)
        scene.render.fps_base = scene.render.fps / fps
        scene.frame_start, scene.frame_end = int(frames[0]), int(frames[-1])
        scene.frame_set(int(frames[0]))
    return ImportedScene(rig=rig, mesh=mesh_obj, camera=cam_obj, actions=actions, clip=clip,
                         frame_start=int(frames[0]), frame_end=int(frames[-1]), collection=coll,
                         blocking=blocking, hidden=hidden)


_SOLID_TYPES = {"MESH", "CURVE", "SURFACE", "META", "FONT", "VOLUME", "GPENCIL", "GREASEPENCIL", "CURVES",
                "POINTCLOUD"}


def in_camera_view(scene, cam_obj, obj) -> bool:
    """Whether ``obj``'s bounding box reaches into the camera's frame (or holds the camera)."""
    from bpy_extras.object_utils import world_to_camera_view
    from mathutils import Vector
    box = np.array([tuple(c) for c in obj.bound_box])
    cam_local = np.array(tuple(obj.matrix_world.inverted() @ cam_obj.matrix_world.translation))
    if np.all(cam_local >= box.min(0)) and np.all(cam_local <= box.max(0)):
        return True  # the camera is inside it (the default Cube around the origin)
    corners = [obj.matrix_world @ Vector(tuple(c)) for c in box]
    ndc = np.array([tuple(world_to_camera_view(scene, cam_obj, c)) for c in corners])
    front = ndc[ndc[:, 2] > cam_obj.data.clip_start]
    if front.shape[0] == 0:
        return False
    if front.shape[0] < 8:  # partly behind the camera: it may cover any part of the frame
        return True
    return bool(front[:, 0].max() >= 0 and front[:, 0].min() <= 1 and front[:, 1].max() >= 0 and front[:, 1].min() <= 1)


def is_default_cube(obj) -> bool:
    """The factory startup file's Cube, untouched (name, 8 vertices, 2 m, at the origin, no modifiers)."""
    return (obj.type == "MESH" and obj.name.split(".")[0] == "Cube" and len(obj.data.vertices) == 8
            and not obj.modifiers and obj.matrix_world.translation.length < 1e-6
            and all(abs(d - 2.0) < 1e-6 for d in obj.dimensions))


def clear_camera_view(scene, cam_obj, own_collection) -> tuple[list, list]:
    """Hide the default Cube from the tracking camera (viewport and render) and list every other visible
    object in its view, so the artist sees the footage and the head. Returns (hidden, blocking) names."""
    own = set(own_collection.all_objects)
    hidden, blocking = [], []
    for obj in scene.objects:
        if obj in own or obj.type not in _SOLID_TYPES or not obj.visible_get() or obj.hide_render:
            continue
        if not in_camera_view(scene, cam_obj, obj):
            continue
        if is_default_cube(obj):
            obj.hide_set(True)
            obj.hide_render = True
            hidden.append(obj.name)
        else:
            blocking.append(obj.name)
    if blocking:
        log.warning("in the FlameCap camera's view: %s", ", ".join(blocking))
    return hidden, blocking


# ----------------------------------------------------------------------------------------------------
# takes (actions)
# ----------------------------------------------------------------------------------------------------
def _take_actions(name: str):
    """(rig action, key action) for a take name; the same action on 4.4+ (two slots)."""
    act = bpy.data.actions.get(name) or anim_compat.new_action(name)
    if anim_compat.SLOTTED:
        return act, act
    kname = f"{name}_shapes"
    return act, (bpy.data.actions.get(kname) or anim_compat.new_action(kname))


def write_take(rig, mesh_obj, result, tracks: dict, take: str, bake_per_frame: bool = False) -> list:
    """Key every frame of ``tracks`` on the rig (bone quaternions, root location) and on the shape keys
    (expression, pose-corrective, eyelid values), in bulk. Returns the action(s) used."""
    frames = scene_frames(result).astype(np.float64)
    T = frames.shape[0]
    rig_act, key_act = _take_actions(take)
    rig_slot = anim_compat.assign(rig, rig_act, f"{rig.name}")
    key = mesh_obj.data.shape_keys
    key_slot = anim_compat.assign(key, key_act, f"{key.name}")

    eye = tracks["eye_pose"].reshape(T, 2, 3)
    rots = {"root": tracks["global_rot"], "neck": tracks["neck_pose"], "jaw": tracks["jaw_pose"],
            "eye_l": eye[:, 0], "eye_r": eye[:, 1]}
    for bname, rv in rots.items():
        q = axis_angle_to_quaternion(rv)
        path = f'pose.bones["{bname}"].rotation_quaternion'
        anim_compat.write_channels(rig_act, rig_slot, [(path, i, q[:, i]) for i in range(4)], frames, group=bname)
    loc_path = 'pose.bones["root"].location'
    anim_compat.write_channels(rig_act, rig_slot, [(loc_path, i, tracks["transl"][:, i]) for i in range(3)],
                               frames, group="root")
    fit_err = np.nan_to_num(np.asarray(result["landmark_residual_px"], dtype=np.float64), nan=0.0)
    anim_compat.write_channels(rig_act, rig_slot, [(f'["{PROP_RESIDUAL}"]', 0, fit_err)], frames, group="FlameCap fit")

    channels = []
    if bake_per_frame:
        _bake_per_frame_keys(mesh_obj, result, tracks, frames, key_act, key_slot)
        for kb in key.key_blocks[1:]:
            if not kb.name.startswith("frame_"):
                kb.value = 0.0
    else:
        expr = np.clip(tracks["expr"], -EXPR_RANGE, EXPR_RANGE)
        for e in range(expr.shape[1]):
            channels.append((f'key_blocks["exp{e:03d}"].value', 0, expr[:, e]))
        if not has_pose_drivers(key):
            feats = pose_features(tracks)
            for p in range(feats.shape[1]):
                channels.append((f'key_blocks["pose{p:03d}"].value', 0, feats[:, p]))
        if "eyelids" in tracks and key.key_blocks.get("eyelid_l") is not None:
            for i, side in enumerate(("l", "r")):
                channels.append((f'key_blocks["eyelid_{side}"].value', 0, tracks["eyelids"][:, i]))
        anim_compat.write_channels(key_act, key_slot, channels, frames, group="FlameCap")
    return [rig_act] if rig_act is key_act else [rig_act, key_act]


# entries of R − I from a (possibly unnormalised) quaternion w, x, y, z; row-major, as FLAME's pose features
_R_MINUS_I = ("-2*(y*y+z*z)/n", "2*(x*y-w*z)/n", "2*(x*z+w*y)/n",
              "2*(x*y+w*z)/n", "-2*(x*x+z*z)/n", "2*(y*z-w*x)/n",
              "2*(x*z-w*y)/n", "2*(y*z+w*x)/n", "-2*(x*x+y*y)/n")
POSE_BONES = ("neck", "jaw", "eye_l", "eye_r")  # FLAME's pose-feature order (joints 1..4)


def add_pose_drivers(mesh_obj, rig, n_pose: int = 36) -> None:
    """Drive ``pose000..`` from the bones' rotations, so correctives follow any pose (also hand-edited or
    retargeted ones). Simple expressions only: Blender evaluates them without Python (no auto-run needed)."""
    key = mesh_obj.data.shape_keys
    for p in range(n_pose):
        kb = key.key_blocks[f"pose{p:03d}"]
        fc = kb.driver_add("value")
        drv = fc.driver
        drv.type = "SCRIPTED"
        for ch in ("w", "x", "y", "z"):
            var = drv.variables.new()
            var.name = ch
            var.type = "TRANSFORMS"
            tgt = var.targets[0]
            tgt.id = rig
            tgt.bone_target = POSE_BONES[p // 9]
            tgt.transform_type = f"ROT_{ch.upper()}"
            tgt.rotation_mode = "QUATERNION"
            tgt.transform_space = "LOCAL_SPACE"
        drv.expression = _R_MINUS_I[p % 9].replace("/n", "/(w*w+x*x+y*y+z*z)")
        for mod in list(fc.modifiers):  # driver_add may add a generator modifier
            fc.modifiers.remove(mod)


def has_pose_drivers(key) -> bool:
    ad = key.animation_data
    return ad is not None and any(d.data_path.startswith('key_blocks["pose') for d in ad.drivers)


def _bake_per_frame_keys(mesh_obj, result, tracks, frames, key_act, key_slot) -> None:
    """One shape key per frame holding that frame's expression + pose-corrective (+ eyelid) offsets in
    the rest pose (the rig still skins it), keyed 1 on its own frame and 0 on the neighbouring ones."""
    key = mesh_obj.data.shape_keys
    for kb in [kb for kb in key.key_blocks if kb.name.startswith("frame_")]:
        mesh_obj.shape_key_remove(kb)
    basis = _b(result["head_vertices"])
    exprdirs = np.asarray(result["head_exprdirs"], dtype=np.float64)
    posedirs = np.asarray(result["head_posedirs"], dtype=np.float64)
    feats = pose_features(tracks)
    lid = np.asarray(result["head_eyelid_dirs"], np.float64) if ("head_eyelid_dirs" in result and
                                                                  "eyelids" in tracks) else None
    for t, f in enumerate(frames):
        off = exprdirs @ tracks["expr"][t] + posedirs @ feats[t]
        if lid is not None:
            off = off + lid @ tracks["eyelids"][t]
        kb = _add_key(mesh_obj, f"frame_{int(f):05d}", basis + _b(off), 0.0, 1.0)
        fc = anim_compat.new_fcurve(key_act, key_slot, f'key_blocks["{kb.name}"].value', 0, "FlameCap frames")
        anim_compat.set_keys(fc, np.array([f - 1, f, f + 1]), np.array([0.0, 1.0, 0.0]))


def reapply_smoothing(rig, strength) -> list:
    """Re-read the result file stored on ``rig`` and rebuild its take with the post-filter at ``strength``
    (one for all channels or ``{channel: strength}``; no re-tracking). Returns the action(s)."""
    path = rig.get(PROP_RESULT)
    mesh_obj = rig.get(PROP_MESH)
    if not path or mesh_obj is None:
        raise ResultImportError(f"'{rig.name}' was not imported by FlameCap (no result path); import a result first")
    try:
        result = contract.load_result(path)
    except contract.ContractError as exc:
        raise ResultImportError(f"cannot re-read {path}: {exc}") from None
    tracks = prepare_tracks(result, strength)
    actions = write_take(rig, mesh_obj, result, tracks, rig.get(PROP_TAKE) or f"{rig.name}_take",
                         bake_per_frame=bool(rig.get(PROP_BAKED, False)))
    rig[PROP_SMOOTHING] = smoothing_strengths(strength)
    return actions


def set_overlay(rig, on: bool) -> None:
    """Show the tracked head as a wireframe drawn in front of everything (an overlay on the plate in the
    camera view), or as the normal solid head."""
    mesh = rig.get(PROP_MESH)
    if mesh is None:
        raise ResultImportError(f"'{rig.name}' has no FlameCap head; import a result first")
    mesh.display_type = "WIRE" if on else "TEXTURED"
    mesh.show_in_front = bool(on)
    mesh.show_wire = bool(on)


def find_rig(context):
    """The FlameCap rig for the active object (the rig itself or its head mesh), else ``None``."""
    obj = getattr(context, "active_object", None)
    if obj is None:
        return None
    if obj.get(PROP_RESULT):
        return obj
    if obj.parent is not None and obj.parent.get(PROP_RESULT):
        return obj.parent
    return None


def shown_rig(context):
    """The rig the Tracked Head panel works on: :func:`find_rig`, else the scene's only FlameCap rig."""
    rig = find_rig(context)
    if rig is not None:
        return rig
    rigs = [o for o in context.scene.objects if o.get(PROP_RESULT)]
    return rigs[0] if len(rigs) == 1 else None
