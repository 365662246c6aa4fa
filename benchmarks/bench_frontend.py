"""The ``litert`` MediaPipe front end against the legacy ``mediapipe==0.10.21`` FaceMesh(refine_landmarks=True):

1. parity on every GRID clip: both aligners on the same decoded frames; per clip the frames with a face
   and the 478-point distance (mean, p99, max, px) on frames both found (targets: mean ≤ 0.5, p99 ≤ 1.5,
   litert finds a face on ≥ as many frames);
2. the full-range fallback: a GRID face pasted at its own size into a 1920×1080 frame (a ~100 px face in a
   large frame, the case the short-range detector misses), as a 25-frame clip;
3. throughput (frames/s, decoding included, ``track_footage`` as ``flamecap landmarks`` runs it) at 288p
   (the GRID clips) and 1080p (a GRID clip upscaled to 1350×1080), both backends back to back per clip
   so that a shared machine's load hits both alike.

Needs the model files (``flamecap models fetch-mediapipe``) and the legacy ``mediapipe`` package.
Run on two cores: ``taskset -c 0,1 python benchmarks/bench_frontend.py [--clips N] [--threads 1]`` (the
process then has two threads busy, decoding and inference; ``--threads 2`` gives LiteRT a pool of two).
"""
from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
GRID = DATA / "footage" / "grid"


def _aligners(threads: int):
    from flamecap.landmarks import get_aligner
    return {"mediapipe": get_aligner("mediapipe"), "litert": get_aligner("litert", num_threads=threads)}


def parity(clips: list[Path], aligners: dict) -> dict:
    from flamecap.video import open_footage
    rows, all_d = [], []
    for c in clips:
        fo = open_footage(c)
        frames = list(iter(fo))
        tr = {k: a.track(iter(frames), fo.size, fo.fps) for k, a in aligners.items()}
        a, b = tr["mediapipe"], tr["litert"]
        both = a.valid & b.valid
        d = np.linalg.norm(a.points[both].astype(np.float64) - b.points[both], axis=-1)
        all_d.append(d.ravel())
        rel = np.abs(a.sigma[both] - b.sigma[both]) / a.sigma[both]
        rows.append(dict(clip=c.name, frames=len(frames), valid_legacy=int(a.valid.sum()),
                         valid_litert=int(b.valid.sum()), mean_px=float(d.mean()) if d.size else None,
                         p99_px=float(np.percentile(d, 99)) if d.size else None,
                         max_px=float(d.max()) if d.size else None,
                         sigma_rel_p99=float(np.percentile(rel, 99)) if rel.size else None))
        r = rows[-1]
        print(f"  {c.name:22s} frames {r['frames']:4d}  faces legacy {r['valid_legacy']:4d} litert "
              f"{r['valid_litert']:4d}  mean {r['mean_px']:.4f} px  p99 {r['p99_px']:.4f} px  "
              f"max {r['max_px']:.4f} px  σ rel. diff p99 {r['sigma_rel_p99']:.4f}", flush=True)
    d = np.concatenate(all_d)
    ok = (all(r["mean_px"] <= 0.5 and r["p99_px"] <= 1.5 and r["valid_litert"] >= r["valid_legacy"] for r in rows))
    print(f"  all clips: {d.size // 478} frames, mean {d.mean():.4f} px, p99 {np.percentile(d, 99):.4f} px, "
          f"max {d.max():.4f} px; target (every clip mean ≤ 0.5, p99 ≤ 1.5, faces ≥ legacy): "
          f"{'MET' if ok else 'NOT MET'}")
    return dict(clips=rows, mean_px=float(d.mean()), p99_px=float(np.percentile(d, 99)), met=bool(ok))


def parity_graphs(clips: list[Path], litert) -> dict:
    """The bare graphs, no aligner around them: FaceMesh(refine_landmarks=True, max_num_faces=1) against
    LiteRTFaceMesh(max_num_faces=1), frame by frame."""
    from mediapipe.python.solutions import face_mesh
    from flamecap.landmarks.litert_aligner import LiteRTFaceMesh
    from flamecap.video import open_footage
    ds, n_a, n_b = [], 0, 0
    for c in clips:
        fm = face_mesh.FaceMesh(static_image_mode=False, refine_landmarks=True, max_num_faces=1)
        lt = LiteRTFaceMesh(litert.models, max_num_faces=1)
        for _, _, rgb in open_footage(c):
            h, w = rgb.shape[:2]
            fa = litert._faces_px(lt.process(rgb), w, h)
            r = fm.process(rgb)
            fb = [np.array([(q.x, q.y, q.z) for q in lm.landmark]) * [w, h, w] for lm in (r.multi_face_landmarks or [])]
            n_a += bool(fb)
            n_b += bool(fa)
            if fa and fb:
                ds.append(np.linalg.norm(fa[0][:, :2] - fb[0][:, :2], axis=-1))
        fm.close()
    d = np.concatenate(ds)
    print(f"  bare graphs, {len(clips)} clips: faces legacy {n_a} litert {n_b}; mean {d.mean():.4f} px, "
          f"p99 {np.percentile(d, 99):.4f} px, max {d.max():.4f} px", flush=True)
    return dict(faces_legacy=n_a, faces_litert=n_b, mean_px=float(d.mean()), p99_px=float(np.percentile(d, 99)),
                max_px=float(d.max()))


