"""``flamecap track FOOTAGE -o RESULT.npz`` (landmarks → FLAME fit → result), ``flamecap fit LANDMARKS.npz
-o RESULT.npz`` (fit cached landmarks) and ``flamecap smooth RESULT -o OUT --strength s`` (post-filter)."""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from ..errors import InputError, NoFaceError

log = logging.getLogger(__name__)


def _add_fit_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", required=True, help="result .npz to write (atomically)")
    p.add_argument("--model", default=None, help="FLAME .npz/.pkl path or registered name (default model)")
    p.add_argument("--quality", default="fast", choices=("fast", "production"))
    p.add_argument("--identity", default="none", choices=("none", "mica"),
                   help="identity prior: none, or MICA from the footage (needs its weights)")
    p.add_argument("--identity-weights", default=None, help="MICA weights (mica.tar); default: installed")
    p.add_argument("--identity-weight", type=float, default=2.0, help="strength of the identity prior")
    p.add_argument("--focal", type=float, default=None, help="focal length in pixels (default: estimated)")
    p.add_argument("--no-temporal", action="store_true", help="unordered images: no temporal smoothing term")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where the networks run (--aligner dense, --identity mica); the fitter uses the CPU")


def register(sub: argparse._SubParsersAction) -> None:
    from ..cli import add_progress_argument
    p = sub.add_parser("track", help="track a face in footage and fit FLAME → result .npz")
    p.add_argument("footage", help="video file, image folder, or pattern like frames/%%04d.png")
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--end", type=int, default=None)
    p.add_argument("--stride", type=int, default=1)
    p.add_argument("--fps", type=float, default=None, help="frame rate override (image sequences: 25)")
    p.add_argument("--aligner", default="mediapipe", choices=("mediapipe", "dense", "file"))
    p.add_argument("--weights", default=None, help="--aligner dense: network weights")
    p.add_argument("--points", default=None, help="--aligner file: CSV or .npz with the points")
    p.add_argument("--no-pipeline", action="store_true",
                   help="decode frames in the landmark thread (no read-ahead thread); same result, slower")
    p.add_argument("--landmarks-cache", default=None,
                   help="landmarks .npz: reused when it exists, written after tracking otherwise")
    _add_fit_arguments(p)
    add_progress_argument(p)
    p.set_defaults(handler=cmd_track, run_inputs=("footage", "landmarks_cache", "points", "weights", "identity_weights"),
                   run_outputs=("output", "landmarks_cache"), run_models=("model",))

    f = sub.add_parser("fit", help="fit FLAME to a landmarks .npz (from 'flamecap landmarks')")
    f.add_argument("landmarks")
    _add_fit_arguments(f)
    add_progress_argument(f)
    f.set_defaults(handler=cmd_fit, run_inputs=("landmarks", "identity_weights"), run_outputs=("output",),
                   run_models=("model",))

    s = sub.add_parser("smooth", help="post-filter a result's per-frame parameters (re-applicable)")
    s.add_argument("result")
    s.add_argument("-o", "--output", required=True)
    s.add_argument("--strength", type=float, default=1.0, help="0 = unchanged, 1 = default, more = smoother")
    s.add_argument("--method", default="one_euro", choices=("one_euro", "savgol"))
    add_progress_argument(s)
    s.set_defaults(handler=cmd_smooth, run_inputs=("result",), run_outputs=("output",))


class _Progress:
    """Overall progress over weighted stages, to text, JSON lines, or nowhere."""

    def __init__(self, mode: str, spans: dict[str, tuple[float, float]]):
        self.mode, self.spans = mode, spans
        self.em = None
        self._last = -1
        if mode == "jsonl":
            from ..contract.events import JsonlEmitter
            self.em = JsonlEmitter(sys.stdout)

    def emit(self, event: str, **fields) -> None:
        if self.em:
            self.em.emit(event, **fields)

    def __call__(self, stage: str, fraction: float, message: str = "") -> None:
        a, b = self.spans.get(stage, (0.0, 1.0))
        overall = a + (b - a) * min(max(float(fraction), 0.0), 1.0)
        if self.em:
            self.em.progress(stage, overall, message)
        elif self.mode == "text":
            step = int(overall * 20)
            if step != self._last:
                self._last = step
                print(f"[{stage}] {overall * 100:5.1f}% {message}", flush=True)

    def sub(self, stage_override: str | None = None):
        return lambda stage, frac, msg="": self(stage_override or stage, frac, msg)


def _load_model(spec):
    from ..flame.io import load_model
    return load_model(spec)


