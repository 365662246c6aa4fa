"""Batch benchmark (issue 18): N GRID shots (the clips of ../shared/data/footage/grid repeated to N) tracked

- as N separate ``flamecap track`` runs, one after another (each pays Python start-up and imports);
- by ``flamecap batch`` on local worker processes (one per core, start-up paid once per worker);
- as Ray tasks on a local Ray (``ray.init(num_cpus=cores)`` in this process, restarted for every repeat so its
  workers start cold; the Ray start-up is reported apart and included in a second figure).

The variants run back to back in each repeat; medians over repeats are printed. Every batch result is compared
array by array with the separate run of the same clip (bit-identical or not). Then: a worker SIGKILLed mid-shot
(local pool and Ray) → that shot retried, the batch completes, no temporary file left, same arrays; and a
second local batch over the finished shots (everything skipped).

    python benchmarks/bench_batch.py [--shots 20] [--repeats 3] [--end FRAMES] [--no-ray] [--json OUT]

Needs ../shared/data (GRID footage, FLAME reference); the head's MediaPipe binding is calibrated once first.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


def _same_arrays(a: Path, b: Path) -> bool:
    from flamecap.contract.npzio import read_npz
    x, _ = read_npz(a)
    y, _ = read_npz(b)
    return sorted(x) == sorted(y) and all(np.array_equal(x[k], y[k], equal_nan=True) for k in x)


def _temps(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.rglob(".*") if p.suffix in (".tmp", ".probe"))


def _cli(args: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "flamecap", *args], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def separate_runs(shots: list[dict], model: Path, out: Path, extra: list[str]) -> float:
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for s in shots:
        _cli(["track", s["footage"], "-o", str(out / f"{s['name']}.npz"), "--model", str(model),
              "--progress", "none", *extra])
    return time.perf_counter() - t0


def local_batch(shot_list: Path, model: Path, out: Path, extra: list[str]) -> float:
    return _cli(["batch", str(shot_list), "-o", str(out), "--model", str(model), "--progress", "none",
                 "--no-resume", *extra])


def ray_batch(shots, out: Path, cores: int) -> tuple[float, float]:
    """(Ray start-up s, batch s) on a fresh local Ray."""
    import ray

    from flamecap.batch import run_batch
    t0 = time.perf_counter()
    ray.init(num_cpus=cores, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    t1 = time.perf_counter()
    try:
        report = run_batch(shots, out, ray="auto", resume=False)
    finally:
        ray.shutdown()
    t2 = time.perf_counter()
    bad = [(s.shot.name, s.error) for s in report.shots if s.status != "done"]
    if bad:
        raise SystemExit(f"Ray batch failed shots: {bad}")
    return t1 - t0, t2 - t1


def kill_check(shots, out: Path, reference: Path, ray: bool, cores: int) -> dict:
    """SIGKILL the worker of the first shot 1 s into it; what happened."""
    from flamecap.batch import run_batch
    killed: list[int] = []

    def on_event(kind, **f):
        if kind == "shot" and f["shot"] == shots[0].name and f["status"] == "running" and not killed:
            killed.append(f["pid"])
            threading.Timer(1.0, os.kill, (f["pid"], signal.SIGKILL)).start()

    if ray:
        import ray as _ray
        _ray.init(num_cpus=cores, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    try:
        report = run_batch(shots, out, ray="auto" if ray else None, retries=2, resume=False, on_event=on_event)
    finally:
        if ray:
            _ray.shutdown()
    first = report.shots[0]
    return {"engine": "ray" if ray else "local", "killed_pid": killed[0] if killed else None,
            "first_shot_attempts": first.attempts, "all_done": all(s.status == "done" for s in report.shots),
            "temp_files_left": _temps(out), "killed_shot_identical": _same_arrays(reference / f"{first.shot.name}.npz",
                                                                                 Path(first.shot.output))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shots", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--end", type=int, default=None, help="track frames [0, END) of each clip (default: all)")
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--json", default=None, help="write the figures here too")
    a = ap.parse_args()
    sys.path.insert(0, str(REPO / "core"))
    from flamecap.batch import available_cores, collect_shots
    from flamecap.commands.track import TrackOptions
    from flamecap.contract.model_format import save_model_npz
    from flamecap.binding.mediapipe import mediapipe_binding
    from flamecap.flame.synthetic import flame_reference_head

    clips = sorted((DATA / "footage" / "grid").glob("*.mpg"))
    if not clips:
        raise SystemExit(f"no GRID clips in {DATA / 'footage' / 'grid'}")
    cores = available_cores()
    work = Path(tempfile.mkdtemp(prefix="bench_batch_"))
    os.environ["FLAMECAP_HOME"] = str(work / "home")
    head = flame_reference_head(DATA / "flame_reference")
    model = save_model_npz(work / "head.npz", head)
    t = time.perf_counter()
    mediapipe_binding(head)   # calibrated once, cached: every variant reads the same binding
    print(f"binding calibration (once): {time.perf_counter() - t:.1f} s", flush=True)
    rows = [{"footage": str(clips[i % len(clips)]), "name": f"shot{i + 1:02d}"} for i in range(a.shots)]
    if a.end:
        for r in rows:
            r["end"] = a.end
    shot_list = work / "shots.json"
    shot_list.write_text(json.dumps(rows))
    extra = ["--end", str(a.end)] if a.end else []
    opts = TrackOptions(model=str(model), end=a.end)
    with os.popen("uptime") as fh:
        load = fh.read().strip()
    print(f"{a.shots} shots from {len(clips)} GRID clips, {cores} cores; machine load at start: {load}", flush=True)

    times: dict[str, list[float]] = {"separate": [], "batch": [], "ray_start": [], "ray": []}
    identical = {"batch": True, "ray": True}
    for rep in range(a.repeats):
        sep = work / f"separate{rep}"
        times["separate"].append(separate_runs(rows, model, sep, extra))
        out = work / f"batch{rep}"
        times["batch"].append(local_batch(shot_list, model, out, extra))
        identical["batch"] &= all(_same_arrays(sep / f"{r['name']}.npz", out / f"{r['name']}.npz") for r in rows)
        line = f"repeat {rep + 1}: separate {times['separate'][-1]:.1f} s, batch {times['batch'][-1]:.1f} s"
        if not a.no_ray:
            rout = work / f"ray{rep}"
            shots = collect_shots([str(shot_list)], rout, opts)
            start, dt = ray_batch(shots, rout, cores)
            times["ray_start"].append(start)
            times["ray"].append(dt)
            identical["ray"] &= all(_same_arrays(sep / f"{s.name}.npz", Path(s.output)) for s in shots)
            line += f", Ray {dt:.1f} s (+ {start:.1f} s Ray start-up)"
        print(line, flush=True)

    med = {k: statistics.median(v) for k, v in times.items() if v}
    sep_tp = a.shots / med["separate"]
    figures = {"shots": a.shots, "cores": cores, "repeats": a.repeats, "load_at_start": load,
               "seconds": {k: [round(x, 2) for x in v] for k, v in times.items() if v},
               "median_s": {k: round(v, 2) for k, v in med.items()},
               "shots_per_min": {"separate": round(60 * sep_tp, 2), "batch": round(60 * a.shots / med["batch"], 2)},
               "speedup_vs_separate": {"batch": round(med["separate"] / med["batch"], 2)},
               "bit_identical_to_separate": identical if not a.no_ray else {"batch": identical["batch"]}}
    if not a.no_ray:
        figures["shots_per_min"]["ray"] = round(60 * a.shots / med["ray"], 2)
        figures["speedup_vs_separate"]["ray"] = round(med["separate"] / med["ray"], 2)
        figures["speedup_vs_separate"]["ray_with_start_up"] = round(med["separate"] / (med["ray"] + med["ray_start"]), 2)

    # a worker killed mid-shot, then a resumed batch (everything skipped)
    ref = work / "separate0"
    kill_shots = collect_shots([str(shot_list)], work / "kill_local", opts)[:6]
    figures["kill"] = [kill_check(kill_shots, work / "kill_local", ref, False, cores)]
    if not a.no_ray:
        ray_shots = collect_shots([str(shot_list)], work / "kill_ray", opts)[:6]
        figures["kill"].append(kill_check(ray_shots, work / "kill_ray", ref, True, cores))
    t = time.perf_counter()
    from flamecap.batch import run_batch
    resumed = run_batch(collect_shots([str(shot_list)], work / "batch0", opts), work / "batch0")
    figures["resume"] = {"skipped": resumed.count("skipped"), "of": len(resumed.shots),
                         "seconds": round(time.perf_counter() - t, 2)}
    with os.popen("uptime") as fh:
        figures["load_at_end"] = fh.read().strip()
    print(json.dumps(figures, indent=1))
    if a.json:
        Path(a.json).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
