"""What the reference benches share: the test head as a model file, running ``flamecap track`` (or a user's
command) on a clip, and the fitted mesh / FLAME's official 68 landmarks of a result.

The tracking runs as a separate process, exactly as a user runs it, so the figures measure the shipped command;
``--track-cmd`` swaps in another command (e.g. another checkout's Python) and a results folder lets a rerun
skip tracking altogether."""
from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ..contract.model_format import FlameModelData
from ..contract.npzio import atomic_output
from ..errors import FlameCapError, InputError

# {python} {video} {out} {model} {quality} are filled in (shell-quoted); the rest is passed as written.
DEFAULT_TRACK_CMD = "{python} -m flamecap track {video} -o {out} --model {model} --quality {quality} --progress none"
PARAM_KEYS = ("expr", "jaw_pose", "neck_pose", "eye_pose", "global_rot", "transl", "eyelids", "shape",
              "vertex_offsets")


def track_command(template: str, video: Path, out: Path, model: Path, quality: str) -> list[str]:
    """The argv of one tracking run from a ``--track-cmd`` template."""
    try:
        text = template.format(python=shlex.quote(sys.executable), video=shlex.quote(str(video)),
                               out=shlex.quote(str(out)), model=shlex.quote(str(model)), quality=quality)
    except (KeyError, IndexError) as exc:
        raise InputError(f"--track-cmd: unknown placeholder {exc}; use {{python}} {{video}} {{out}} {{model}} "
                         f"{{quality}}") from None
    return shlex.split(text)


def run_track(template: str, video: Path, out: Path, model: Path, quality: str, timeout_s: float = 900) -> float:
    """Run one tracking command; returns its wall time (s). Raises :class:`FlameCapError` (its last stderr
    line) when it fails or writes no result."""
    argv = track_command(template, video, out, model, quality)
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s)
    except FileNotFoundError:
        raise InputError(f"--track-cmd: program not found: {argv[0]}") from None
    except subprocess.TimeoutExpired:
        raise FlameCapError(f"tracking {video.name} ({quality}) did not finish within {timeout_s:.0f} s") from None
    seconds = time.perf_counter() - t0
    if proc.returncode != 0 or not out.is_file():
        lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        raise FlameCapError(f"tracking {video.name} ({quality}) failed (exit {proc.returncode}): "
                            f"{lines[-1] if lines else 'no output'}")
    return seconds


def ensure_result(results_dir: Path, name: str, quality: str, video: Path, model_path: Path, template: str,
                  reuse: bool) -> tuple[Path, float | None]:
    """``results_dir/NAME_QUALITY.npz``: reused when ``reuse`` and present, else tracked now.
    Returns (path, tracking seconds or None when reused)."""
    path = results_dir / f"{name}_{quality}.npz"
    if reuse and path.is_file():
        return path, None
    return path, run_track(template, video, path, model_path, quality)


def result_params(result) -> dict[str, np.ndarray]:
    """The FLAME parameters of a :class:`TrackingResult` in the form :func:`flamecap.bench.fit_vertices` takes."""
    return {k: np.asarray(result[k]) for k in PARAM_KEYS if k in result}


def result_vertices(result, model: FlameModelData) -> np.ndarray:
    """Fitted mesh per frame (T, V, 3), FLAME world, of a result fitted with ``model``."""
    from ..bench import fit_vertices
    if int(result["head_vertices"].shape[0]) != model.n_vertices:
        raise InputError(f"the result's head has {result['head_vertices'].shape[0]} vertices, the bench head "
                         f"{model.n_vertices}; track with the bench's model (--model)")
    return fit_vertices(model, result_params(result))


def project_surface(verts: np.ndarray, faces: np.ndarray, face_idx: np.ndarray, bary: np.ndarray, result
                    ) -> np.ndarray:
    """Surface points (barycentric) of per-frame vertices projected through the result's camera → (T, R, 2);
    NaN on the result's invalid frames."""
    from ..bench import bound_points, project_points, to_camera
    pts = project_points(to_camera(bound_points(verts, faces, face_idx, bary), result["cam_R"], result["cam_t"]),
                         np.asarray(result["K"], float))
    pts[~np.asarray(result["valid"], bool)] = np.nan
    return pts


def write_report(out_dir: Path, stem: str, report: dict, markdown: Callable[[dict], str]) -> Path:
    """``out_dir/stem.json`` and ``out_dir/stem.md`` (the table ``markdown`` makes), each written atomically."""
    for suffix, text in ((".json", json.dumps(report, indent=2)), (".md", markdown(report))):
        with atomic_output(out_dir / f"{stem}{suffix}") as tmp:
            tmp.write_text(text, encoding="utf-8")
    return out_dir / f"{stem}.json"
