"""``flamecap export RESULT [--fbx out.fbx --preset unity|unreal|blender] [--params-npz] [--params-json]
[--livelink-csv out.csv --anim anim.npz]``.

FBX goes through headless Blender in a subprocess (the core never imports bpy): a Python that has ``bpy``
(``--blender-python`` / ``$FLAMECAP_BPY_PYTHON``, default this Python) runs the add-on's ``headless`` fbx job
(``scene.import_result`` + ``export_fbx.export_fbx``); see :mod:`flamecap.headless_blender`.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import InputError

def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a result: animated FBX (headless Blender), FLAME params, Live Link CSV")
    p.add_argument("result")
    p.add_argument("--fbx", help="write an animated FBX of the FLAME head rig")
    p.add_argument("--preset", choices=("unity", "unreal", "blender"), default="unity", help="FBX axis preset")
    p.add_argument("--camera", action="store_true", help="include the tracked camera in the FBX")
    p.add_argument("--blender-python", default=os.environ.get("FLAMECAP_BPY_PYTHON", ""),
                   help="a Python with bpy (default: $FLAMECAP_BPY_PYTHON, else this Python)")
    p.add_argument("--addon-dir", default=os.environ.get("FLAMECAP_ADDON_DIR", ""),
                   help="folder holding blender_addon/ (default: the add-on sources this install carries)")
    p.add_argument("--params-npz", help="FLAME parameters as .npz")
    p.add_argument("--params-json", help="FLAME parameters as JSON")
    p.add_argument("--livelink-csv", help="Live Link Face CSV of ARKit weights (needs --anim)")
    p.add_argument("--anim", help="shape-key animation from 'flamecap retarget shapekeys' (ARKit-named keys)")
    p.set_defaults(handler=cmd_export, run_inputs=("result", "anim"),
                   run_outputs=("fbx", "params_npz", "params_json", "livelink_csv"))


def export_fbx_subprocess(result: str, out: str, preset: str = "unity", camera: bool = False,
                          python: str = "", addon_dir: str = "", timeout_s: float = 900) -> Path:
    """Run the FBX export in a headless-bpy subprocess; raises a one-line error on failure."""
    from ..contract.result import load_result
    load_result(result)  # validate here: a clear contract error before starting Blender
    if not out.lower().endswith(".fbx"):
        raise InputError(f"{out}: the FBX file name must end in .fbx")
    from ..headless_blender import run_job
    path, _, _ = run_job(["fbx", os.path.abspath(result), os.path.abspath(out), preset, "1" if camera else "0"],
                         python, addon_dir, timeout_s, what="FBX export").rsplit(maxsplit=2)
    return Path(path)


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
