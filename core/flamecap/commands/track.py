"""``flamecap track FOOTAGE -o RESULT.npz`` (landmarks → FLAME fit → result), ``flamecap fit LANDMARKS.npz
-o RESULT.npz`` (fit cached landmarks) and ``flamecap smooth RESULT -o OUT --strength s`` (post-filter)."""
from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable

from ..errors import InputError, NoFaceError
from ..landmarks import ALIGNER_HELP, ALIGNERS, DEFAULT_ALIGNER, FACE_ALIGNERS

log = logging.getLogger(__name__)


def _add_fit_arguments(p: argparse.ArgumentParser, output: bool = True) -> None:
    if output:
        p.add_argument("-o", "--output", required=True, help="result .npz to write (atomically)")
    p.add_argument("--model", default=None, help="FLAME .npz/.pkl path or registered name (default model)")
    p.add_argument("--quality", default="fast", choices=("fast", "production"))
    p.add_argument("--identity", default="none", choices=("none", "mica"),
                   help="identity prior: none, or MICA from the footage (needs its weights)")
    p.add_argument("--identity-weights", default=None, help="MICA weights (mica.tar); default: installed")
    p.add_argument("--identity-weight", type=float, default=2.0, help="strength of the identity prior")
    p.add_argument("--focal", type=float, default=None,
                   help="focal length in pixels (default: from --lens-mm/--sensor-mm, else the video's 35 mm "
                        "equivalent, else estimated)")
    p.add_argument("--lens-mm", type=float, default=None, help="lens focal length in mm (with --sensor-mm)")
    p.add_argument("--sensor-mm", type=float, default=None, help="sensor width in mm (with --lens-mm)")
    p.add_argument("--no-temporal", action="store_true", help="unordered images: no temporal smoothing term")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="where the networks run (--aligner dense, --identity mica); the fitter uses the CPU")


_CHOICES = {"aligner": tuple(ALIGNERS), "quality": ("fast", "production"),
            "identity": ("none", "mica"), "device": ("auto", "cpu", "cuda")}


@dataclass(frozen=True)
class TrackOptions:
    """Everything a track run needs besides its footage and output: the one mapping from options (command
    line, or a batch shot list's columns of the same names) to a run of :func:`run_track`."""

    start: int = 0
    end: int | None = None
    stride: int = 1
    fps: float | None = None
    aligner: str = DEFAULT_ALIGNER
    weights: str | None = None
    points: str | None = None
    face_index: int | None = None
    no_pipeline: bool = False
    model: str | None = None
    quality: str = "fast"
    identity: str = "none"
    identity_weights: str | None = None
    identity_weight: float = 2.0
    focal: float | None = None
    lens_mm: float | None = None
    sensor_mm: float | None = None
    no_temporal: bool = False
    device: str = "auto"

    def __post_init__(self):
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise InputError(f"{name.replace('_', '-')} '{getattr(self, name)}' is unknown; use one of "
                                 f"{', '.join(allowed)}")
        if self.face_index is not None:
            if self.face_index < 0:
                raise InputError(f"face-index must be >= 0 (0 = leftmost face), got {self.face_index}")
            if self.aligner not in FACE_ALIGNERS:
                raise InputError(f"face-index applies to the {' and '.join(FACE_ALIGNERS)} aligners only; drop it "
                                 f"or use --aligner {DEFAULT_ALIGNER}")
        if self.start < 0 or self.stride < 1 or (self.end is not None and self.end <= self.start):
            raise InputError(f"bad frame range start={self.start} end={self.end} stride={self.stride}; need "
                             f"0 <= start < end and stride >= 1")
        if (self.lens_mm is None) != (self.sensor_mm is None):
            raise InputError("--lens-mm and --sensor-mm go together (the sensor's width in mm: full frame 36, "
                             "APS-C about 23.5, a phone's main camera about 7)")
        if self.lens_mm is not None:
            if self.focal is not None:
                raise InputError("give the lens either as --focal PX or as --lens-mm/--sensor-mm, not both")
            if not (self.lens_mm > 0 and self.sensor_mm > 0):
                raise InputError(f"--lens-mm and --sensor-mm must be positive, got {self.lens_mm} and "
                                 f"{self.sensor_mm}")
        _config(self)   # the fitter's checks (--focal, ...)

    @classmethod
    def from_args(cls, args) -> "TrackOptions":
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})

    def with_values(self, values: dict[str, Any], where: str = "") -> "TrackOptions":
        """These options with ``values`` (names as the dataclass fields or the command-line options, e.g.
        ``face-index``; strings are converted, empty ones keep the default) replaced."""
        types = {f.name: f.type for f in fields(self)}
        out: dict[str, Any] = {}
        for key, raw in values.items():
            name = str(key).strip().lstrip("-").replace("-", "_")
            if name not in types:
                raise InputError(f"{where}unknown option '{key}'; use {', '.join(sorted(types))}")
            if raw is None or (isinstance(raw, str) and not raw.strip()):
                continue
            out[name] = _convert(raw, types[name], f"{where}option '{key}'")
        return replace(self, **out)

    def key(self) -> dict[str, Any]:
        """What decides the result (for resuming a batch): every field but the read-ahead switch, which gives
        the same result."""
        d = asdict(self)
        d.pop("no_pipeline")
        return d


