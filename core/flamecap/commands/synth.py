"""``flamecap synth``: render a synthetic ground-truth clip (video + gt.npz)."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..cli import add_progress_argument


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("synth", help="render a synthetic clip with ground truth (video + gt.npz)")
    p.add_argument("-o", "--out", required=True, help="output folder (clip.mp4, gt.npz)")
    p.add_argument("--model", default=None,
                   help="'synthetic' (FlameCap's head), a folder of FLAME reference data (FLAME-topology test "
                        "head), a FLAME .npz/.pkl or registered name; default: the registered FLAME model, "
                        "else $FLAMECAP_FLAME_REFERENCE, else 'synthetic'")
    p.add_argument("--frames", type=int, default=75)
    p.add_argument("--fps", type=float, default=25.0)
    p.add_argument("--size", default="480x360", help="WIDTHxHEIGHT")
    p.add_argument("--yaw", type=float, default=30.0, help="maximum head yaw in degrees (up to 45 is realistic)")
    p.add_argument("--seed", type=int, default=0)
    add_progress_argument(p)
    p.set_defaults(handler=cmd_synth, run_models=("model",))


def resolve_head_model(spec: str | None):
    """A head to render/track: see ``--model`` above."""
    from ..errors import InputError, ModelError
    from ..flame.synthetic import flame_reference_head, make_synthetic_model
    if spec == "synthetic":
        return make_synthetic_model()
    if spec is not None and Path(spec).is_dir():
        return flame_reference_head(Path(spec))
    if spec is not None:
        from ..flame.io import load_model
        return load_model(spec)
    try:
        from ..flame.io import load_model
        return load_model(None)
    except ModelError:
        ref = os.environ.get("FLAMECAP_FLAME_REFERENCE")
        if ref:
            if not Path(ref).is_dir():
                raise InputError(f"FLAMECAP_FLAME_REFERENCE={ref} is not a folder") from None
            return flame_reference_head(Path(ref))
        return make_synthetic_model()


def parse_size(text: str) -> tuple[int, int]:
    from ..errors import InputError
    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise InputError(f"--size must look like 480x360, got '{text}'") from None
    return w, h


def cmd_synth(args) -> int:
    from ..cli import progress_reporter
    from ..synth import SynthConfig, render_clip
    from ..contract.npzio import check_output_path
    w, h = parse_size(args.size)
    check_output_path(Path(args.out) / "gt.npz", what="synth output")  # before building/rendering anything
    cfg = SynthConfig(n_frames=args.frames, fps=args.fps, width=w, height=h, yaw_max_deg=args.yaw, seed=args.seed)
    model = resolve_head_model(args.model)
    emitter, progress = progress_reporter(args.progress, command="synth")
    gt = render_clip(model, args.out, cfg, progress=progress)
    if emitter:
        emitter.emit("done", result=str(Path(gt).resolve()))
    elif args.progress == "text":
        print(f"wrote {Path(args.out) / 'clip.mp4'} and {gt} ({cfg.n_frames} frames, {model.release})")
    return 0
