"""The FlameCap panels: 3D View sidebar (tab "FlameCap") and Movie Clip editor sidebar."""
from __future__ import annotations

import bpy

from . import operators, scene


def draw_track(layout, context) -> None:
    s = context.scene.flamecap
    col = layout.column(align=True)
    col.prop(s, "footage_source", expand=True)
    if s.footage_source == "FILE":
        col.prop(s, "footage_path", text="")
    else:
        clip = getattr(context, "edit_movieclip", None) or context.scene.active_clip
        col.label(text=clip.name if clip else "no active movie clip", icon="SEQUENCE")
    row = layout.row(align=True)
    row.prop(s, "use_range", text="")
    sub = row.row(align=True)
    sub.enabled = s.use_range
    sub.prop(s, "frame_start")
    sub.prop(s, "frame_end")
    layout.prop(s, "quality")
    layout.prop(s, "model_path")
    layout.prop(s, "output_path")
    run = operators._ACTIVE["run"]
    running = run is not None and not run.state.finished
    if running:
        box = layout.box()
        label = f"{s.stage or s.message} {100 * s.progress:.0f}%"
        if hasattr(box, "progress"):
            box.progress(factor=s.progress, type="BAR", text=f"{label} {s.eta}")
        else:
            box.prop(s, "progress", text=label, slider=True)
            if s.eta:
                box.label(text=s.eta)
        box.operator(operators.FLAMECAP_OT_cancel_track.bl_idname, icon="CANCEL")
    else:
        layout.operator(operators.FLAMECAP_OT_track_footage.bl_idname, icon="TRACKER")
    if s.error and s.status in ("failed", "cancelled"):
        layout.label(text=s.error, icon="ERROR")


def draw_result(layout, context) -> None:
    s = context.scene.flamecap
    layout.operator(operators.FLAMECAP_OT_import_result.bl_idname, icon="IMPORT")
    layout.prop(s, "bake_per_frame")
    row = layout.row(align=True)
    row.prop(s, "smoothing", slider=True)
    row.operator(operators.FLAMECAP_OT_apply_smoothing.bl_idname, text="", icon="FILE_REFRESH")
    rig = scene.find_rig(context)
    if rig is not None:
        layout.label(text=f"{rig.name}: smoothing {rig.get(scene.PROP_SMOOTHING, 0.0):.2f}", icon="ARMATURE_DATA")


def _panel_classes(space: str, prefix: str, extra_modules) -> list:
    region = "UI"
    base = {"bl_space_type": space, "bl_region_type": region, "bl_category": "FlameCap"}
    main_id = f"FLAMECAP_PT_{prefix}_track"
    out = [type(main_id, (bpy.types.Panel,), {
        **base, "bl_idname": main_id, "bl_label": "Track Footage",
        "draw": lambda self, context: draw_track(self.layout, context)})]
    out.append(type(f"FLAMECAP_PT_{prefix}_result", (bpy.types.Panel,), {
        **base, "bl_idname": f"FLAMECAP_PT_{prefix}_result", "bl_label": "Result",
        "draw": lambda self, context: draw_result(self.layout, context)}))
    for mod in extra_modules:  # retarget / FBX export sections from their own modules
        short = mod.__name__.rsplit(".", 1)[-1]
        pid = f"FLAMECAP_PT_{prefix}_{short}"
        out.append(type(pid, (bpy.types.Panel,), {
            **base, "bl_idname": pid, "bl_label": short.replace("_", " ").replace("fbx", "FBX").title()
            if short != "export_fbx" else "Export FBX",
            "bl_options": {"DEFAULT_CLOSED"},
            "draw": (lambda m: lambda self, context: m.draw_panel(self.layout, context))(mod)}))
    return out


def panel_classes(extra_modules=()) -> list:
    return _panel_classes("VIEW_3D", "view3d", extra_modules) + _panel_classes("CLIP_EDITOR", "clip", extra_modules)