def _convert(raw: Any, type_name: str, what: str) -> Any:
    base = str(type_name).split("|")[0].strip()
    if isinstance(raw, str):
        raw = raw.strip()
    try:
        if base == "bool":
            if isinstance(raw, bool):
                return raw
            if str(raw).lower() in ("1", "true", "yes", "y", "on"):
                return True
            if str(raw).lower() in ("0", "false", "no", "n", "off"):
                return False
            raise ValueError(raw)
        if base == "int":
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError(raw)
            return int(raw) if not isinstance(raw, str) else int(raw, 10)
        if base == "float":
            if isinstance(raw, bool):
                raise ValueError(raw)
            return float(raw)
    except (TypeError, ValueError):
        raise InputError(f"{what}: '{raw}' is not a valid {base}") from None
    return str(raw)


@dataclass(frozen=True)
class TrackRun:
    """What one :func:`run_track` produced."""

    output: Path
    frames: int
    valid_frames: int
    seconds: float


def add_footage_arguments(p: argparse.ArgumentParser) -> None:
    """The per-footage options of a track run (``flamecap track`` and ``flamecap batch``)."""
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--end", type=int, default=None)
    p.add_argument("--stride", type=int, default=1)
    p.add_argument("--fps", type=float, default=None, help="frame rate override (image sequences: 25)")
    p.add_argument("--aligner", default=DEFAULT_ALIGNER, choices=tuple(ALIGNERS), help=ALIGNER_HELP)
    p.add_argument("--weights", default=None, help="--aligner dense: network weights")
    p.add_argument("--points", default=None, help="--aligner file: CSV or .npz with the points")
    p.add_argument("--face-index", type=int, default=None,
                   help="several faces in view: follow the i-th from the left (0-based; default: the largest)")
    p.add_argument("--no-pipeline", action="store_true",
                   help="decode frames in the landmark thread (no read-ahead thread); same result, slower")


def add_track_arguments(p: argparse.ArgumentParser, output: bool = True) -> None:
    """Every :class:`TrackOptions` field as a command-line option (``output``: also ``-o/--output``)."""
    add_footage_arguments(p)
    _add_fit_arguments(p, output=output)


def register(sub: argparse._SubParsersAction) -> None:
    from ..cli import add_progress_argument
    p = sub.add_parser("track", help="track a face in footage and fit FLAME → result .npz")
    p.add_argument("footage", help="video file, image folder, or pattern like frames/%%04d.png")
    add_track_arguments(p)
    p.add_argument("--landmarks-cache", default=None,
                   help="landmarks .npz: reused when it exists, written after tracking otherwise")
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
    """Overall progress over weighted stages, to text, JSON lines, or nowhere; ``on_fraction(overall)``
    also receives it (a batch worker forwards it to the batch's progress bar)."""

    def __init__(self, mode: str, spans: dict[str, tuple[float, float]],
                 on_fraction: Callable[[float], None] | None = None):
        self.mode, self.spans, self.on_fraction = mode, spans, on_fraction
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
        if self.on_fraction is not None:
            self.on_fraction(overall)
        if self.em:
            self.em.progress(stage, overall, message)
        elif self.mode == "text":
            step = int(overall * 20)
            if step != self._last:
                self._last = step
                print(f"[{stage}] {overall * 100:5.1f}% {message}", flush=True)

    def sub(self, stage_override: str | None = None):
        return lambda stage, frac, msg="": self(stage_override or stage, frac, msg)


