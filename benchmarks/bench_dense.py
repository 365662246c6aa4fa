"""Dense aligner inference speed: frames/s of the network (crop → points + σ for every vertex).

    python benchmarks/bench_dense.py                      # b0, 256 px, random weights, CPU
    python benchmarks/bench_dense.py --preset b5 --device cuda --batch 16
    python benchmarks/bench_dense.py --weights flowface_dense.safetensors   # a trained network

Speed does not depend on the weights' values, so random weights give the real figure for a preset.
Prints one line per batch size: frames/s, ms/frame, parameters, vertices.
"""
from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="b0")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--vertices", type=int, default=5023, help="vertex count (FLAME: 5023)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from flamecap.dense.checkpoint import load_checkpoint
    from flamecap.dense.model import build_net

    dev = torch.device(args.device)
    if args.weights:
        ck = load_checkpoint(args.weights, device=dev)
        net, uv = ck.net, torch.as_tensor(ck.vertex_uv, device=dev)
    else:
        torch.manual_seed(0)
        net = build_net(args.preset).to(dev).eval()
        uv = torch.rand(args.vertices, 2, device=dev)
    S = net.cfg.image_size
    n_par = sum(p.numel() for p in net.parameters())
    print(f"dense aligner benchmark: encoder {net.cfg.encoder}, crop {S} px, UV {net.cfg.uv_res}², "
          f"{net.cfg.iters} iterations, {n_par / 1e6:.2f} M parameters, {len(uv)} vertices, {dev}, "
          f"{torch.get_num_threads()} threads")
    with torch.inference_mode():
        for B in args.batch:
            x = torch.rand(B, 3, S, S, device=dev)
            net(x, uv)  # warm-up
            times = []
            for _ in range(args.repeats):
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                net(x, uv)
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
            best = min(times)
            print(f"batch {B:3d}: {B / best:7.2f} frames/s  ({1000 * best / B:7.1f} ms/frame, best of {args.repeats})")


if __name__ == "__main__":
    main()
