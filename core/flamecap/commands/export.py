"""``flamecap export RESULT [--fbx out.fbx --preset unity|unreal|blender] [--params-npz] [--params-json]
[--livelink-csv out.csv --anim anim.npz]``.

FBX goes through headless Blender in a SUBPROCESS (the core never imports bpy): a Python that has ``bpy``
(``--blender-python`` / ``$FLAMECAP_BPY_PYTHON``, default this Python) runs a short script that builds the
scene with the add-on's ``scene.import_result`` and writes it with ``export_fbx.export_fbx``.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from ..errors import FlameCapError, InputError

NO_BPY_EXIT = 17

_FBX_SCRIPT = r"""
import sys
addon_parent, result, out, preset, camera = sys.argv[1:6]
try:
    import bpy
except ImportError as exc:
    print(f"error: no bpy in this Python ({exc})", file=sys.stderr)
    sys.exit(%d)
sys.path.insert(0, addon_parent)
from blender_addon import export_fbx, scene
bpy.ops.wm.read_factory_settings(use_empty=True)
try:
    imp = scene.import_result(result, scene.ImportOptions(camera=camera == "1", background=False))
    objs = [imp.rig] + ([imp.camera] if imp.camera is not None else [])
    s = export_fbx.export_fbx(out, objs, preset=preset)
except (scene.ResultImportError, export_fbx.FbxExportError) as exc:
    print(f"error: {exc}", file=sys.stderr)
    sys.exit(2)
print("FBX", s["path"], s["frame_start"], s["frame_end"])
""" % NO_BPY_EXIT


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a result: animated FBX (headless Blender), FLAME params, Live Link CSV")
    p.add_argument("result")
    p.add_argument("--fbx", help="write an animated FBX of the FLAME head rig")
    p.add_argument("--preset", choices=("unity", "unreal", "blender"), default="unity", help="FBX axis preset")
    p.add_argument("--camera", action="store_true", help="include the tracked camera in the FBX")
    p.add_argument("--blender-python", default=os.environ.get("FLAMECAP_BPY_PYTHON", ""),
                   help="a Python with bpy (default: $FLAMECAP_BPY_PYTHON, else this Python)")
    p.add_argument("--addon-dir", default=os.environ.get("FLAMECAP_ADDON_DIR", ""),
                   help="folder holding blender_addon/ (default: next to the core source)")
    p.add_argument("--params-npz", help="FLAME parameters as .npz")
    p.add_argument("--params-json", help="FLAME parameters as JSON")
    p.add_argument("--livelink-csv", help="Live Link Face CSV of ARKit weights (needs --anim)")
    p.add_argument("--anim", help="shape-key animation from 'flamecap retarget shapekeys' (ARKit-named keys)")
    p.set_defaults(handler=cmd_export)


def _addon_parent(arg: str) -> Path:
    if arg:
        d = Path(arg)
        d = d.parent if d.name == "blender_addon" else d
    else:
        d = Path(__file__).resolve().parents[3]
    if not (d / "blender_addon" / "export_fbx.py").is_file():
        raise InputError(f"the Blender add-on sources are not in {d}; pass --addon-dir (the folder that holds "
                         f"blender_addon/) or set FLAMECAP_ADDON_DIR")
    return d


def export_fbx_subprocess(result: str, out: str, preset: str = "unity", camera: bool = False,
                          python: str = "", addon_dir: str = "", timeout_s: float = 900) -> Path:
    """Run the FBX export in a headless-bpy subprocess; raises a one-line error on failure."""
    from ..contract.result import load_result
    load_result(result)  # validate here: a clear contract error before starting Blender
    if not out.lower().endswith(".fbx"):
        raise InputError(f"{out}: the FBX file name must end in .fbx")
    exe = python or sys.executable
    argv = [exe, "-c", _FBX_SCRIPT, str(_addon_parent(addon_dir)), os.path.abspath(result), os.path.abspath(out),
            preset, "1" if camera else "0"]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    except FileNotFoundError:
        raise InputError(f"Python not found: {exe}; pass --blender-python PATH (a Python with bpy)") from None
    except subprocess.TimeoutExpired:
        raise FlameCapError(f"the FBX export did not finish within {timeout_s:.0f} s") from None
    if proc.returncode == NO_BPY_EXIT:
        raise InputError(f"no bpy (headless Blender) in {exe}; 'pip install bpy==5.0.1' there, or pass "
                         f"--blender-python / set FLAMECAP_BPY_PYTHON to a Python that has it")
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        err = next((ln for ln in reversed(lines) if ln.startswith("error: ")), lines[-1] if lines else "")
        raise FlameCapError(f"FBX export failed: {err.removeprefix('error: ')}")
    return Path(out)


def cmd_export(args) -> int:
    import numpy as np
    from ..contract.result import load_result
    from .. import export_formats as ef
    if not any((args.fbx, args.params_npz, args.params_json, args.livelink_csv)):
        raise InputError("nothing to export; give --fbx, --params-npz, --params-json or --livelink-csv")
    res = load_result(args.result)
    from ..contract.npzio import check_output_path
    for flag, out in (("--fbx", args.fbx), ("--params-npz", args.params_npz), ("--params-json", args.params_json),
                      ("--livelink-csv", args.livelink_csv)):
        if out is not None:  # every destination checked before anything is written
            check_output_path(out, what=flag)
    take = None
    if args.livelink_csv:  # check everything before writing anything
        if not args.anim:
            raise InputError("--livelink-csv needs --anim ANIM.npz from 'flamecap retarget shapekeys' "
                             "(ARKit-named keys)")
        from ..retarget.io import load_animation
        anim = load_animation(args.anim)
        if anim.weights.shape[0] != res.n_frames:
            raise InputError(f"{args.anim} has {anim.weights.shape[0]} frames, the result {res.n_frames}; "
                             f"retarget this result again")
        ark = anim.arkit()
        if not ark:
            raise InputError(f"{args.anim} has no ARKit-named channels")
        take = ef.take_from_weights(ark, np.asarray(res["time_s"]), res.fps, ef.result_rotations(res))
    written = []
    if args.fbx:
        written.append(export_fbx_subprocess(args.result, args.fbx, args.preset, args.camera,
                                             args.blender_python, args.addon_dir))
    if args.params_npz:
        written.append(ef.write_params_npz(args.params_npz, res))
    if args.params_json:
        written.append(ef.write_params_json(args.params_json, res))
    if take is not None:
        written.append(ef.write_live_link_csv(args.livelink_csv, take))
    for w in written:
        print(f"wrote {w}")
    return 0
