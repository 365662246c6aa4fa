"""MICA identity: speed figures (random r100 weights; the timings do not depend on the values).

    python benchmarks/bench_identity.py [--device cpu|cuda] [--video ../shared/data/footage/grid/bbaf2n.mpg]

Prints: network build, checkpoint save/load, IResNet-100 + mapping forward at batch 1 and 8, frame
selection (MediaPipe + sharpness/frontality) on a real clip when present, and the end-to-end footage
estimate with k=8 of 48 candidate frames.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from flamecap.identity.arcface import recalibrate_batchnorm
from flamecap.identity.checkpoint import save_mica_checkpoint
from flamecap.identity.mica import build_mica, estimate_shape_from_footage, load_mica, predict_shapes, select_frames

REPO = Path(__file__).resolve().parents[1]
GRID = REPO.parent / "shared" / "data" / "footage" / "grid" / "bbaf2n.mpg"


def timed(fn, repeat: int = 1):
    fn()  # warm-up
    t = time.perf_counter()
    for _ in range(repeat):
        out = fn()
    return (time.perf_counter() - t) / repeat, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--video", default=str(GRID))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(f"device {args.device}, torch threads {torch.get_num_threads()}")
    t = time.perf_counter()
    net = build_mica()
    print(f"build_mica (r100, {sum(p.numel() for p in net.parameters()) / 1e6:.1f} M params): "
          f"{time.perf_counter() - t:.2f} s")
    recalibrate_batchnorm(net.arcface, [torch.randn(2, 3, 112, 112)])
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "mica.tar"
        t = time.perf_counter()
        save_mica_checkpoint(path, net)
        print(f"save mica.tar ({path.stat().st_size / 2**20:.0f} MiB): {time.perf_counter() - t:.2f} s")
        t = time.perf_counter()
        net = load_mica(path, device=args.device)
        print(f"load_mica (safe load + key/shape check): {time.perf_counter() - t:.2f} s")
        for b in (1, 8):
            x = torch.rand(b, 3, 112, 112) * 2 - 1
            sec, _ = timed(lambda: predict_shapes(net, x), repeat=3)
            print(f"forward batch {b}: {sec * 1000:.0f} ms ({sec * 1000 / b:.0f} ms/image)")
        video = Path(args.video)
        if video.exists():
            t = time.perf_counter()
            cands = select_frames(video, k=8, max_candidates=48)
            print(f"select_frames 8 of 48 on {video.name}: {time.perf_counter() - t:.2f} s "
                  f"(frames {[c.frame_index for c in cands]})")
            t = time.perf_counter()
            shape = estimate_shape_from_footage(video, 300, path, k=8, max_candidates=48, net=net)
            print(f"estimate_shape_from_footage (k=8 of 48): {time.perf_counter() - t:.2f} s, shape {shape.shape}")
        else:
            print(f"(no clip at {video}: frame-selection figures skipped)")


if __name__ == "__main__":
    main()
