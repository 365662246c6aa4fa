"""Blender scenarios of the Batch section (run like tests/blender/scenarios.py: NAME JSON_ARGS → RESULT line)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scenarios import MockLayout, install, scene_state  # (imports bpy)
import bpy


def s_batch(a: dict) -> dict:
    mod = install(a["zip"])
    prefs = bpy.context.preferences.addons[mod].preferences
    prefs.python_path = a["python"]
    prefs.device = "cpu"
    b = bpy.context.scene.flamecap_batch
    b.source = "FOLDER"
    b.folder = a["folder"]
    b.output_dir = a["output"]
    before = scene_state()
    try:
        r = bpy.ops.flamecap.batch_track(blocking=True, timeout=120.0)
    except RuntimeError as exc:
        r = {"RAISED: " + str(exc).strip().splitlines()[-1]}
    rigs = sorted(o.name for o in bpy.data.objects if o.get("flamecap_result"))
    log: list = []
    pkg = sys.modules[mod]
    pkg.batch.draw_panel(MockLayout(log), bpy.context)
    out = {"op": sorted(r), "status": b.status, "error": b.error, "before": before, "after": scene_state(),
           "shots": {s.name: [s.status, s.imported, s.error] for s in b.shots}, "rigs": rigs,
           "takes": {o.name: o.get("flamecap_take") for o in bpy.data.objects if o.get("flamecap_result")},
           "results": {o.name: os.path.basename(o["flamecap_result"]) for o in bpy.data.objects
                       if o.get("flamecap_result")},
           "panel": [x for x in log if x[0] in ("operator", "label")]}
    # the other sources: selected movie strips (GRID clip, when given) and an empty selection
    b.source = "STRIPS"
    try:
        pkg.batch.selected_footage(bpy.context)
        out["strips_empty"] = "no error"
    except pkg.batch.BatchInputError as exc:
        out["strips_empty"] = str(exc)
    if a.get("clip"):
        ed = bpy.context.scene.sequence_editor_create()
        strips = ed.strips if hasattr(ed, "strips") else ed.sequences
        s1 = strips.new_movie(name="take1", filepath=a["clip"], channel=1, frame_start=1)
        s2 = strips.new_movie(name="take2", filepath=a["clip2"], channel=2, frame_start=1)
        s1.select, s2.select = True, False
        out["strips"] = pkg.batch.selected_footage(bpy.context)
        argv = pkg.batch.build_batch_argv(bpy.context)[0]
        out["argv"] = argv[1:]
    pkg.unregister()
    out["unregistered"] = not hasattr(bpy.types.Scene, "flamecap_batch")
    return out


SCENARIOS = {"batch": s_batch}

if __name__ == "__main__":
    name, args = sys.argv[1], json.loads(sys.argv[2])
    print("RESULT " + json.dumps(SCENARIOS[name](args), default=str), flush=True)
