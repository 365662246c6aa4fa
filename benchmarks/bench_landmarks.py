"""Landmark and rasterizer figures: MediaPipe throughput on the GRID clips (frames/s with and without
decoding), rasterizer speed on the FLAME template at 512×512, and the self-calibrated MediaPipe embedding
vs the official one. Run: ``python benchmarks/bench_landmarks.py [--clips N] [--no-embed]``."""
from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def bench_raster() -> None:
    import trimesh
    from flamecap.render import rasterize, render_rgb, vertex_visibility
    ply = DATA / "flame_reference" / "flame2020_template.ply"
    if not ply.is_file():
        print("raster: skipped (no FLAME template)")
        return
    m = trimesh.load(ply, process=False)
    v, f = np.asarray(m.vertices), np.asarray(m.faces)
    vc = (v - v.mean(0)) * np.array([1, -1, -1]) + np.array([0, 0, 0.5])
    K = np.array([[1200.0, 0, 256], [0, 1200.0, 256], [0, 0, 1]])
    rasterize(vc, f, K, (512, 512))
    for name, fn in (("rasterize", lambda: rasterize(vc, f, K, (512, 512))),
                     ("rasterize (cull)", lambda: rasterize(vc, f, K, (512, 512), cull_backfaces=True)),
                     ("render_rgb", lambda: render_rgb(vc, f, K, (512, 512))),
                     ("vertex_visibility", lambda: vertex_visibility(vc, f, K, (512, 512)))):
        ts = []
        for _ in range(5):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        print(f"{name:18s} {len(f)} triangles 512x512: median {1000 * np.median(ts):.0f} ms")


def bench_landmarks(n_clips: int) -> None:
    from flamecap.landmarks import get_aligner, track_footage
    from flamecap.video import open_footage
    clips = sorted((DATA / "footage" / "grid").glob("*.mpg"))[:n_clips]
    if not clips:
        print("landmarks: skipped (no GRID footage)")
        return
    t = time.perf_counter()
    n_dec = 0
    frames_mem = []
    for c in clips:
        for fr in open_footage(c):
            n_dec += 1
            if c == clips[0]:
                frames_mem.append(fr)
    t_dec = time.perf_counter() - t
    print(f"decode only: {n_dec} frames in {t_dec:.2f} s = {n_dec / t_dec:.0f} frames/s")
    aligner = get_aligner("mediapipe")
    tot, tot_valid, full = 0, 0, 0
    t = time.perf_counter()
    for c in clips:
        tr = track_footage(open_footage(c), aligner)
        tot += tr.n_frames
        tot_valid += int(tr.valid.sum())
        full += int((tr.valid & np.isfinite(tr.points).all(axis=(1, 2))).sum())
        print(f"  {c.name:22s} {int(tr.valid.sum())}/{tr.n_frames} frames with 478 points")
    dt = time.perf_counter() - t
    print(f"mediapipe with decoding: {tot} frames in {dt:.2f} s = {tot / dt:.1f} frames/s; "
          f"valid {tot_valid}/{tot}, all 478 finite on {full}")
    t = time.perf_counter()
    tr = aligner.track(iter(frames_mem), tr.image_size, 25.0)
    dt = time.perf_counter() - t
    print(f"mediapipe without decoding (frames in memory): {tr.n_frames} frames in {dt:.2f} s = "
          f"{tr.n_frames / dt:.1f} frames/s")


def bench_embedding() -> None:
    from flamecap.binding.mediapipe import compare_bindings, mediapipe_embedding_report, official_binding
    from flamecap.flame.synthetic import flame_reference_head
    ref = DATA / "flame_reference"
    if not ref.is_dir():
        print("embedding: skipped (no FLAME reference data)")
        return
    import tempfile
    os.environ["FLAMECAP_HOME"] = tempfile.mkdtemp(prefix="flamecap_bench_")
    m = flame_reference_head(ref)
    t = time.perf_counter()
    rep = mediapipe_embedding_report(m, cache=False)
    dt = time.perf_counter() - t
    s = rep.summary()
    c = compare_bindings(m, rep.binding, official_binding(m))
    print(f"embedding (FLAME test head, {s['renders']} renders, {dt:.1f} s): kept {s['kept']}, dropped "
          f"{s['dropped']}; vs official {c['n_common']}/{c['n_b']} points: mean {c['mean_mm']:.2f} mm, "
          f"median {c['median_mm']:.2f} mm, max {c['max_mm']:.2f} mm")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=11)
    ap.add_argument("--no-embed", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    bench_raster()
    bench_landmarks(args.clips)
    if not args.no_embed:
        bench_embedding()


if __name__ == "__main__":
    main()
