"""``flamecap retarget identity|shapekeys``: drive another FLAME identity or a shape-key character."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from ..cli import add_progress_argument
from ..errors import InputError

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("retarget", help="retarget a result onto another FLAME identity or a shape-key character")
    rs = p.add_subparsers(dest="retarget_kind", metavar="KIND")
    rs.required = True

    q = rs.add_parser("identity", help="the tracked motion on another FLAME identity (identity swap)")
    q.add_argument("result")
    g = q.add_mutually_exclusive_group(required=True)
    g.add_argument("--target-result", help="a result whose identity (shape, head) to use")
    g.add_argument("--shape", help="a shape vector: .npy, .npz with 'shape' (e.g. MICA), or .txt")
    q.add_argument("--model", help="FLAME model (name or path) the shape belongs to (with --shape)")
    q.add_argument("--zero-transl", action="store_true", help="keep the character at the origin")
    q.add_argument("-o", "--output", required=True)
    add_progress_argument(q)
    q.set_defaults(handler=cmd_identity, run_inputs=("result", "target_result", "shape"), run_outputs=("output",),
                   run_models=("model",))

    q = rs.add_parser("shapekeys", help="solve a character's shape-key values (ARKit-52 or custom) per frame")
    q.add_argument("result")
    q.add_argument("--target", required=True, help="character .npz exported by the add-on (flamecap.character)")
    q.add_argument("--pairs", help="JSON {\"flame\": [vertex ids], \"target\": [vertex ids]} correspondences "
                                  "(default: those in the character file, else automatic landmarks)")
    q.add_argument("--channels", help="JSON per-channel gain/offset/limits {\"default\": {...}, \"channels\": {...}}")
    q.add_argument("--keys", help="comma-separated key names to solve (default: all that move the face)")
    q.add_argument("--smooth", type=float, default=0.05, help="temporal smoothness (relative, 0 = per frame)")
    q.add_argument("--rigid", action="store_true", help="similarity only, no non-rigid registration")
    q.add_argument("--full-jaw", action="store_true",
                   help="transfer FLAME's full posed deformation (default: the jaw apart from the closed-jaw "
                        "expressions, as shape-key rigs compose jawOpen with the other keys)")
    q.add_argument("--no-drive", action="store_true",
                   help="solve jawOpen / eyeBlink / eyeLook with the other keys (default: set them from the take's "
                        "mouth opening, eye closure and gaze)")
    q.add_argument("--cache-dir", help="where per-character calibrations are kept (default: ~/.flamecap/cache/"
                                      "retarget)")
    q.add_argument("--no-cache", action="store_true", help="calibrate again and keep nothing")
    q.add_argument("-o", "--output", required=True, help="animation .npz (flamecap.shapekey_anim)")
    q.add_argument("--csv", help="also write the ARKit channels as a Live Link Face CSV")
    add_progress_argument(q)
    q.set_defaults(handler=cmd_shapekeys, run_inputs=("result", "target", "pairs", "channels"),
                   run_outputs=("output", "csv"))


def _emitter(args):
    """A JsonlEmitter (``--progress jsonl``), a text printer, or None."""
    import sys
    from ..contract import events
    if args.progress == "jsonl":
        em = events.JsonlEmitter(sys.stdout)
        em.emit("start", command=f"retarget {args.retarget_kind}")
        return em
    if args.progress == "none":
        return None

    def text(stage, fraction, message):
        print(f"[{stage} {100 * fraction:3.0f}%] {message}", flush=True)
    return text


def _progress_fn(em):
    if em is None or callable(em):
        return em
    return em.progress


def _done(em, path: Path) -> None:
    if em is not None and not callable(em):
        em.emit("done", result=str(Path(path).resolve()))
    elif em is not None:
        print(f"wrote {path}")


def _load_shape(path: str) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"shape file not found: {p}")
    try:
        if p.suffix == ".npy":
            return np.load(p, allow_pickle=False).reshape(-1)
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                for k in ("shape", "shape_code", "betas"):
                    if k in z.files:
                        return np.asarray(z[k]).reshape(-1)
            raise InputError(f"{p} has no 'shape' array")
        return np.loadtxt(p).reshape(-1)
    except (ValueError, OSError) as exc:
        raise InputError(f"cannot read shape vector {p}: {exc}") from None


def cmd_identity(args) -> int:
    from ..contract.result import load_result, save_result
    from ..retarget.identity import swap_identity
    res = load_result(args.result)
    if args.target_result:
        out = swap_identity(res, target_result=load_result(args.target_result), keep_transl=not args.zero_transl)
    else:
        from ..flame.io import load_model
        model, shape = load_model(args.model), _load_shape(args.shape)
        if shape.shape[0] != model.n_shape:
            raise InputError(f"--shape {args.shape} has {shape.shape[0]} coefficients but the model has "
                             f"{model.n_shape}; give the shape estimated for this model (or --model the one it "
                             f"belongs to)")
        out = swap_identity(res, shape, model=model, keep_transl=not args.zero_transl)
    path = save_result(args.output, out)
    _done(_emitter(args), Path(path))
    return 0


def _read_json(path: str, what: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read {what} {path}: {exc}") from None


def cmd_shapekeys(args) -> int:
    from ..contract.npzio import check_output_path
    from ..contract.result import load_result
    from ..paths import cache_dir
    from ..retarget.arkit import ChannelMap
    from ..retarget.calibrate import calibrate
    from ..retarget.io import load_character, save_animation
    from ..retarget.shapekeys import retarget_shape_keys
    from ..retarget.solve import SolveConfig
    check_output_path(args.output, "animation")
    res = load_result(args.result)
    target, pairs = load_character(args.target)
    if args.pairs:
        spec = _read_json(args.pairs, "correspondence file")
        if "flame" not in spec or "target" not in spec:
            raise InputError(f"{args.pairs} must hold {{\"flame\": [...], \"target\": [...]}} vertex ids")
        pairs = (spec["flame"], spec["target"])
    channels = ChannelMap.from_dict(_read_json(args.channels, "channel settings")) if args.channels else None
    solve = SolveConfig(smooth=args.smooth)
    em = _emitter(args)
    progress = _progress_fn(em)
    cal = calibrate(res, target, pairs, cache_dir=None if args.no_cache else (args.cache_dir or cache_dir("retarget")),
                    nonrigid=not args.rigid, progress=progress)
    keys = [k.strip() for k in args.keys.split(",")] if args.keys else None
    anim = retarget_shape_keys(res, target, cal.correspondences, registration=cal.registration, channels=channels,
                               solve=solve, keys=keys, split_jaw=not args.full_jaw, drive=not args.no_drive,
                               progress=progress)
    path = save_animation(args.output, anim, target.name,
                          {"key": cal.key, "cached": cal.cached, "seconds": round(cal.seconds, 3)})
    if args.csv:
        from ..export_formats import result_rotations, take_from_weights, write_live_link_csv
        ark = anim.arkit()
        if not ark:
            raise InputError(f"'{target.name}' has no ARKit-named keys; a Live Link Face CSV needs them")
        write_live_link_csv(args.csv, take_from_weights(ark, np.asarray(res["time_s"]), res.fps,
                                                        result_rotations(res)))
    log.info("retargeted %d frames onto %d keys of '%s' (calibration %s, solve %.3f s, mean residual %.3g)",
             res.n_frames, len(anim.names), target.name, "cached" if cal.cached else f"{cal.seconds:.1f} s",
             anim.timings["solve_s"], float(np.mean(anim.residual)))
    _done(em, Path(path))
    return 0