def _config(args):
    """Fitter settings from the command line (torch-free: called before any work to refuse bad values).
    The fitter runs on the CPU (its small batched solves are faster there); ``--device`` picks where the
    networks run (``--aligner dense``, ``--identity mica``)."""
    from ..fit.config import FitConfig
    return FitConfig.preset(args.quality, focal_px=args.focal, temporal=not args.no_temporal,
                            w_shape_prior=args.identity_weight if args.identity == "mica" else 0.0)


def _binding_for(scheme: str, n_points: int | None, model, aligner=None):
    """The one place the track and fit commands bind points to the head (see :mod:`flamecap.binding`)."""
    from ..binding import bind
    if hasattr(aligner, "check_model"):
        aligner.check_model(model)
    return bind(scheme, model, n_points=n_points, surface_points=getattr(aligner, "surface_points", None))


def _check_before_work(args) -> None:
    """Refuse bad settings and an unwritable output before any slow work (landmarks, fitting)."""
    from ..contract.npzio import check_output_path
    check_output_path(args.output, what="result")
    _config(args)   # validates --focal, --quality ... (raises InputError)


def _fit_and_write(args, track, model, binding, prog: _Progress, source: dict, aligner_name: str,
                   shape_prior=None, t0: float | None = None, t_first: float | None = None) -> Path:
    from ..contract.result import save_result
    from ..fit import build_result, fit_track
    if not track.valid.any():
        raise NoFaceError(f"no face found in any of the {track.n_frames} frames; check the footage shows a "
                          f"face (frontal, not too small) or the --start/--end range")
    from ..flame.eyelids import with_eyelids
    cfg = _config(args)
    model = with_eyelids(model, binding if track.scheme == "mediapipe478" else None)
    fit = fit_track(track, binding, model, cfg, shape_prior=shape_prior, progress=prog)
    prog("write", 0.0, "writing result")
    result = build_result(fit, track, model, source=source, aligner=aligner_name, quality=args.quality,
                          identity=args.identity, focal_estimated=args.focal is None)
    out = save_result(args.output, result)
    prog("write", 1.0, "done")
    n_valid = int(fit.valid.sum())
    now = time.perf_counter()
    dt = now - (t0 or now)
    timing = {} if t_first is None else {"seconds_from_first_frame": round(now - t_first, 3)}
    prog.emit("done", result=str(Path(out).resolve()), frames=track.n_frames, valid_frames=n_valid,
              seconds=round(dt, 3), **timing)
    if prog.mode == "text":
        import numpy as np
        print(f"{out}: {n_valid}/{track.n_frames} frames fitted, mean error "
              f"{float(np.nanmean(fit.fit_error_px)):.2f} px, focal {fit.focal:.0f} px, {dt:.1f} s")
    return out


def cmd_track(args) -> int:
    from ..landmarks import get_aligner, track_footage
    from ..landmarks.base import LandmarkTrack
    from ..video import open_footage
    t0 = time.perf_counter()
    with_mica = args.identity == "mica"
    spans = {"load": (0.0, 0.02), "landmarks": (0.02, 0.6), "identity": (0.6, 0.7) if with_mica else (0.6, 0.6),
             "fit": (0.7 if with_mica else 0.6, 0.85), "refine": (0.85, 0.97), "write": (0.97, 1.0)}
    prog = _Progress(args.progress, spans)
    prog.emit("start", command="track", footage=str(args.footage), output=str(args.output))
    _check_before_work(args)
    # inputs in command-line order, all before the slow landmark pass
    footage = open_footage(args.footage, start=args.start, end=args.end, stride=args.stride, fps=args.fps)
    cache = Path(args.landmarks_cache) if args.landmarks_cache else None
    cached = None
    if cache is not None and cache.is_file():   # a cache of other footage is refused before any slow work
        cached = LandmarkTrack.load(cache)
        check_cache_matches(cached, footage, cache)
    prog("load", 0.0, "loading model")
    model = _load_model(args.model)
    # the fitter's torch import (~1 s) now rather than during or after the landmark pass: imports hold the
    # GIL, so a background import stalls MediaPipe's thread (measured: 0.35 s slower end to end)
    import flamecap.fit.tracker  # noqa: F401
    options = {}
    if args.aligner == "dense":
        options["device"] = args.device
        if args.weights:
            options["weights"] = args.weights
    if args.aligner == "file":
        if not args.points:
            raise InputError("--aligner file needs --points FILE (CSV or .npz with the 2D points)")
        options["path"] = args.points
    if with_mica:   # fail fast on missing identity weights, before the slow landmark pass
        from ..identity.checkpoint import resolve_weights
        resolve_weights(args.identity_weights)
    aligner = get_aligner(args.aligner, **options)
    binding = _binding_for(aligner.scheme, getattr(aligner, "n_points", None), model, aligner)
    if cached is not None:
        track = cached
        prog("landmarks", 1.0, f"landmarks from {cache}")
    else:
        track = track_footage(footage, aligner, progress=prog, prefetch=0 if args.no_pipeline else 4)
        if cache is not None:
            track.save(cache)
    if track.n_frames == 0:
        raise InputError(f"no frames were read from {args.footage}; check the frame range")
    shape_prior = None
    if with_mica:
        from ..identity.mica import estimate_shape_from_footage
        shape_prior = estimate_shape_from_footage(args.footage, model, args.identity_weights, progress=prog,
                                                  device=None if args.device == "auto" else args.device)
    recorded = track.meta.get("footage") if isinstance(track.meta.get("footage"), dict) else footage.source
    source = dict(recorded, path=str(Path(args.footage).resolve()), n_frames=track.n_frames)
    _fit_and_write(args, track, model, binding, prog, source, aligner.name, shape_prior, t0,
                   t_first=footage.first_frame_at)
    return 0


