"""FlameCap for Blender: track facial performances from footage with the FlameCap core (run as a separate
Python process), import the FLAME head with shape keys, rig, animation and camera, retarget and export.

This package never imports torch / cv2 / mediapipe; the only code it shares with the core is the vendored
``flamecap.contract`` (see ``_vendor``)."""
from __future__ import annotations

import importlib
import logging

import bpy

from . import operators, prefs, ui

log = logging.getLogger(__name__)

# sections written by other modules: each exposes ``classes`` and ``draw_panel(layout, context)``
OPTIONAL_MODULES = ("retarget", "export_fbx", "batch")
_registered: list = []


def optional_modules() -> list:
    mods = []
    for name in OPTIONAL_MODULES:
        full = f"{__package__}.{name}"
        try:
            mods.append(importlib.import_module(full))
        except ModuleNotFoundError as exc:
            if exc.name != full:
                log.exception("FlameCap: the %s section could not be loaded", name)
        except Exception:  # a broken optional section must not take the add-on down
            log.exception("FlameCap: the %s section could not be loaded", name)
    return mods


def register():
    extra = optional_modules()
    classes = list(prefs.classes) + list(operators.classes)
    for mod in extra:
        classes += list(getattr(mod, "classes", ()))
    classes += ui.panel_classes([m for m in extra if hasattr(m, "draw_panel")])
    for cls in classes:
        bpy.utils.register_class(cls)
        _registered.append(cls)
    prefs.register_props()
    bpy.types.TOPBAR_MT_file_import.append(operators.menu_import)
    for mod in extra:
        if hasattr(mod, "register_extra"):
            mod.register_extra()


def unregister():
    bpy.types.TOPBAR_MT_file_import.remove(operators.menu_import)
    run = operators._ACTIVE.get("run")
    if run is not None and not run.state.finished:
        run.cancel()
    for mod in optional_modules():
        if hasattr(mod, "unregister_extra"):
            mod.unregister_extra()
    prefs.unregister_props()
    while _registered:
        bpy.utils.unregister_class(_registered.pop())
