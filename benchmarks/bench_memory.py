"""Memory in clip length (issue 14): peak RSS and time of the per-frame landmark storage + fit path on a long
synthetic clip (a 75-frame, 478-point MediaPipe-sized track tiled to N frames, default 90 000 = 1 h at 25 fps),
measured in phases, and optionally ``flamecap track`` end to end on a real clip looped to M frames.

    python benchmarks/bench_memory.py [--frames 90000] [--track-clip GRID.mpg --track-frames 3000]

Prints one line per phase: seconds and peak RSS (ru_maxrss, MiB) after it. The landmark track is written and
read back through the landmarks .npz (what ``--landmarks-cache`` / ``flamecap landmarks`` store)."""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def phase(name: str, t0: float) -> float:
    now = time.perf_counter()
    print(f"{name:34s} {now - t0:7.1f} s   RSS now {rss_mib():7.0f} MiB   peak {peak_mib():7.0f} MiB", flush=True)
    return now


def fit_path(n_frames: int, n_points: int, out_dir: Path) -> None:
    import torch
    torch.set_num_threads(1)
    from flamecap.fit import FitConfig, build_result, fit_track
    from flamecap.fit.synthetic import default_test_model, make_clip, sample_binding
    from flamecap.contract.result import save_result
    from flamecap.landmarks.base import LandmarkTrack
    t = phase("start (imports)", time.perf_counter())
    model = default_test_model()
    b = sample_binding(model, n_points - 10, iris=True)
    clip = make_clip(model, b, n_frames=75, n_shape=20, n_expr=10)
    t = phase("75-frame synthetic clip", t)
    tr = clip.track
    reps = int(np.ceil(n_frames / tr.n_frames))
    for k in ("points", "sigma", "valid", "visible"):
        setattr(tr, k, np.concatenate([getattr(tr, k)] * reps)[:n_frames])
    tr.frame_index = np.arange(n_frames)
    tr.time_s = np.arange(n_frames) / tr.fps
    print(f"track: {n_frames} frames x {tr.n_points} points = "
          f"{sum(getattr(tr, k).nbytes for k in ('points', 'sigma', 'visible')) / 2 ** 20:.0f} MiB of landmarks")
    t = phase(f"tiled to {n_frames} frames", t)
    lm = tr.save(out_dir / "landmarks.npz")
    del tr, clip
    t = phase("landmarks .npz written", t)
    tr = LandmarkTrack.load(lm)
    t = phase("landmarks .npz read back", t)
    t_fit = time.perf_counter()
    fo = fit_track(tr, b, model, FitConfig.preset("fast"))
    t = phase("fit (fast)", t)
    res = build_result(fo, tr, model, source={"path": "synthetic", "kind": "video", "n_frames": n_frames},
                       aligner="synthetic", quality="fast", identity="none", focal_estimated=True)
    save_result(out_dir / "result.npz", res)
    phase("result built and written", t)
    print(f"fit path: {n_frames} frames, {time.perf_counter() - t_fit:.1f} s fit+write "
          f"({1e3 * (time.perf_counter() - t_fit) / n_frames:.2f} ms/frame), peak RSS {peak_mib():.0f} MiB")


def track_run(clip: Path, n_frames: int, out_dir: Path) -> None:
    """``flamecap track`` on ``clip`` looped (stream copy) to about ``n_frames`` frames; peak RSS of the child."""
    import av
    looped = out_dir / "looped.mp4"
    segment = out_dir / "segment.mp4"
    # encode the clip once, then repeat its packets with shifted timestamps (stream copy: an hour in seconds)
    with av.open(str(clip)) as src:
        frames = [f.to_ndarray(format="rgb24") for f in src.decode(video=0)]
    with av.open(str(segment), "w") as dst:
        s = dst.add_stream("libx264", rate=25)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = "yuv420p"
        for fr in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(fr, format="rgb24")):
                dst.mux(p)
        for p in s.encode():
            dst.mux(p)
    reps = max(1, int(np.ceil(n_frames / len(frames))))
    k = 0
    with av.open(str(segment)) as src, av.open(str(looped), "w") as dst:
        ins = src.streams.video[0]
        outs = dst.add_stream_from_template(ins)
        packets = [(bytes(p), p.pts, p.dts, p.duration, p.is_keyframe) for p in src.demux(ins) if p.size]
        span = max(q[1] for q in packets) + packets[0][3] - min(q[1] for q in packets)
        for r in range(reps):
            for data, pts, dts, dur, key in packets:
                if k >= n_frames:
                    break
                pk = av.Packet(data)
                pk.pts, pk.dts, pk.duration, pk.time_base = pts + r * span, dts + r * span, dur, ins.time_base
                pk.is_keyframe = key
                pk.stream = outs
                dst.mux(pk)
                k += 1
    from flamecap.flame.synthetic import make_synthetic_model
    from flamecap.contract import save_model_npz
    model = save_model_npz(out_dir / "model.npz", make_synthetic_model())
    env = dict(os.environ, OMP_NUM_THREADS="2")
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "flamecap", "track", str(looped), "-o", str(out_dir / "track.npz"),
                        "--model", str(model), "--progress", "none"], env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"flamecap track, {k} frames ({clip.name} looped): exit {p.returncode}, {dt:.1f} s wall "
          f"({k / dt:.0f} frames/s), peak RSS {child:.0f} MiB" + ("" if p.returncode == 0 else f"\n{p.stderr[-800:]}"))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=90_000)
    ap.add_argument("--points", type=int, default=478, help="landmarks per frame (MediaPipe: 478)")
    ap.add_argument("--track-clip", type=Path, default=None, help="also run 'flamecap track' on this clip looped")
    ap.add_argument("--track-frames", type=int, default=3000)
    ap.add_argument("--skip-fit", action="store_true")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        if a.track_clip is not None:
            track_run(a.track_clip, a.track_frames, Path(d))
        if not a.skip_fit:
            fit_path(a.frames, a.points, Path(d))
    return 0


if __name__ == "__main__":
    sys.exit(main())
