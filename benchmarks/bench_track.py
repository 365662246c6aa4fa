"""GRID benchmark: for each clip in ../shared/data/footage/grid, MediaPipe landmarks → fit (fast) and report
mean reprojection error / inter-ocular distance, jitter (mean |2nd difference| of the projected bound points)
of the fit vs raw MediaPipe, lag (metrics.lag_frames of the projected bound points vs raw, and the best
shift of the mouth-opening signal; both must be 0), fitter ms/frame per stage, MediaPipe-alone frames/s,
and the end-to-end frames/s of `flamecap track` on one clip. Head: FLAME-topology test head (flame_reference).

    python benchmarks/bench_track.py [--clips N] [--threads 1] [--landmarks-dir DIR] [--speed-only]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def _long_clip(clip: Path, out: Path, loops: int) -> int:
    """Write ``clip`` ``loops`` times (forward, backward, ... so motion stays continuous) as MJPG → frames."""
    import cv2
    cap = cv2.VideoCapture(str(clip))
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    h, w = frames[0].shape[:2]
    vw = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (w, h))
    for k in range(loops):
        for f in (frames if k % 2 == 0 else frames[::-1]):
            vw.write(f)
    vw.release()
    return len(frames) * loops


def _cli_track(clip: Path, out: Path, model_path: Path, quality: str, threads: int, extra=()) -> tuple[float, float]:
    """One `flamecap track` subprocess → (wall s including Python start-up and imports, s from the first
    decoded frame to the result written, from the JSON-lines 'done' event)."""
    import json
    import os
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "flamecap", "track", str(clip), "-o", str(out), "--model",
                        str(model_path), "--progress", "jsonl", "--quality", quality, *extra], check=True,
                       capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    wall = time.perf_counter() - t0
    done = [json.loads(x) for x in r.stdout.splitlines() if '"done"' in x][-1]
    return wall, float(done["seconds_from_first_frame"])


def speed(clip: Path, model, aligner, a) -> int:
    """Speed figures (issue 4, target >= 100 frames/s end-to-end on 2 cores): landmarks alone (decode +
    MediaPipe + σ), fit alone, and `flamecap track` end-to-end with and without the read-ahead pipeline,
    on ``clip`` and on a long clip (``clip`` ping-ponged ``--loops`` times) where start-up amortises."""
    from flamecap.contract.model_format import save_model_npz
    from flamecap.binding.mediapipe import mediapipe_binding
    from flamecap.fit import FitConfig, fit_track
    from flamecap.landmarks import track_footage
    from flamecap.video import open_footage
    binding = mediapipe_binding(model)
    with tempfile.TemporaryDirectory() as d:
        long_clip = Path(d) / "long.avi"
        n_long = _long_clip(clip, long_clip, a.loops)
        for c in (clip, long_clip):
            for pf in (0, 4):
                best = float("inf")
                for _ in range(a.repeats):
                    t0 = time.perf_counter()
                    track = track_footage(open_footage(c), aligner, prefetch=pf)
                    best = min(best, time.perf_counter() - t0)
                print(f"landmarks alone {c.name} ({track.n_frames} frames, read-ahead {pf}): "
                      f"{track.n_frames / best:.1f} frames/s", flush=True)
            t0 = time.perf_counter()
            fit_track(track, binding, model, FitConfig.preset(a.quality))
            dt = time.perf_counter() - t0
            print(f"fit alone {c.name}: {track.n_frames / dt:.1f} frames/s ({1e3 * dt / track.n_frames:.2f} ms/frame)",
                  flush=True)
        mp = save_model_npz(Path(d) / "head.npz", model)
        for c, n in ((clip, None), (long_clip, n_long)):
            for label, extra in (("pipelined", ()), ("--no-pipeline", ("--no-pipeline",))):
                runs = np.array([_cli_track(c, Path(d) / "r.npz", mp, a.quality, a.threads, extra)
                                 for _ in range(a.repeats)])
                n = n or int(np.load(Path(d) / "r.npz")["valid"].shape[0])
                for stat, (wall, work) in (("median", np.median(runs, 0)), ("best", runs.min(0))):
                    print(f"end-to-end `flamecap track` {c.name} {label}, {stat} of {a.repeats}: {n} frames, "
                          f"{n / wall:.1f} frames/s incl. start-up ({wall:.2f} s), {n / work:.1f} frames/s from "
                          f"first frame to result ({work:.2f} s)", flush=True)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quality", default="fast")
    ap.add_argument("--landmarks-dir", default=None, help="cache MediaPipe landmarks here (reused when present)")
    ap.add_argument("--speed-only", action="store_true", help="only the speed figures (no accuracy loop)")
    ap.add_argument("--loops", type=int, default=10, help="long clip = first clip ping-ponged this many times")
    ap.add_argument("--repeats", type=int, default=5,
                    help="end-to-end runs per setting (median and best are printed)")
    a = ap.parse_args()
    import torch
    torch.set_num_threads(a.threads)
    from flamecap.binding.mediapipe import mediapipe_binding
    from flamecap.fit import FitConfig, fit_track
    from flamecap.fit.model import BoundModel, project
    from flamecap.flame.synthetic import flame_reference_head
    from flamecap.landmarks import get_aligner, track_footage
    from flamecap.landmarks.base import LandmarkTrack
    from flamecap.metrics import jitter, lag_frames
    from flamecap.video import open_footage

    grid = DATA / "footage" / "grid"
    if not grid.is_dir():
        print(f"skip: {grid} not present")
        return 0
    model = flame_reference_head(DATA / "flame_reference")
    binding = mediapipe_binding(model)
    clips = sorted(grid.glob("*.mpg"))[: a.clips]
    if a.speed_only:
        return speed(clips[0], model, get_aligner("mediapipe"), a)
    rows, amps = [], []
    aligner = get_aligner("mediapipe")
    for clip in clips:
        cache = Path(a.landmarks_dir) / f"{clip.stem}.npz" if a.landmarks_dir else None
        t0 = time.perf_counter()
        if cache is not None and cache.is_file():
            track = LandmarkTrack.load(cache)
            t_lmk = float("nan")
        else:
            track = track_footage(open_footage(clip), aligner)
            t_lmk = time.perf_counter() - t0
            if cache is not None:
                cache.parent.mkdir(parents=True, exist_ok=True)
                track.save(cache)
        cfg = FitConfig.preset(a.quality)
        t0 = time.perf_counter()
        fit = fit_track(track, binding, model, cfg)
        t_fit = time.perf_counter() - t0
        v = fit.valid
        # projected bound points of the fit
        bm = BoundModel(model, binding.face_idx, binding.bary, cfg.n_shape, cfg.n_expr, dtype=torch.float64)
        P = {k: torch.as_tensor(x) for k, x in fit.params.items()}
        rot15 = torch.cat([P["global_rot"], P["neck_pose"], P["jaw_pose"], P["eye_pose"]], 1)
        pts = bm.points(torch.as_tensor(fit.shape), P["expr"], rot15, P["transl"], P.get("eyelids"))
        uv, _ = project(pts, torch.tensor(fit.focal, dtype=torch.float64), *(s / 2 for s in track.image_size))
        uv = uv.numpy()
        raw = track.points[:, binding.point_index].astype(np.float64)
        iod = np.linalg.norm(track.points[:, 33] - track.points[:, 263], axis=-1)
        err = np.nanmean(np.linalg.norm(uv - raw, axis=-1), axis=1)
        nme = np.nanmean(err[v] / iod[v])
        jit_fit = np.nanmean(np.abs(uv[2:] - 2 * uv[1:-1] + uv[:-2]))
        jit_raw = np.nanmean(np.abs(raw[2:] - 2 * raw[1:-1] + raw[:-2]))
        # lag: mouth opening (inner lip points 13/14) fit vs raw, the integer shift with the highest correlation
        # (independent of the fit's offset and amplitude, which a least-difference shift is not)
        sel = [int(np.flatnonzero(binding.point_index == k)[0]) if (binding.point_index == k).any() else None
               for k in (13, 14)]
        lag_pts = lag_frames(raw, uv)
        jm_fit, jm_raw = jitter(uv, v), jitter(raw, v)
        lag, amp = None, float("nan")
        if None not in sel:
            mo_f = uv[:, sel[1], 1] - uv[:, sel[0], 1]
            mo_r = raw[:, sel[1], 1] - raw[:, sel[0], 1]
            sc = {s: np.corrcoef(np.roll(mo_f, s)[3:-3], mo_r[3:-3])[0, 1] for s in range(-3, 4)}
            lag = max(sc, key=sc.get)
            amp = float(np.ptp(mo_f) / max(np.ptp(mo_r), 1e-9))   # how far the fitted mouth opens vs MediaPipe
        amps.append(amp)
        rows.append((clip.name, track.n_frames, int(v.sum()), nme * 100, jit_fit, jit_raw, lag,
                     1e3 * t_lmk / track.n_frames, 1e3 * t_fit / track.n_frames, fit.focal, len(binding.face_idx),
                     lag_pts, jm_fit, jm_raw))
        stages = {k: round(1e3 * t / track.n_frames, 2) for k, t in fit.timings.items()}
        print(f"{clip.name:20s} frames {track.n_frames} valid {int(v.sum())} NME {nme*100:.2f}% IOD  jitter fit "
              f"{jit_fit:.3f} px vs raw {jit_raw:.3f} px (metrics.jitter {jm_fit:.3f} vs {jm_raw:.3f})  lag "
              f"points {lag_pts} mouth {lag} (opening {amp:.2f}x raw)  landmarks {rows[-1][7]:.1f} ms/f  fit {rows[-1][8]:.1f} ms/f "
              f"{stages}  focal {fit.focal:.0f}px  points {rows[-1][10]}", flush=True)
    r = np.array([x[3:6] + x[7:9] + x[12:14] for x in rows], dtype=float)
    print(f"MEAN over {len(rows)} clips: NME {r[:, 0].mean():.3f}% IOD, jitter fit {r[:, 1].mean():.3f} px vs raw "
          f"{r[:, 2].mean():.3f} px (metrics.jitter {r[:, 5].mean():.3f} vs {r[:, 6].mean():.3f}), landmarks "
          f"{(np.nanmean(r[:, 3]) if np.isfinite(r[:, 3]).any() else float('nan')):.1f} ms/frame, fitter {r[:, 4].mean():.2f} ms/frame, lags points "
          f"{[x[11] for x in rows]} mouth {[x[6] for x in rows]}, mouth opening {np.nanmean(amps):.2f}x raw")
    speed(clips[0], model, aligner, a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