def track_progress(mode: str, identity: str = "none", on_fraction=None) -> _Progress:
    """The stages of a track run and their shares of the bar."""
    with_mica = identity == "mica"
    spans = {"load": (0.0, 0.02), "landmarks": (0.02, 0.6), "identity": (0.6, 0.7) if with_mica else (0.6, 0.6),
             "fit": (0.7 if with_mica else 0.6, 0.85), "refine": (0.85, 0.97), "write": (0.97, 1.0)}
    return _Progress(mode, spans, on_fraction)


def _load_model(spec):
    from ..flame.io import load_model
    return load_model(spec)


def _config(opts):
    """Fitter settings from the options (torch-free: called before any work to refuse bad values).
    The fitter runs on the CPU (its small batched solves are faster there); ``--device`` picks where the
    networks run (``--aligner dense``, ``--identity mica``)."""
    from ..fit.config import FitConfig
    return FitConfig.preset(opts.quality, focal_px=opts.focal, temporal=not opts.no_temporal,
                            w_shape_prior=opts.identity_weight if opts.identity == "mica" else 0.0)


def _binding_for(scheme: str, n_points: int | None, model, aligner=None):
    """The one place the track and fit commands bind points to the head (see :mod:`flamecap.binding`)."""
    from ..binding import bind
    if hasattr(aligner, "check_model"):
        aligner.check_model(model)
    return bind(scheme, model, n_points=n_points, surface_points=getattr(aligner, "surface_points", None))


def _check_before_work(output, opts) -> None:
    """Refuse bad settings and an unwritable output before any slow work (landmarks, fitting)."""
    from ..contract.npzio import check_output_path
    check_output_path(output, what="result")
    _config(opts)   # validates --focal, --quality ... (raises InputError)


def lens_focal(opts, image_size: tuple[int, int], focal_35mm: float | None = None) -> tuple[float | None, str]:
    """(focal px or None, how it was obtained): ``--focal`` ("given"), ``--lens-mm``/``--sensor-mm`` over the
    image width ("lens"), the footage's 35 mm-equivalent focal length over the image diagonal (35 mm film's
    diagonal is 43.27 mm; "metadata"), else None: the fitter estimates it ("estimated")."""
    w, h = image_size
    if opts.focal is not None:
        return float(opts.focal), "given"
    if opts.lens_mm is not None:
        return float(opts.lens_mm) / float(opts.sensor_mm) * w, "lens"
    if focal_35mm:
        return float(focal_35mm) * math.hypot(w, h) / 43.27, "metadata"
    return None, "estimated"


def _fit_and_write(opts, output, track, model, binding, prog: _Progress, source: dict, aligner_name: str,
                   shape_prior=None, t0: float | None = None, t_first: float | None = None,
                   focal_35mm: float | None = None) -> TrackRun:
    from ..contract.result import save_result
    from ..fit import build_result, fit_track
    if not track.valid.any():
        raise NoFaceError(f"no face found in any of the {track.n_frames} frames; check the footage shows a "
                          f"face (frontal, not too small) or the --start/--end range")
    from ..flame.eyelids import with_eyelids
    focal_px, focal_source = lens_focal(opts, track.image_size, focal_35mm)
    cfg = replace(_config(opts), focal_px=focal_px)
    model = with_eyelids(model, binding if track.scheme == "mediapipe478" else None)
    fit = fit_track(track, binding, model, cfg, shape_prior=shape_prior, progress=prog)
    prog("write", 0.0, "writing result")
    result = build_result(fit, track, model, source=source, aligner=aligner_name, quality=opts.quality,
                          identity=opts.identity, focal_estimated=focal_px is None, focal_source=focal_source)
    out = save_result(output, result)
    prog("write", 1.0, "done")
    if fit.info.get("focal_observable") is False:
        log.warning("the focal length (%.0f px) is not observable from this clip (the head hardly turns or the "
                    "landmarks are too noisy), so depth and face size are uncertain; pass --focal PX or "
                    "--lens-mm/--sensor-mm if you know the lens", fit.focal)
    n_valid = int(fit.valid.sum())
    now = time.perf_counter()
    dt = now - (t0 or now)
    timing = {} if t_first is None else {"seconds_from_first_frame": round(now - t_first, 3)}
    prog.emit("done", result=str(Path(out).resolve()), frames=track.n_frames, valid_frames=n_valid,
              seconds=round(dt, 3), **timing)
    if prog.mode == "text":
        import numpy as np
        print(f"{out}: {n_valid}/{track.n_frames} frames fitted, mean residual to "
              f"the landmarks {float(np.nanmean(fit.landmark_residual_px)):.2f} px, focal {fit.focal:.0f} px, {dt:.1f} s")
    return TrackRun(Path(out), track.n_frames, n_valid, dt)


