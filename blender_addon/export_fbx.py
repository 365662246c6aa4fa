"""FBX export that keeps shape-key and bone animation: ONE function (:func:`export_fbx`), its operator and
panel section. Used by the add-on UI and by ``flamecap export RESULT --fbx`` (headless bpy subprocess).

Settings that matter (each one loses animation when wrong): ``bake_anim=True``,
``bake_anim_use_nla_strips=False`` and ``bake_anim_use_all_actions=False`` (export the assigned take, not
every action in the file onto every object), ``bake_anim_simplify_factor=0`` (no key reduction: exact
values at every frame), ``add_leaf_bones=False``, ``use_mesh_modifiers=False`` (applying the Armature
modifier would drop the shape keys), ``use_selection=True`` with exactly the objects to export.

Time: Blender frame 1 (the footage's first frame) is written as FBX time 0, so the FBX time is the footage time
and Blender's FBX importer, whose default Animation Offset adds one frame, puts every key back on its frame
(exported as-is, the keys of frames 1–400 came back on frames 2–401). The exporter has no time offset of its
own, so the exported actions' keys are moved one frame earlier for the export and moved back afterwards.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import bpy
import numpy as np

from . import anim_compat

from ._contract import contract

log = logging.getLogger(__name__)

FRAME_OFFSET = 1  # Blender frame written as FBX time 0

# Axis / scale presets. Blender: the exporter's defaults (re-imports 1:1 in Blender). Unity: Y up, -Z
# forward, unit scale applied to everything (1 Blender m = 1 Unity unit). Unreal: Z up / -Y forward
# convention handled by Unreal's importer from the FBX axis system, scale in FBX units (cm), no leaf bones.
PRESETS: dict[str, dict] = {
    "blender": {"axis_forward": "-Z", "axis_up": "Y", "apply_unit_scale": True,
                "apply_scale_options": "FBX_SCALE_NONE", "global_scale": 1.0},
    "unity": {"axis_forward": "-Z", "axis_up": "Y", "apply_unit_scale": True,
              "apply_scale_options": "FBX_SCALE_ALL", "global_scale": 1.0, "bake_space_transform": False},
    "unreal": {"axis_forward": "-Y", "axis_up": "Z", "apply_unit_scale": True,
               "apply_scale_options": "FBX_SCALE_NONE", "global_scale": 1.0, "primary_bone_axis": "Y",
               "secondary_bone_axis": "X"},
}


class FbxExportError(ValueError):
    """One-line, actionable."""


def _actions_of(objs) -> list:
    """The assigned actions of the objects, their shape keys and camera data (each once)."""
    ids = list(objs) + [o.data for o in objs if o.type == "CAMERA"]
    ids += [o.data.shape_keys for o in objs if o.type == "MESH" and o.data.shape_keys is not None]
    acts = {}
    for idb in ids:
        ad = idb.animation_data
        if ad is not None and ad.action is not None:
            acts[ad.action.as_pointer()] = ad.action
    return list(acts.values())


def shift_keys(actions, delta: float) -> None:
    """Move every key (and its handles) of ``actions`` by ``delta`` frames, in bulk."""
    for act in actions:
        for fc in anim_compat.fcurves(act):
            kp = fc.keyframe_points
            if not len(kp):
                continue
            buf = np.empty(2 * len(kp), dtype=np.float32)
            for attr in ("co", "handle_left", "handle_right"):
                kp.foreach_get(attr, buf)
                buf[0::2] += delta
                kp.foreach_set(attr, buf)
            fc.update()


def export_fbx(filepath: str | os.PathLike, objects, *, preset: str = "blender", frame_start: int | None = None,
               frame_end: int | None = None, include_children: bool = True, context=None) -> dict:
    """Export ``objects`` (rigs, meshes, cameras; a rig's child meshes are added when
    ``include_children``) with their animation to ``filepath`` (written atomically). Returns a summary
    {path, objects, frame_start, frame_end, preset}."""
    if preset not in PRESETS:
        raise FbxExportError(f"unknown FBX preset '{preset}'; choose one of {sorted(PRESETS)}")
    path = Path(os.path.abspath(os.fspath(filepath)))
    if path.suffix.lower() != ".fbx":
        raise FbxExportError(f"{path.name}: the file name must end in .fbx")
    context = context or bpy.context
    scene = context.scene
    context.view_layer.update()  # objects linked since the last depsgraph update
    objs = [o for o in objects if o is not None]
    if include_children:
        for o in list(objs):
            objs += [c for c in o.children_recursive if c.type in {"MESH", "ARMATURE"} and c not in objs]
    if not objs:
        raise FbxExportError("nothing to export; select the FlameCap rig, its head or a retargeted character")
    if not any(o.type in {"MESH", "ARMATURE"} for o in objs):
        raise FbxExportError("the selection has no mesh or armature to export")
    for o in objs:
        if o.name not in context.view_layer.objects:
            raise FbxExportError(f"'{o.name}' is not in the active view layer; link it to the scene first")
    # the one output rule (flamecap.contract): never over the open .blend file or a device node, checked
    # before the scene is touched; the temporary file gets the usual umask permissions (mkstemp's are 0600)
    # and replaces ``path`` only when complete
    try:
        contract.check_output_path(path, what="FBX file", inputs=[bpy.data.filepath or None])
    except contract.OutputPathError as exc:
        raise FbxExportError(str(exc)) from None
    old_range = (scene.frame_start, scene.frame_end, scene.frame_current)
    old_sel = [o for o in context.view_layer.objects if o.select_get()]
    old_active = context.view_layer.objects.active
    if frame_start is not None:
        scene.frame_start = int(frame_start)
    if frame_end is not None:
        scene.frame_end = int(frame_end)
    f0, f1 = scene.frame_start, scene.frame_end
    actions = _actions_of(objs)
    types = {o.type for o in objs} & {"MESH", "ARMATURE", "CAMERA", "EMPTY"}
    shifted = False
    try:
        with contract.atomic_output(path) as tmp:
            if context.view_layer.objects.active is not None and context.view_layer.objects.active.mode != "OBJECT":
                bpy.ops.object.mode_set(mode="OBJECT")
            for o in context.view_layer.objects:
                o.select_set(False)
            for o in objs:
                o.select_set(True)
            context.view_layer.objects.active = next((o for o in objs if o.type == "ARMATURE"), objs[0])
            shift_keys(actions, -FRAME_OFFSET)
            shifted = True
            scene.frame_start, scene.frame_end = f0 - FRAME_OFFSET, f1 - FRAME_OFFSET
            r = bpy.ops.export_scene.fbx(
                filepath=str(tmp), check_existing=False, use_selection=True, use_visible=False,
                use_active_collection=False, object_types=types, use_mesh_modifiers=False, mesh_smooth_type="FACE",
                use_custom_props=False, add_leaf_bones=False, use_armature_deform_only=False,
                armature_nodetype="NULL", bake_anim=True, bake_anim_use_all_bones=True,
                bake_anim_use_nla_strips=False, bake_anim_use_all_actions=False,
                bake_anim_force_startend_keying=True, bake_anim_step=1.0, bake_anim_simplify_factor=0.0,
                path_mode="AUTO", embed_textures=False, **PRESETS[preset])
            if r != {"FINISHED"}:
                raise FbxExportError(f"the FBX exporter did not finish ({r}); see the console")
    except contract.OutputPathError as exc:
        raise FbxExportError(str(exc)) from None
    finally:
        if shifted:
            shift_keys(actions, FRAME_OFFSET)
        scene.frame_start, scene.frame_end = old_range[0], old_range[1]
        scene.frame_set(old_range[2])
        for o in context.view_layer.objects:
            o.select_set(o in old_sel)
        context.view_layer.objects.active = old_active
    summary = {"path": str(path), "objects": [o.name for o in objs], "frame_start": f0, "frame_end": f1,
               "preset": preset}
    log.info("FBX written: %s", summary)
    return summary


def export_selected(context, filepath: str, preset: str) -> dict:
    """The operator's logic: the selected objects (a FlameCap rig brings its head and camera-less
    children)."""
    sel = list(context.selected_objects) or ([context.active_object] if context.active_object else [])
    return export_fbx(filepath, sel, preset=preset, context=context)


class FLAMECAP_OT_export_fbx(bpy.types.Operator):
    """Export the selected rig / head / character with shape-key and bone animation to FBX"""

    bl_idname = "flamecap.export_fbx"
    bl_label = "Export FBX (animated)"
    bl_options = {"REGISTER"}

    filepath: bpy.props.StringProperty(subtype="FILE_PATH")
    filter_glob: bpy.props.StringProperty(default="*.fbx", options={"HIDDEN"})
    preset: bpy.props.EnumProperty(name="Preset", items=[
        ("unity", "Unity", "Y up, -Z forward, unit scale applied"),
        ("unreal", "Unreal", "Z up, -Y forward"),
        ("blender", "Blender", "exporter defaults (re-imports 1:1 into Blender)")], default="unity")

    @classmethod
    def poll(cls, context):
        return bool(context.selected_objects) or context.active_object is not None

    def invoke(self, context, event):
        if not self.filepath:
            base = context.active_object.name if context.active_object else "flamecap"
            self.filepath = bpy.path.abspath(f"//{base}.fbx") if bpy.data.filepath else f"{base}.fbx"
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        try:
            s = export_selected(context, self.filepath, self.preset)
        except (FbxExportError, RuntimeError) as exc:
            self.report({"ERROR"}, " ".join(str(exc).split()))
            return {"CANCELLED"}
        self.report({"INFO"}, f"FBX: {len(s['objects'])} objects, frames {s['frame_start']}-{s['frame_end']} "
                              f"→ {s['path']}")
        return {"FINISHED"}


classes = (FLAMECAP_OT_export_fbx,)


def draw_panel(layout, context):
    box = layout.box()
    box.label(text="Export", icon="EXPORT")
    row = box.row(align=True)
    row.operator(FLAMECAP_OT_export_fbx.bl_idname, text="FBX (Unity)").preset = "unity"
    row.operator(FLAMECAP_OT_export_fbx.bl_idname, text="FBX (Unreal)").preset = "unreal"
