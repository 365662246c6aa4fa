"""Shape-key retarget: calibration time, per-frame solve speed and fidelity on a 1 000-frame take.

    python benchmarks/bench_retarget.py [--frames 1000] [--flame-ref ../shared/data/flame_reference]

The take is procedural on the FLAME-topology test head (talking jaw, lip parting, smiles, blinks, gaze
sweeps mostly within ±20°), once with eyelid shapes and once without (blinks then come from expression
components, and the retarget derives eye closure from the source mesh's lid points). Characters: the
procedural ARKit test character and the third-party heads of benchmarks/characters.py that are present
(exported through the add-on's own character export; skipped with the reason otherwise).
Prints per character: calibration seconds (fresh, then from the cache), solve frames/s, mouth-opening
correlation and amplitude ratio (lip gap / face size, character vs source), blink recall and the share of
frames with any eyeLook key > 0.9 while the source gaze is within ±20°.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def take(model, T: int, fps: float = 30.0, eyelids: bool = True):
    from flamecap.retarget.synthetic import make_result
    rng = np.random.default_rng(7)
    t = np.arange(T) / fps
    E = model.n_expr
    # syllables: jaw 0..0.3 rad at 3-5 Hz in phrases, with pauses
    phrase = (np.sin(2 * np.pi * 0.23 * t) > -0.3).astype(float)
    jaw = 0.3 * phrase * np.clip(np.sin(2 * np.pi * 3.7 * t + np.sin(2 * np.pi * 0.7 * t)), 0, 1) ** 1.5
    expr = np.zeros((T, E))
    expr[:, 0] = 1.2 * np.clip(np.sin(2 * np.pi * 0.11 * t), 0, 1)          # smile
    expr[:, 4] = 0.8 * np.clip(np.sin(2 * np.pi * 1.3 * t + 1), 0, 1) * phrase  # lips part
    blink = np.zeros(T)
    starts = np.arange(int(1.5 * fps), T - 8, int(3.1 * fps)) + rng.integers(-10, 10, size=len(np.arange(int(1.5 * fps), T - 8, int(3.1 * fps))))
    for s in starts:
        blink[s:s + 7] = np.sin(np.linspace(0, np.pi, 7))
    yaw = np.radians(18) * np.sin(2 * np.pi * 0.17 * t) + np.radians(6) * (np.sin(2 * np.pi * 0.05 * t) > 0.95)
    pitch = np.radians(10) * np.sin(2 * np.pi * 0.13 * t + 0.5)
    gaze = np.stack([pitch, yaw, 0 * t], 1)
    kw = dict(expr=expr, jaw_pose=np.stack([jaw, 0 * t, 0 * t], 1), eye_pose=np.hstack([gaze, gaze]), fps=fps,
              neck_pose=np.stack([0.1 * np.sin(2 * np.pi * 0.1 * t), 0.2 * np.sin(2 * np.pi * 0.07 * t), 0 * t], 1))
    if eyelids:
        kw["eyelids"] = np.stack([blink, blink], 1)
    else:
        kw["expr"][:, 8] += 1.5 * blink
        kw["expr"][:, 9] += 1.5 * blink
    return make_result(model, np.random.default_rng(3).normal(size=model.n_shape) * 0.5, **kw), blink, np.degrees(np.abs(np.stack([yaw, pitch], 1)))


# keys that open a character's mouth, in order of preference: only to find its lip vertices for the mouth
# metric (some ARKit-named characters ship an empty jawOpen and open the mouth with a viseme)
MOUTH_OPEN_KEYS = ("jawOpen", "viseme_aa", "Fcl_MTH_A", "mouthOpen")


def mouth_open_key(target):
    """The delta (N, 3) of the first key of MOUTH_OPEN_KEYS that moves the character, or None."""
    for name in MOUTH_OPEN_KEYS:
        if name in target.key_names:
            d = target.key_deltas[target.key_names.index(name)]
            if np.abs(d).max() > 0:
                return d
    return None


def metrics(res, target, anim, cal, blink, gaze_deg):
    from flamecap.contract.arkit import match_arkit_names
    from flamecap.retarget.calibrate import face_size
    from flamecap.retarget.deform import head_lbs
    from flamecap.retarget.drive import character_mouth_pair, flame_mouth_pair
    from flamecap.retarget.features import feature_basis
    out = {}
    canon = match_arkit_names(anim.names)
    by = {c: k for k, (n) in enumerate(anim.names) for c in [canon.get(n)] if c}
    fp = flame_mouth_pair(res, feature_basis(res))
    jaw_key = mouth_open_key(target)
    if jaw_key is not None and min(fp) >= 0:
        cp = character_mouth_pair(target, cal.registration, jaw_key, res)
        V = head_lbs(res)                                    # the source's full FLAME deformation
        S = face_size(res)
        src = (np.linalg.norm(V[:, fp[0]] - V[:, fp[1]], axis=1) - np.linalg.norm(
            np.asarray(res["head_vertices"])[fp[0]] - np.asarray(res["head_vertices"])[fp[1]])) / S
        idx = [target.key_names.index(n) for n in anim.names]
        d = np.einsum("tk,knc->tnc", anim.weights, target.key_deltas[idx][:, list(cp)])
        p = target.vertices[list(cp)]
        ch = (np.linalg.norm(p[0] + d[:, 0] - p[1] - d[:, 1], axis=1) - np.linalg.norm(p[0] - p[1])) / (
            cal.registration.similarity.scale * S)
        out["mouth_corr"] = float(np.corrcoef(src, ch)[0, 1])
        out["mouth_amp"] = float(np.ptp(np.percentile(ch, [5, 95])) / np.ptp(np.percentile(src, [5, 95])))
    if "eyeBlinkLeft" in by:
        w = anim.weights[:, by["eyeBlinkLeft"]]
        ev = np.flatnonzero(np.diff((blink > 0.5).astype(int)) == 1)
        out["blink_recall"] = float(np.mean([w[s:s + 8].max() >= 0.5 for s in ev])) if len(ev) else float("nan")
    looks = [k for c, k in by.items() if c.startswith("eyeLook")]
    if looks:
        calm = np.all(gaze_deg <= 20, axis=1)
        out["eyelook_sat"] = float(np.mean(anim.weights[calm][:, looks].max(1) > 0.9))
    return out


def run(name, res, target, pairs, blink, gaze_deg, cache):
    from flamecap.retarget.calibrate import calibrate
    from flamecap.retarget.shapekeys import retarget_shape_keys
    from flamecap.errors import FlameCapError
    t0 = time.perf_counter()
    try:
        cal = calibrate(res, target, pairs, cache_dir=cache)
    except FlameCapError as exc:
        print(f"{name:34s} calibration failed after {time.perf_counter() - t0:.1f} s: {exc}", flush=True)
        return
    t_cal = time.perf_counter() - t0
    t0 = time.perf_counter()
    cal2 = calibrate(res, target, pairs, cache_dir=cache)
    t_cached = time.perf_counter() - t0
    assert cal2.cached
    anim = retarget_shape_keys(res, target, cal.correspondences, registration=cal.registration)
    t0 = time.perf_counter()
    anim = retarget_shape_keys(res, target, cal.correspondences, registration=cal.registration)
    t_take = time.perf_counter() - t0
    m = metrics(res, target, anim, cal, blink, gaze_deg)
    T = res.n_frames
    print(f"{name:34s} keys {len(anim.names):3d} driven {len(anim.driven):2d} | calibration {t_cal:5.1f} s, cached "
          f"{t_cached:4.2f} s | take {t_take:5.3f} s = {T / t_take:7.0f} frames/s (solve {anim.timings['solve_s']:.3f} s, "
          f"{anim.timings['iterations']} it) | " + ", ".join(f"{k} {v:.3f}" for k, v in m.items()), flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--flame-ref", default=str(HERE.parents[1] / "shared" / "data" / "flame_reference"))
    ap.add_argument("--bpy-python", default=sys.executable,
                    help="a Python with bpy for the glTF character export (e.g. a tests/blender/run_versions.py venv)")
    args = ap.parse_args(argv)
    import characters
    from flamecap.flame.synthetic import flame_reference_head
    from flamecap.retarget.io import load_character
    from flamecap.retarget.shapekeys import ShapeKeyTarget
    from flamecap.retarget.synthetic import make_arkit_character
    model = flame_reference_head(Path(args.flame_ref), n_expr=16)
    no_lids = flame_reference_head(Path(args.flame_ref), n_expr=16)
    del no_lids.arrays["eyelid_dirs"]
    takes = {"eyelid shapes": take(model, args.frames), "no eyelid shapes": take(no_lids, args.frames, eyelids=False)}
    tmp = Path(tempfile.mkdtemp(prefix="bench_retarget_"))
    chars = []
    keys = ["jawOpen", "eyeBlinkLeft", "eyeBlinkRight", "mouthSmileLeft", "mouthSmileRight", "browInnerUp",
            "mouthFunnel", "cheekPuff", "mouthPucker", "mouthStretchLeft"]
    ch = make_arkit_character(model, keys, n_frames=2, warp=0.03)
    chars.append(("procedural test character", ShapeKeyTarget(ch.vertices, ch.faces, keys, ch.key_deltas,
                                                                name="procedural"), (ch.flame_landmarks, ch.target_landmarks)))
    for name, spec in characters.CHARACTERS.items():
        p = characters.path_of(name)
        if p is None:
            print(f"skip: {characters.missing_reason(name)}")
            continue
        out = tmp / f"{name}.npz"
        r = subprocess.run([args.bpy_python, str(HERE / "export_glb_character.py"), str(p), str(out), spec["mesh"]],
                           capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(HERE.parents[1] / "core")))
        if r.returncode != 0:
            print(f"skip {name}: export failed: {r.stderr.strip().splitlines()[-1:]}")
            continue
        tgt, pairs = load_character(out)
        chars.append((f"{name} ({len(tgt.vertices)} v)", tgt, pairs))
    for tname, (res, blink, gaze) in takes.items():
        print(f"--- take: {args.frames} frames, {tname}")
        for cname, tgt, pairs in chars:
            run(cname, res, tgt, pairs, blink, gaze, tmp / "cache")


if __name__ == "__main__":
    main()