def cmd_track(args) -> int:
    prog = track_progress(args.progress, args.identity)
    prog.emit("start", command="track", footage=str(args.footage), output=str(args.output))
    opts = TrackOptions.from_args(args)
    run_track(args.footage, args.output, opts, prog, landmarks_cache=args.landmarks_cache)
    return 0


def run_track(footage_path, output, opts: TrackOptions, prog: _Progress, landmarks_cache=None,
              cache: dict | None = None) -> TrackRun:
    """One track run: footage → landmarks → fit → result at ``output`` (atomically). ``cache`` (a dict kept by
    a long-lived batch worker) keeps loaded models and their bindings between runs; the result is the same."""
    from ..landmarks import get_aligner, track_footage
    from ..landmarks.base import LandmarkTrack
    from ..video import open_footage
    t0 = time.perf_counter()
    with_mica = opts.identity == "mica"
    _check_before_work(output, opts)
    # inputs in command-line order, all before the slow landmark pass
    footage = open_footage(footage_path, start=opts.start, end=opts.end, stride=opts.stride, fps=opts.fps)
    cache_path = Path(landmarks_cache) if landmarks_cache else None
    cached = None
    if cache_path is not None and cache_path.is_file():   # a cache of other footage is refused before slow work
        cached = LandmarkTrack.load(cache_path)
        check_cache_matches(cached, footage, cache_path)
    prog("load", 0.0, "loading model")
    cache = {} if cache is None else cache
    model = cache.get(("model", opts.model))
    if model is None:
        model = cache[("model", opts.model)] = _load_model(opts.model)
    # the fitter's torch import (~1 s) now rather than during or after the landmark pass: imports hold the
    # GIL, so a background import stalls MediaPipe's thread (measured: 0.35 s slower end to end)
    import flamecap.fit.tracker  # noqa: F401
    options = {}
    if opts.aligner == "dense":
        options["device"] = opts.device
        if opts.weights:
            options["weights"] = opts.weights
    if opts.aligner == "file":
        if not opts.points:
            raise InputError("--aligner file needs --points FILE (CSV or .npz with the 2D points)")
        options["path"] = opts.points
    if opts.face_index is not None:
        options["face_index"] = opts.face_index
    if with_mica:   # fail fast on missing identity weights, before the slow landmark pass
        from ..identity.checkpoint import resolve_weights
        resolve_weights(opts.identity_weights)
    aligner = get_aligner(opts.aligner, **options)
    bkey = ("binding", opts.model, opts.aligner, opts.weights, opts.points)
    binding = cache.get(bkey)
    if binding is None:
        binding = cache[bkey] = _binding_for(aligner.scheme, getattr(aligner, "n_points", None), model, aligner)
    if cached is not None:
        track = cached
        prog("landmarks", 1.0, f"landmarks from {cache_path}")
    else:
        track = track_footage(footage, aligner, progress=prog, prefetch=0 if opts.no_pipeline else 4)
        if cache_path is not None:
            track.save(cache_path)
    if track.n_frames == 0:
        raise InputError(f"no frames were read from {footage_path}; check the frame range")
    shape_prior = None
    if with_mica:
        from ..identity.mica import estimate_shape_from_footage
        shape_prior = estimate_shape_from_footage(footage_path, model, opts.identity_weights, progress=prog,
                                                  device=None if opts.device == "auto" else opts.device)
    recorded = track.meta.get("footage") if isinstance(track.meta.get("footage"), dict) else footage.source
    source = dict(recorded, path=str(Path(footage_path).resolve()), n_frames=track.n_frames)
    return _fit_and_write(opts, output, track, model, binding, prog, source, aligner.name, shape_prior, t0,
                          t_first=footage.first_frame_at, focal_35mm=footage.focal_35mm)


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
    _check_before_work(args.output, args)
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
    _fit_and_write(args, args.output, track, model, binding, prog, source, aligner_name, shape_prior, t0)
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
