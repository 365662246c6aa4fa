#!/usr/bin/env python3
"""Add-on import speed: build a result for a synthetic FLAME-format head (flamecap.flame.synthetic) with
T frames and time ``blender_addon.scene.import_result`` in headless bpy; prints JSON lines.

    python3 benchmarks/bench_addon_import.py [--frames 75 750] [--n-expr 100] [--subdivisions 4] [--bake]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "core"))


def make_result(path: Path, model, n_frames: int, n_expr: int):
    import numpy as np
    from flamecap.contract import TrackingResult, default_meta, intrinsics_from_fov, save_result
    from flamecap.flame.head import head_arrays
    rng = np.random.default_rng(0)
    T = n_frames
    t = np.arange(T) / 25.0
    s = np.sin(2 * np.pi * 0.7 * t)[:, None]
    n_expr = min(n_expr, model.n_expr)
    arrays = {"expr": (s * rng.normal(0, 1, (1, n_expr))).astype(np.float32),
              "jaw_pose": (s * [0.2, 0, 0]).astype(np.float32), "neck_pose": (s * [0.05, 0.1, 0]).astype(np.float32),
              "eye_pose": (s * [0.1, 0.1, 0, 0.1, 0.1, 0]).astype(np.float32),
              "global_rot": (s * [0.1, 0.3, 0]).astype(np.float32),
              "transl": (np.array([0, 0, -0.6]) + s * [0.01, 0, 0]).astype(np.float32),
              "valid": np.ones(T, bool), "landmark_residual_px": np.ones(T, np.float32), "time_s": t.astype(np.float32),
              "frame_index": np.arange(T, dtype=np.int32), "shape": np.zeros(10, np.float32),
              "K": intrinsics_from_fov(640, 480, 30).astype(np.float32), "cam_R": np.diag([1.0, -1, -1]),
              "cam_t": np.zeros(3), "image_size": np.array([640, 480], np.int32)}
    arrays.update(head_arrays(model, np.zeros(10), n_expr))
    save_result(path, TrackingResult(arrays, default_meta(25.0, {"path": "", "kind": "video"}, {"release": "bench"})))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, nargs="+", default=[75, 750])
    ap.add_argument("--n-expr", type=int, default=100)
    ap.add_argument("--subdivisions", type=int, default=4)
    ap.add_argument("--bake", action="store_true", help="also time per-frame baked keys (first size only)")
    a = ap.parse_args()
    from flamecap.flame.synthetic import make_synthetic_model
    model = make_synthetic_model(n_expr=a.n_expr, subdivisions=a.subdivisions)
    import bpy
    from blender_addon import scene
    with tempfile.TemporaryDirectory() as tmp:
        for T in a.frames:
            p = Path(tmp) / f"r{T}.npz"
            make_result(p, model, T, a.n_expr)
            for bake in ([False, True] if a.bake and T == a.frames[0] else [False]):
                bpy.ops.wm.read_factory_settings(use_empty=True)
                t0 = time.perf_counter()
                imp = scene.import_result(p, scene.ImportOptions(bake_per_frame=bake, background=False))
                dt = time.perf_counter() - t0
                t1 = time.perf_counter()
                for f in range(imp.frame_start, min(imp.frame_end, imp.frame_start + 24) + 1):
                    bpy.context.scene.frame_set(f)
                    imp.mesh.evaluated_get(bpy.context.evaluated_depsgraph_get())
                play = (time.perf_counter() - t1) / min(25, T)
                print(json.dumps({"frames": T, "vertices": model.n_vertices, "n_expr": a.n_expr, "bake": bake,
                                  "import_s": round(dt, 3), "import_ms_per_frame": round(1000 * dt / T, 3),
                                  "n_keys": len(imp.mesh.data.shape_keys.key_blocks),
                                  "playback_ms_per_frame": round(1000 * play, 2)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
