"""FlameCap for Blender: track facial performances from footage with the FlameCap core (run as a separate
Python process), import the FLAME head with shape keys, rig, animation and camera, retarget and export.

This package never imports torch / cv2 / mediapipe; the only code it shares with the core is the vendored
``flamecap.contract`` (see ``_vendor``)."""
from __future__ import annotations

import bpy

from . import batch, export_fbx, operators, prefs, retarget, ui

# panel sections written by other modules: each exposes ``classes`` and ``draw_panel(layout, context)``, and
# may have ``register_extra`` / ``unregister_extra`` for the properties it adds to Blender's types
SECTIONS = (retarget, export_fbx, batch)
_registered: list = []


def register():
    classes = list(prefs.classes) + list(operators.classes)
    for mod in SECTIONS:
        classes += list(mod.classes)
    classes += ui.panel_classes(list(SECTIONS))
    for cls in classes:
        bpy.utils.register_class(cls)
        _registered.append(cls)
    prefs.register_props()
    bpy.types.TOPBAR_MT_file_import.append(operators.menu_import)
    for mod in SECTIONS:
        if hasattr(mod, "register_extra"):
            mod.register_extra()


def unregister():
    bpy.types.TOPBAR_MT_file_import.remove(operators.menu_import)
    run = operators._ACTIVE.get("run")
    if run is not None and not run.state.finished:
        run.cancel()
    for mod in SECTIONS:
        if hasattr(mod, "unregister_extra"):
            mod.unregister_extra()
    prefs.unregister_props()
    while _registered:
        bpy.utils.unregister_class(_registered.pop())
