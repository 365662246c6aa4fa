"""Headless jobs the core runs in a Python that has ``bpy`` (the core itself never imports bpy):

    fbx  RESULT OUT.fbx PRESET CAMERA(0|1)   import a result and write the animated FBX   → "FBX path f0 f1"
    demo RESULT SCENE.blend HEAD.fbx         the demo scene (head over the footage) + FBX → "DEMO mesh v keys f0 f1 clip"
    gtrender SCENE.npz OUT_DIR               a ground-truth clip for the reference bench (Cycles) → "GTRENDER dir n"

Started by ``flamecap.headless_blender.run_job``; errors are one ``error: ...`` line on stderr and exit 2.
"""
from __future__ import annotations

import os
import sys

import bpy

from . import export_fbx, gt_render, scene


def fbx_job(result: str, out: str, preset: str, camera: bool) -> str:
    imp = scene.import_result(result, scene.ImportOptions(camera=camera, background=False))
    objs = [imp.rig] + ([imp.camera] if imp.camera is not None else [])
    s = export_fbx.export_fbx(out, objs, preset=preset)
    return f"FBX {s['path']} {s['frame_start']} {s['frame_end']}"


def demo_job(result: str, blend: str, fbx: str) -> str:
    imp = scene.import_result(result, scene.ImportOptions(name="demo", camera=True, background=True))
    tmp = os.path.join(os.path.dirname(blend), ".scene.tmp.blend")
    bpy.ops.wm.save_as_mainfile(filepath=tmp, copy=True, compress=True)
    os.replace(tmp, blend)
    s = export_fbx.export_fbx(fbx, [imp.rig, imp.camera], preset="blender")
    bg = imp.camera.data.background_images[0].clip.name if imp.camera.data.background_images else ""
    return (f"DEMO {imp.mesh.name} {len(imp.mesh.data.vertices)} {len(imp.mesh.data.shape_keys.key_blocks)} "
            f"{s['frame_start']} {s['frame_end']} {bg or '-'}")


def main(argv: list[str]) -> int:
    jobs = {"fbx": lambda a: fbx_job(a[0], a[1], a[2], a[3] == "1"), "demo": lambda a: demo_job(*a[:3]),
            "gtrender": lambda a: gt_render.render_clip(a[0], a[1])}
    if not argv or argv[0] not in jobs:
        print(f"error: unknown headless job {argv[:1]}; use one of {', '.join(jobs)}", file=sys.stderr)
        return 2
    bpy.ops.wm.read_factory_settings(use_empty=True)
    try:
        print(jobs[argv[0]](argv[1:]), flush=True)
    except (scene.ResultImportError, export_fbx.FbxExportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
