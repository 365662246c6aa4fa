"""Fitter speed and memory on synthetic landmarks: ms/frame per quality on a 75-frame clip (300 bound points +
iris), and peak RSS for a clip tiled to N frames (default 10 000) — flat memory comes from batched per-frame
stages and chunked temporal refinement.

    python benchmarks/bench_fit.py [--frames 10000] [--threads 1]
"""
from __future__ import annotations

import argparse
import resource
import sys
import time

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=10000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--skip-quality", action="store_true", help="only the long-clip memory run")
    a = ap.parse_args()
    import torch
    torch.set_num_threads(a.threads)
    from flamecap.fit import FitConfig, fit_track
    from flamecap.fit.synthetic import default_test_model, make_clip, sample_binding
    model = default_test_model()
    b = sample_binding(model, 300)
    clip = make_clip(model, b, n_frames=75, n_shape=20, n_expr=10)
    for q in (() if a.skip_quality else ("fast", "production")):
        cfg = FitConfig.preset(q)
        t0 = time.perf_counter()
        out = fit_track(clip.track, b, model, cfg)
        dt = time.perf_counter() - t0
        print(f"{q:10s} 75 frames: {1e3 * dt / 75:.1f} ms/frame  stages (ms/frame) "
              f"{({k: round(1e3 * v / 75, 2) for k, v in out.timings.items()})}"
              f"  error {np.nanmean(out.landmark_residual_px):.2f} px", flush=True)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    reps = int(np.ceil(a.frames / 75))
    tr = clip.track
    for k in ("points", "sigma", "valid", "visible"):
        setattr(tr, k, np.concatenate([getattr(tr, k)] * reps)[: a.frames])
    tr.frame_index = np.arange(a.frames)
    tr.time_s = np.arange(a.frames) / tr.fps
    t0 = time.perf_counter()
    out = fit_track(tr, b, model, FitConfig.preset("fast"))
    dt = time.perf_counter() - t0
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{a.frames} frames (fast): {dt:.1f} s = {1e3 * dt / a.frames:.2f} ms/frame; peak RSS {rss1:.0f} MiB "
          f"(before: {rss0:.0f} MiB)  stages (ms/frame) "
          f"{({k: round(1e3 * v / a.frames, 2) for k, v in out.timings.items()})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