def small_face_clip(path: Path, n: int = 25) -> Path:
    """A GRID clip's frames pasted at their own size (face ~100 px wide) into a grey 1920×1080 frame."""
    import cv2
    from flamecap.video import open_footage
    src = sorted(GRID.glob("*.mpg"))[0]
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (1920, 1080))
    for k, (_, _, rgb) in zip(range(n), open_footage(src)):
        big = np.full((1080, 1920, 3), 110, np.uint8)
        h, w = rgb.shape[:2]
        big[400:400 + h, 800 + 4 * k:800 + 4 * k + w] = rgb       # drifting slowly to the right
        wr.write(cv2.cvtColor(big, cv2.COLOR_RGB2BGR))
    wr.release()
    return path


def fallback(tmp: Path, threads: int) -> dict:
    from flamecap.landmarks import get_aligner, track_footage
    from flamecap.video import open_footage
    clip = small_face_clip(tmp / "small_face_1080p.mp4")
    out = {}
    for label, al in (("legacy mediapipe", get_aligner("mediapipe")),
                      ("litert, short range only", get_aligner("litert", num_threads=threads, full_range_fallback=False)),
                      ("litert, full-range fallback", get_aligner("litert", num_threads=threads))):
        tr = track_footage(open_footage(clip), al)
        out[label] = int(tr.valid.sum())
        print(f"  {label:28s} face on {out[label]}/{tr.n_frames} frames", flush=True)
    return out


def upscaled_clip(src: Path, path: Path, size=(1350, 1080)) -> Path:
    import cv2
    from flamecap.video import open_footage
    wr = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, size)
    for _, _, rgb in open_footage(src):
        wr.write(cv2.cvtColor(cv2.resize(rgb, size, interpolation=cv2.INTER_CUBIC), cv2.COLOR_RGB2BGR))
    wr.release()
    return path


def throughput(clips: list[Path], aligners: dict, label: str, repeats: int = 1) -> dict:
    """frames/s of ``track_footage`` (decode in its prefetch thread, as the CLI runs it), alternating the
    two backends clip by clip."""
    from flamecap.landmarks import track_footage
    from flamecap.video import open_footage
    t = {k: 0.0 for k in aligners}
    n = {k: 0 for k in aligners}
    for _ in range(repeats):
        for i, c in enumerate(clips):
            order = list(aligners) if i % 2 == 0 else list(aligners)[::-1]
            for k in order:
                t0 = time.perf_counter()
                tr = track_footage(open_footage(c), aligners[k])
                t[k] += time.perf_counter() - t0
                n[k] += tr.n_frames
    fps = {k: n[k] / t[k] for k in aligners}
    print(f"  {label}: legacy {fps['mediapipe']:.1f} frames/s, litert {fps['litert']:.1f} frames/s "
          f"(x{fps['litert'] / fps['mediapipe']:.2f}; {n['litert']} frames each)", flush=True)
    return fps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=None, help="use the first N GRID clips (default: all)")
    ap.add_argument("--threads", type=int, default=1, help="LiteRT threads per model (default 1, as the aligner)")
    ap.add_argument("--repeats", type=int, default=1, help="throughput passes over the clips")
    ap.add_argument("--skip", action="append", default=[], choices=("parity", "fallback", "288p", "1080p"))
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    clips = sorted(GRID.glob("*.mpg"))[:args.clips]
    if not clips:
        raise SystemExit(f"no GRID clips in {GRID}")
    aligners = _aligners(args.threads)
    warm = clips[0]
    from flamecap.landmarks import track_footage
    from flamecap.video import open_footage
    for a in aligners.values():               # model loading and first-call costs out of the figures
        track_footage(open_footage(warm, end=10), a)
    res: dict = {}
    if "parity" not in args.skip:
        print("parity vs mediapipe 0.10.21 FaceMesh(refine_landmarks=True), same frames:")
        res["parity"] = parity(clips, aligners)
        res["parity_graphs"] = parity_graphs(clips, aligners["litert"])
    with tempfile.TemporaryDirectory(prefix="flamecap-bench-") as tmp:
        tmp = Path(tmp)
        if "fallback" not in args.skip:
            print("small face (~100 px) in a 1920x1080 frame, 25 frames:")
            res["fallback"] = fallback(tmp, args.threads)
        if "288p" not in args.skip:
            print("throughput, decoding included:")
            res["fps_288p"] = throughput(clips, aligners, f"288p ({len(clips)} GRID clips)", args.repeats)
        if "1080p" not in args.skip:
            big = [upscaled_clip(c, tmp / f"{c.stem}_1080p.mp4") for c in clips[:2]]
            res["fps_1080p"] = throughput(big, aligners, "1080p (GRID upscaled to 1350x1080, 2 clips)",
                                          args.repeats)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
