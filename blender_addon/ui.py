"""The FlameCap panels: 3D View sidebar (tab "FlameCap") and Movie Clip editor sidebar."""
from __future__ import annotations

import os
import textwrap

import bpy

from . import operators, prefs, scene


def wrapped(layout, text: str, context=None, icon: str = "NONE") -> None:
    """``text`` as labels wrapped to the region's width (a sidebar cuts long labels off)."""
    region = getattr(context, "region", None) if context is not None else None
    width_px = getattr(region, "width", 0) or 300
    scale = getattr(getattr(getattr(context, "preferences", None), "view", None), "ui_scale", 1.0) or 1.0
    chars = max(int(width_px / (7.0 * scale)) - 4, 20)
    col = layout.column(align=True)
    for i, line in enumerate(textwrap.wrap(text, chars) or [""]):
        col.label(text=line, icon=icon if i == 0 else "BLANK1" if icon != "NONE" else "NONE")


def checklist(context) -> list[tuple[str, bool, str]]:
    """First-run checklist: (item, done, the exact fix) for the runtime, the head model and the footage."""
    pr = prefs.get_prefs(context)
    s = context.scene.flamecap
    items = []
    if pr.check_ok:
        items.append(("Runtime", True, pr.check_report))
    elif not pr.python_path:
        items.append(("Runtime", False, "Press Set Up Runtime (a private Python with the FlameCap core), or set "
                                        "Core Python in the preferences and press Check."))
    else:
        items.append(("Runtime", False, (pr.check_report or "Press Check to test the Core Python.")))
    if pr.model_path:
        items.append(("Head model", True, pr.model_path))
    elif pr.check_ok and pr.n_models:
        items.append(("Head model", True, f"{pr.n_models} FLAME model(s) registered; the default is used"))
    else:
        items.append(("Head model", False, "No FLAME head model: Add FLAME File (flame2023_Open.pkl, free at "
                                           "flame.is.tue.mpg.de) or Download FLAME. Try the Demo needs none."))
    clip = getattr(context, "edit_movieclip", None) or context.scene.active_clip
    if s.footage_source == "FILE" and s.footage_path and os.path.exists(bpy.path.abspath(s.footage_path)):
        items.append(("Footage", True, os.path.basename(os.path.normpath(s.footage_path))))
    elif s.footage_source == "CLIP" and clip is not None:
        items.append(("Footage", True, clip.name))
    else:
        items.append(("Footage", False, "Choose a video file or image folder below, or open a clip in the Movie "
                                        "Clip editor and pick Movie Clip."))
    return items


def draw_checklist(layout, context) -> None:
    items = checklist(context)
    if all(done for _, done, _ in items):
        return
    box = layout.box()
    box.label(text="Before you track", icon="INFO")
    for name, done, text in items:
        wrapped(box, f"{name}: {text}" if not done else f"{name}: ready", context,
                icon="CHECKMARK" if done else "ERROR")
        if done:
            continue
        row = box.row(align=True)
        if name == "Runtime":
            row.operator(operators.FLAMECAP_OT_setup_runtime.bl_idname, icon="IMPORT")
            row.operator(operators.FLAMECAP_OT_check_runtime.bl_idname, icon="CHECKMARK")
        elif name == "Head model":
            row.operator(operators.FLAMECAP_OT_add_flame_file.bl_idname, icon="FILE_NEW")
            row.operator(operators.FLAMECAP_OT_download_flame.bl_idname, icon="URL")
    box.operator(operators.FLAMECAP_OT_try_demo.bl_idname, icon="PLAY")


def draw_track(layout, context) -> None:
    s = context.scene.flamecap
    draw_checklist(layout, context)
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
    pr = prefs.get_prefs(context)
    if hasattr(pr, "bl_rna"):
        layout.prop(pr, "model_path")   # the one model setting (the preferences'), shown here too
    row = layout.row(align=True)
    row.prop(s, "lens", expand=True)
    if s.lens == "KNOWN":
        col = layout.column(align=True)
        col.prop(s, "focal_mm")
        col.prop(s, "sensor_mm")
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
        row = layout.row(align=True)
        row.operator(operators.FLAMECAP_OT_track_footage.bl_idname, icon="TRACKER")
        row.operator(operators.FLAMECAP_OT_try_demo.bl_idname, icon="PLAY")
    if s.error and s.status in ("failed", "cancelled"):
        wrapped(layout, s.error, context, icon="ERROR")
    if s.view_warning:
        wrapped(layout, s.view_warning, context, icon="HIDE_OFF")


def draw_result(layout, context) -> None:
    s = context.scene.flamecap
    layout.operator(operators.FLAMECAP_OT_import_result.bl_idname, icon="IMPORT")
    layout.prop(s, "bake_per_frame")
    rig = scene.shown_rig(context)
    if rig is None:
        return
    box = layout.box()
    box.label(text=f"{rig.name}", icon="ARMATURE_DATA")
    mesh = rig.get(scene.PROP_MESH)
    on = mesh is not None and mesh.show_in_front
    box.operator(operators.FLAMECAP_OT_overlay.bl_idname, text="Solid Head" if on else "Overlay on Footage",
                 icon="SHADING_WIRE" if not on else "SHADING_SOLID").on = not on
    col = box.column(align=True)
    col.label(text="Smoothing (re-applied from the tracking, no re-track)")
    for c in ("head", "jaw", "expression", "eyes"):
        col.prop(s, f"smoothing_{c}", slider=True)
    col.operator(operators.FLAMECAP_OT_apply_smoothing.bl_idname, icon="FILE_REFRESH")
    worst = list(rig.get(scene.PROP_WORST, []))
    if worst:
        col = box.column(align=True)
        col.label(text="Residual to the landmarks (px; not accuracy): Graph Editor,")
        col.label(text="rig property flamecap_landmark_residual_px")
        col.label(text="Worst frames (click to go there):")
        row = col.row(align=True)
        for f in worst:
            row.operator(operators.FLAMECAP_OT_jump_to_frame.bl_idname, text=str(f)).frame = int(f)


def _panel_classes(space: str, prefix: str, extra_modules) -> list:
    region = "UI"
    base = {"bl_space_type": space, "bl_region_type": region, "bl_category": "FlameCap"}
    main_id = f"FLAMECAP_PT_{prefix}_track"
    out = [type(main_id, (bpy.types.Panel,), {
        **base, "bl_idname": main_id, "bl_label": "Track Footage",
        "draw": lambda self, context: draw_track(self.layout, context)})]
    out.append(type(f"FLAMECAP_PT_{prefix}_result", (bpy.types.Panel,), {
        **base, "bl_idname": f"FLAMECAP_PT_{prefix}_result", "bl_label": "Tracked Head",
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
