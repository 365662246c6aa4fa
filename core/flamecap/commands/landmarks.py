"""``flamecap landmarks FOOTAGE -o landmarks.npz`` (2D alignment, cached for the tracker) and
``flamecap embed --model MODEL`` (self-calibrate the MediaPipe → mesh binding, print kept/dropped and the
comparison with the model's official embedding when it has one)."""
from __future__ import annotations

import argparse
import json
import logging

from ..errors import InputError, NoFaceError
from ..cli import progress_reporter
from ..landmarks import ALIGNER_HELP, ALIGNERS, DEFAULT_ALIGNER, FACE_ALIGNERS

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    from ..cli import add_progress_argument
    p = sub.add_parser("landmarks", help="track 2D face landmarks in a video or image sequence")
    p.add_argument("footage", help="video file, image folder, or pattern like frames/%%04d.png")
    p.add_argument("-o", "--output", required=True, help="landmarks .npz to write")
    p.add_argument("--start", type=int, default=0, help="first frame (default 0)")
    p.add_argument("--end", type=int, default=None, help="stop before this frame")
    p.add_argument("--stride", type=int, default=1, help="keep every n-th frame")
    p.add_argument("--fps", type=float, default=None, help="frame rate override (image sequences: 25)")
    p.add_argument("--aligner", default=DEFAULT_ALIGNER, choices=tuple(ALIGNERS), help=ALIGNER_HELP)
    p.add_argument("--face-index", type=int, default=None,
                   help="follow the n-th face from the left (default: the largest)")
    p.add_argument("--points", help="--aligner file: CSV or .npz with the points")
    p.add_argument("--weights", help="--aligner dense: network weights")
    p.add_argument("--device", default=None, help="--aligner dense: cpu / cuda")
    add_progress_argument(p)
    p.set_defaults(handler=cmd_landmarks, run_inputs=("footage", "points", "weights"), run_outputs=("output",))

    e = sub.add_parser("embed", help="self-calibrate the MediaPipe → head mesh binding of a model")
    e.add_argument("--model", default=None, help="model .npz/.pkl path or registered name (default model)")
    e.add_argument("--no-cache", action="store_true", help="recompute even when cached")
    e.add_argument("--json", action="store_true", help="print the statistics as JSON")
    add_progress_argument(e)
    e.set_defaults(handler=cmd_embed)


def cmd_landmarks(args) -> int:
    from ..landmarks import get_aligner, track_footage
    from ..video import open_footage
    from ..contract.npzio import check_output_path
    em, prog = progress_reporter(args.progress)
    if em:
        em.emit("start", command="landmarks", footage=str(args.footage))
    check_output_path(args.output, what="landmarks output")  # fail before tracking, not after
    if args.face_index is not None and args.face_index < 0:
        raise InputError(f"--face-index must be >= 0 (0 = the leftmost face), got {args.face_index}")
    footage = open_footage(args.footage, start=args.start, end=args.end, stride=args.stride, fps=args.fps)
    options = {}
    if args.aligner in FACE_ALIGNERS:
        options["face_index"] = args.face_index
    elif args.aligner == "file":
        if not args.points:
            raise InputError("--aligner file needs --points FILE (CSV or .npz with the 2D points)")
        options["path"] = args.points
    elif args.aligner == "dense":
        if args.weights:
            options["weights"] = args.weights
        if args.device:
            options["device"] = args.device
    aligner = get_aligner(args.aligner, **options)
    track = track_footage(footage, aligner, progress=prog)
    if track.n_frames == 0:
        raise InputError(f"no frames were read from {args.footage}; check the frame range")
    if not track.valid.any():
        raise NoFaceError(f"no face found in any of the {track.n_frames} frames of {args.footage}; "
                          f"check the footage shows a face (frontal, not too small)")
    out = track.save(args.output)
    msg = (f"{out}: {int(track.valid.sum())}/{track.n_frames} frames with a face, {track.n_points} points"
           + (" (footage ended early)" if footage.ended_early else ""))
    if em:
        em.emit("done", result=str(out.resolve()), valid_frames=int(track.valid.sum()), frames=track.n_frames)
    elif args.progress == "text":
        print(msg)
    return 0


def _load_model(spec):
    try:
        from ..flame.io import load_model
    except ImportError:  # the model loader is not in this build: accept a converted .npz only
        from ..contract.model_format import load_model_npz
        if spec is None:
            raise InputError("give --model PATH.npz (no model registry in this build)") from None
        return load_model_npz(spec)
    return load_model(spec)


def cmd_embed(args) -> int:
    from ..binding.mediapipe import compare_bindings, mediapipe_embedding_report, official_binding
    em, prog = progress_reporter(args.progress)
    if em:
        em.emit("start", command="embed", model=str(args.model))
    model = _load_model(args.model)
    rep = mediapipe_embedding_report(model, cache=not args.no_cache, progress=prog)
    stats = rep.summary()
    if all(k in model for k in ("mp_face_idx", "mp_bary", "mp_landmark_indices")):
        cmp = compare_bindings(model, rep.binding, official_binding(model))
        stats["official"] = {k: cmp[k] for k in ("n_b", "n_common", "mean_mm", "median_mm", "max_mm")}
        stats["official"]["official_points_dropped"] = cmp["only_in_b"]
    if em:
        em.emit("done", result=None, **{k: v for k, v in stats.items()})
    elif args.json:
        print(json.dumps(stats, indent=1))
    else:
        print(f"self-calibrated MediaPipe embedding: {stats['kept']} of 478 points kept, {stats['dropped']} dropped "
              f"({stats['dropped_views_disagree']} views disagree, {stats['dropped_unseen_or_few_views']} seen too "
              f"rarely); {stats['renders_with_face']}/{stats['renders']} renders with a face"
              + (" [cached]" if rep.from_cache else ""))
        if "official" in stats:
            o = stats["official"]
            print(f"vs official embedding ({o['n_b']} points, {o['n_common']} in common): mean {o['mean_mm']:.2f} mm, "
                  f"median {o['median_mm']:.2f} mm, max {o['max_mm']:.2f} mm")
        else:
            print("the model carries no official MediaPipe embedding to compare with")
    return 0
