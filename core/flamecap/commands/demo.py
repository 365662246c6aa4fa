"""``flamecap demo -o DIR``: render a synthetic clip of FlameCap's own head, track it and build a Blender scene
and an FBX from it; no FLAME file, and no network once MediaPipe's face models are there (see
:mod:`flamecap.demo`)."""
from __future__ import annotations

import argparse
import os

from ..cli import add_progress_argument


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="track a synthetic clip end to end (result.npz, scene.blend, FBX); no FLAME "
                                         "file; fetches MediaPipe's face models once if missing")
    p.add_argument("-o", "--out", required=True, help="output folder")
    p.add_argument("--frames", type=int, default=50, help="clip length in frames (default 50)")
    p.add_argument("--size", default="480x360", help="WIDTHxHEIGHT of the clip (default 480x360)")
    p.add_argument("--quality", choices=("fast", "production"), default="fast")
    p.add_argument("--no-blender", action="store_true", help="write only the footage and result.npz")
    p.add_argument("--blender-python", default=os.environ.get("FLAMECAP_BPY_PYTHON", ""),
                   help="a Python with bpy (default: $FLAMECAP_BPY_PYTHON, else this Python)")
    p.add_argument("--addon-dir", default=os.environ.get("FLAMECAP_ADDON_DIR", ""),
                   help="folder holding blender_addon/ (default: the add-on sources this install carries)")
    add_progress_argument(p)
    p.set_defaults(handler=cmd_demo)


def cmd_demo(args) -> int:
    from ..cli import progress_reporter
    from ..demo import DemoConfig, run_demo
    from .synth import parse_size
    w, h = parse_size(args.size)
    cfg = DemoConfig(n_frames=args.frames, width=w, height=h, quality=args.quality)
    emitter, progress = progress_reporter(args.progress, command="demo")
    o = run_demo(args.out, cfg, blender=not args.no_blender, blender_python=args.blender_python,
                 addon_dir=args.addon_dir, progress=progress)
    if emitter:
        emitter.emit("done", result=str(o.result.resolve()), blend=str(o.blend) if o.blend else None,
                     fbx=str(o.fbx) if o.fbx else None, summary=o.summary())
        return 0
    if args.progress == "text":
        print(f"footage:      {o.footage.resolve()}")
        print(f"ground truth: {o.ground_truth.resolve()}")
        print(f"result:       {o.result.resolve()}")
        if o.blend:
            print(f"scene:        {o.blend.resolve()}  (open in Blender; the camera shows the footage)")
            print(f"fbx:          {o.fbx.resolve()}")
        if o.blender_note:
            print(o.blender_note)
        print(o.summary())
    return 0