def check_cache_matches(track, footage, cache: Path) -> None:
    """A ``--landmarks-cache`` is used only for the footage (size, frame selection, sampled content hash) it
    was made from; anything else is refused in one line rather than fitted under the new clip's name."""
    made = track.meta.get("footage_fingerprint")
    now = footage.fingerprint()
    if not isinstance(made, dict):
        raise InputError(f"landmarks cache {cache} does not record the footage it was made from (made by an "
                         f"older FlameCap); delete it or pass another --landmarks-cache")
    diff = [k for k in now if made.get(k) != now[k]]
    if diff:
        what = ", ".join(f"{k} {made.get(k)!r} vs {now[k]!r}" if k != "sha256_sampled" else "content" for k in diff)
        raise InputError(f"landmarks cache {cache} was made from other footage than {footage.path} ({what}); "
                         f"delete it or pass another --landmarks-cache")


def cmd_fit(args) -> int:
    from ..contract.result import SOURCE_FIELDS
    from ..landmarks.base import LandmarkTrack
    t0 = time.perf_counter()
    spans = {"load": (0.0, 0.05), "identity": (0.05, 0.15), "fit": (0.15, 0.7), "refine": (0.7, 0.97),
             "write": (0.97, 1.0)}
    prog = _Progress(args.progress, spans)
    prog.emit("start", command="fit", landmarks=str(args.landmarks), output=str(args.output))
    _check_before_work(args)
    if not Path(args.landmarks).is_file():
        raise InputError(f"landmarks file not found: {args.landmarks}; create it with 'flamecap landmarks'")
    track = LandmarkTrack.load(args.landmarks)
    model = _load_model(args.model)
    aligner_name = str(track.meta.get("aligner", track.scheme))
    binding = _binding_for(track.scheme, track.n_points, model)
    shape_prior = None
    if args.identity == "mica":
        footage = track.meta.get("footage", {}).get("path") if isinstance(track.meta.get("footage"), dict) else None
        if not footage:
            raise InputError("--identity mica needs the footage; the landmarks file does not record it: use "
                             "'flamecap track FOOTAGE --identity mica'")
        from ..identity.mica import estimate_shape_from_footage
        shape_prior = estimate_shape_from_footage(footage, model, args.identity_weights, progress=prog,
                                                  device=None if args.device == "auto" else args.device)
    footage = track.meta.get("footage") if isinstance(track.meta.get("footage"), dict) else {}
    counts = {k: footage[k] for k in SOURCE_FIELDS if k in footage}     # what the landmark pass read
    source = {"path": str(Path(args.landmarks).resolve()), "kind": "landmarks", "n_frames": track.n_frames,
              "footage": footage.get("path"), **counts}
    _fit_and_write(args, track, model, binding, prog, source, aligner_name, shape_prior, t0)
    return 0


def cmd_smooth(args) -> int:
    from ..smooth import smooth_file
    prog = _Progress(args.progress, {"smooth": (0.0, 0.9), "write": (0.9, 1.0)})
    prog.emit("start", command="smooth", result=str(args.result), output=str(args.output))
    prog("smooth", 0.0, f"smoothing (strength {args.strength})")
    out = smooth_file(args.result, args.output, args.strength, args.method)
    prog("write", 1.0, "done")
    prog.emit("done", result=str(Path(out).resolve()))
    if args.progress == "text":
        print(f"{out}: smoothed (strength {args.strength}, {args.method})")
    return 0
