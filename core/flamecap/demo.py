"""``flamecap demo``: the whole pipeline on a fresh machine, with no FLAME file.

1. Render a short clip of FlameCap's own synthetic head (:func:`flamecap.flame.synthetic.make_synthetic_model`)
   with :mod:`flamecap.synth` (talking jaw, expressions, blinks, head turns): ``footage/clip.mp4`` and the ground
   truth ``footage/gt.npz``.
2. Track it: MediaPipe landmarks (the default ``litert`` aligner; its model files are fetched once, announced,
   when they are missing: the one download the demo may make), then FlameCap's fitter at ``fast`` quality →
   ``result.npz``.
3. Blender part in a headless-bpy subprocess (as ``flamecap export``): import the result (head, rig, animation,
   camera with the footage as its background) → ``scene.blend``, and the animated head → ``head.fbx``. Without
   bpy the result is still written and the Blender part is reported as skipped.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .contract.events import ProgressCallback
from .errors import InputError, NoFaceError
from .headless_blender import NoBpyError

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class DemoConfig:
    """Clip size of the demo (the defaults take about a minute on a laptop CPU)."""

    n_frames: int = 50
    width: int = 480
    height: int = 360
    fps: float = 25.0
    yaw_max_deg: float = 30.0
    seed: int = 0
    quality: str = "fast"

    def __post_init__(self):
        if not 3 <= self.n_frames <= 2000:
            raise InputError(f"--frames must be within 3..2000, got {self.n_frames}")
        if self.quality not in ("fast", "production"):
            raise InputError(f"--quality must be fast or production, got {self.quality}")


@dataclass
class DemoOutcome:
    """What the demo wrote. blend / fbx are None when the Blender part was skipped (``blender_note`` says why)."""

    out_dir: Path
    footage: Path
    ground_truth: Path
    result: Path
    blend: Path | None
    fbx: Path | None
    n_frames: int
    valid_frames: int
    mean_landmark_residual_px: float
    seconds: float
    blender_note: str = ""
    blender_info: dict = field(default_factory=dict)

    def summary(self) -> str:
        return (f"demo: {self.valid_frames}/{self.n_frames} frames tracked, mean fit error "
                f"{self.mean_landmark_residual_px:.2f} px, {self.seconds:.1f} s")


def run_blender_part(result: Path, blend: Path, fbx: Path, python: str = "", addon_dir: str = "",
                     timeout_s: float = 900) -> dict:
    """Build ``scene.blend`` and ``head.fbx`` from ``result`` in a headless-bpy subprocess. Raises
    :class:`~flamecap.headless_blender.NoBpyError` when that Python has no bpy, :class:`FlameCapError` when Blender fails."""
    from .headless_blender import run_job
    mesh, n_verts, n_keys, f0, f1, clip = run_job(
        ["demo", str(result.resolve()), str(blend.resolve()), str(fbx.resolve())], python, addon_dir, timeout_s,
        what="Blender part of the demo").split(maxsplit=5)
    return {"mesh": mesh, "vertices": int(n_verts), "shape_keys": int(n_keys), "frame_start": int(f0),
            "frame_end": int(f1), "background_clip": None if clip == "-" else clip}


def track_video(video: Path, model, quality: str, progress: ProgressCallback | None = None):
    """MediaPipe landmarks + FlameCap's fitter on ``video`` → :class:`~flamecap.contract.result.TrackingResult`
    (not yet saved)."""
    from .binding import bind
    from .fit.config import FitConfig
    from .fit.result import build_result
    from .fit.tracker import fit_track
    from .landmarks import DEFAULT_ALIGNER, get_aligner, track_footage
    from .video import open_footage
    footage = open_footage(Path(video).resolve())  # the result names it; Blender loads it as the background
    track = track_footage(footage, get_aligner(DEFAULT_ALIGNER), progress=progress)
    if not track.valid.any():
        raise NoFaceError(f"MediaPipe found no face in {video}; the demo head was not detected")
    binding = bind("mediapipe478", model, progress=progress)
    fo = fit_track(track, binding, model, config=FitConfig.preset(quality), progress=progress)
    return build_result(fo, track, model, source=footage.source, aligner=DEFAULT_ALIGNER, quality=quality,
                        identity="none")


def ensure_face_models(prog: ProgressCallback) -> None:
    """The default aligner's MediaPipe model files, fetched once if missing (``flamecap models
    fetch-mediapipe``: the mediapipe 0.10.21 wheel from PyPI, sha256-checked). Tracking itself never downloads;
    the demo does, saying so, because it is the command a new user runs first."""
    from .landmarks import DEFAULT_ALIGNER, mp_models
    if DEFAULT_ALIGNER != "litert" or not mp_models.missing_files():
        return
    prog("demo", 0.35, f"fetching MediaPipe's face models once ({mp_models.FETCH_COMMAND}: the mediapipe "
                       f"{mp_models.WHEEL_VERSION} wheel from PyPI, Apache-2.0) into {mp_models.models_dir()}")
    log.warning("fetching MediaPipe's face models into %s (%s)", mp_models.models_dir(), mp_models.FETCH_COMMAND)
    mp_models.fetch()


def run_demo(out_dir: str | os.PathLike, cfg: DemoConfig = DemoConfig(), blender: bool = True,
             blender_python: str = "", addon_dir: str = "", progress: ProgressCallback | None = None) -> DemoOutcome:
    """Render, track and build the Blender scene into ``out_dir`` (see the module docstring)."""
    from .contract.result import save_result
    from .flame.synthetic import make_synthetic_model
    from .synth import SynthConfig, render_clip
    t0 = time.perf_counter()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a folder; choose another -o")
    out.mkdir(parents=True, exist_ok=True)
    prog = progress or (lambda *a: None)
    prog("demo", 0.0, "building FlameCap's synthetic head")
    model = make_synthetic_model()
    prog("demo", 0.05, f"rendering {cfg.n_frames} frames")
    gt = render_clip(model, out / "footage", SynthConfig(n_frames=cfg.n_frames, fps=cfg.fps, width=cfg.width,
                                                         height=cfg.height, yaw_max_deg=cfg.yaw_max_deg,
                                                         seed=cfg.seed), progress=progress)
    video = out / "footage" / "clip.mp4"
    ensure_face_models(prog)
    prog("demo", 0.4, f"tracking ({cfg.quality})")
    res = track_video(video, model, cfg.quality, progress=progress)
    result = save_result(out / "result.npz", res)
    valid = np.asarray(res["valid"], bool)
    fe = np.asarray(res["landmark_residual_px"], float)
    mean_err = float(np.nanmean(fe[valid])) if valid.any() else float("nan")
    blend = fbx = None
    note, info = "", {}
    if blender:
        prog("demo", 0.8, "building scene.blend and head.fbx in headless Blender")
        try:
            info = run_blender_part(result, out / "scene.blend", out / "head.fbx", blender_python, addon_dir)
            blend, fbx = out / "scene.blend", out / "head.fbx"
        except NoBpyError:
            from .optional import install_hint
            note = (f"bpy (headless Blender) is not installed here, so scene.blend and head.fbx were skipped; "
                    f"{install_hint('bpy')} or pass --blender-python, then import {result} in Blender")
    else:
        note = "Blender part skipped (--no-blender)"
    prog("demo", 1.0, "done")
    return DemoOutcome(out_dir=out, footage=video, ground_truth=Path(gt), result=Path(result), blend=blend, fbx=fbx,
                       n_frames=int(valid.shape[0]), valid_frames=int(valid.sum()), mean_landmark_residual_px=mean_err,
                       seconds=time.perf_counter() - t0, blender_note=note, blender_info=info)
