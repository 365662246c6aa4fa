"""Real footage against an independent 68-point reference (dlib): how faithful the fitted face is, next to the
raw MediaPipe points it was fitted to.

Per clip: ``flamecap track`` (each quality) → the fitted mesh → FLAME's official 68-point embedding
(``flame_static_embedding_68.pkl``) projected through the result's camera, compared with dlib's 68 points
(:mod:`.dlib68`). Raw MediaPipe enters through :data:`MP_TO_68`. Metrics: :mod:`.metrics68`.
Head: the FLAME-topology test head (the one ``flamecap bench`` uses), written to a model file for the run.
"""
from __future__ import annotations

import hashlib
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..binding.mediapipe import MP_TO_68
from ..errors import InputError
from . import metrics68 as M
from .dlib68 import find_model, reference_points, require_dlib
from .tracking import DEFAULT_TRACK_CMD, ensure_result, write_report, project_surface, result_vertices

REPORT_FORMAT = "flamecap.reference-grid"
RAW = "mediapipe"


def raw_mediapipe(video: Path, cache_dir: Path):
    """MediaPipe's 478 points on every frame (:class:`LandmarkTrack`, the default aligner: the face models on
    LiteRT), cached per clip, aligner and runtime version."""
    from importlib.metadata import version

    from ..flame.registry import sha256_file
    from ..landmarks import DEFAULT_ALIGNER, LandmarkTrack, get_aligner, track_footage
    from ..video import open_footage
    runtime = version("ai-edge-litert" if DEFAULT_ALIGNER == "litert" else "mediapipe")
    key = hashlib.sha256(f"{sha256_file(video)}:{DEFAULT_ALIGNER}:{runtime}".encode()).hexdigest()[:20]
    path = Path(cache_dir) / f"{video.stem}_mp_{key}.npz"
    if path.is_file():
        return LandmarkTrack.load(path)
    track = track_footage(open_footage(video), get_aligner(DEFAULT_ALIGNER))
    path.parent.mkdir(parents=True, exist_ok=True)
    track.save(path)
    return track


def inner_lip_order(template: np.ndarray, faces: np.ndarray, face_idx: np.ndarray, bary: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, float]:
    """FLAME's 68-point embedding with its inner-lip rows in upper/lower order on this head's template.

    On the FLAME 2020 template the official embedding's "upper" inner-lip points (61–63) sit 3.3 mm *below* its
    "lower" ones (65–67), on triangles that open with the jaw: compared point by point with a detector's
    inner lips, an opening mouth would read as the upper lip dropping. When the template's pairs are crossed
    (upper below lower, +Y up) the rows are swapped (61↔67, 62↔66, 63↔65). Returns (face_idx, bary, mean
    crossing in mm: > 0 = crossed and swapped)."""
    tri = np.asarray(template, float)[np.asarray(faces)[face_idx]]
    p = np.einsum("kcd,kc->kd", tri, np.asarray(bary, float))
    cross = float(np.mean([p[lo, 1] - p[up, 1] for up, lo in M.MOUTH_GAPS])) * 1000.0
    idx, b = np.array(face_idx), np.array(bary)
    if cross > 0:
        for up, lo in M.MOUTH_GAPS:
            idx[[up, lo]], b[[up, lo]] = idx[[lo, up]], b[[lo, up]]
    return idx, b, cross


def select_clips(folder: Path, spec: str) -> list[Path]:
    """``all``, a count (the first N by name) or comma-separated clip names (stems)."""
    from ..bench import VIDEO_EXTS
    if not folder.is_dir():
        raise InputError(f"GRID folder {folder} not found; pass --grid DIR")
    videos = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_EXTS)
    if not videos:
        raise InputError(f"{folder} holds no video clips")
    if spec == "all":
        return videos
    if spec.isdigit():
        return videos[: int(spec)]
    by_name = {p.stem: p for p in videos}
    names = [s.strip() for s in spec.split(",") if s.strip()]
    missing = [n for n in names if n not in by_name]
    if missing:
        raise InputError(f"--clips: no clip named {', '.join(missing)} in {folder} "
                         f"(have {', '.join(by_name)})")
    return [by_name[n] for n in names]


def _f(x) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def source_metrics(p68: np.ndarray, ref: np.ndarray, keep: np.ndarray, mp68: np.ndarray) -> dict[str, Any]:
    """Everything measured for one point source (fitted or raw) on one clip; ``keep`` = frames used."""
    from ..metrics import jitter, lag_frames
    norm = M.iod(ref)
    out: dict[str, Any] = {"nme": {k: _f(v) for k, v in M.region_nme(p68, ref, keep).items()},
                           "nme_offset_removed": _f(M.offset_removed_nme(p68, ref, keep))}
    inner = list(M.INNER51)
    out["jitter_px"] = _f(jitter(p68[:, inner], keep))
    out["lag_frames_vs_mediapipe"] = int(lag_frames(mp68[keep][:, inner], p68[keep][:, inner]))
    mo_ref, mo_mp, mo = (M.mouth_opening(x, norm) for x in (ref, mp68, p68))
    out["mouth"] = {"mean": _f(np.nanmean(mo[keep])), "corr_ref": _f(M.correlation(mo, mo_ref, keep)),
                    "amp_vs_ref": _f(M.amplitude_ratio(mo, mo_ref, keep)),
                    "amp_vs_mediapipe": _f(M.amplitude_ratio(mo, mo_mp, keep)),
                    "lag_vs_ref": M.signal_lag(mo_ref, mo, keep)}
    eo_ref, eo = M.eye_opening(ref, norm), M.eye_opening(p68, norm)
    out["eyes"] = {side: {"mean_vs_ref": _f(M.mean_ratio(eo[side], eo_ref[side], keep)),
                          "corr_ref": _f(M.correlation(eo[side], eo_ref[side], keep)),
                          "amp_vs_ref": _f(M.amplitude_ratio(eo[side], eo_ref[side], keep))}
                   for side in ("right", "left")}
    ref_ev = M.blink_events(eo_ref["mean"], keep)
    ev = M.blink_events(eo["mean"], keep)
    hit, total = M.blink_recall(ref_ev, ev)
    out["blinks"] = {"reference": [int(t) for t in ref_ev], "detected": [int(t) for t in ev],
                     "reproduced": hit, "total": total}
    return out


def clip_metrics(ref: np.ndarray, found: np.ndarray, mp68: np.ndarray, mp_valid: np.ndarray,
                 fits: dict[str, np.ndarray]) -> dict[str, Any]:
    """All sources on one clip, over the frames every source and the reference have."""
    keep = np.asarray(found, bool) & np.asarray(mp_valid, bool)
    for p in fits.values():
        keep &= np.isfinite(p).all((1, 2))
    out = {"frames": int(len(found)), "reference_found": int(np.sum(found)), "frames_used": int(keep.sum()),
           "sources": {RAW: source_metrics(mp68, ref, keep, mp68)}}
    for name, p in fits.items():
        out["sources"][name] = source_metrics(p, ref, keep, mp68)
    raw = out["sources"][RAW]
    for name in fits:
        s = out["sources"][name]
        s["nme_ratio_vs_mediapipe"] = _f(s["nme"]["inner51"] / raw["nme"]["inner51"]) \
            if s["nme"]["inner51"] and raw["nme"]["inner51"] else None
        s["nme_minus_mediapipe"] = {k: _f(v - raw["nme"][k]) if v is not None and raw["nme"][k] is not None
                                    else None for k, v in s["nme"].items()}
        s["jitter_ratio_vs_mediapipe"] = _f(s["jitter_px"] / raw["jitter_px"]) if raw["jitter_px"] else None
    return out


def _mean(vals) -> float | None:
    v = [float(x) for x in vals if x is not None and math.isfinite(float(x))]
    return float(np.mean(v)) if v else None


def _dig(d: dict, path: tuple[str, ...]):
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


SUMMARY_KEYS: tuple[tuple[str, ...], ...] = (
    ("nme", "inner51"), *(("nme", r) for r in M.REGIONS), ("nme_offset_removed",), ("nme_ratio_vs_mediapipe",),
    *(("nme_minus_mediapipe", r) for r in ("inner51", *M.REGIONS)),
    ("jitter_px",), ("jitter_ratio_vs_mediapipe",), ("lag_frames_vs_mediapipe",),
    ("mouth", "corr_ref"), ("mouth", "amp_vs_ref"), ("mouth", "amp_vs_mediapipe"), ("mouth", "lag_vs_ref"),
    *(("eyes", side, k) for side in ("right", "left") for k in ("mean_vs_ref", "corr_ref", "amp_vs_ref")))


def summarise(clips: list[dict]) -> dict[str, dict]:
    """Per source: the mean over clips of every figure, and blink recall over all clips' events."""
    sources = list(dict.fromkeys(s for c in clips for s in c["sources"]))
    out = {}
    for s in sources:
        rows = [c["sources"][s] for c in clips if s in c["sources"]]
        d = {".".join(k): _mean(_dig(r, k) for r in rows) for k in SUMMARY_KEYS}
        hit = sum(r["blinks"]["reproduced"] for r in rows)
        tot = sum(r["blinks"]["total"] for r in rows)
        d["blinks.reproduced"], d["blinks.total"] = hit, tot
        d["blinks.recall"] = hit / tot if tot else None
        d["blinks.detected"] = sum(len(r["blinks"]["detected"]) for r in rows)
        out[s] = {k: v for k, v in d.items() if v is not None or k.startswith("blinks")}
    return out


def _fmt(x, nd=2) -> str:
    return "–" if x is None else (str(x) if isinstance(x, int) else f"{x:.{nd}f}")


CLIP_COLUMNS = (("NME51 %", ("nme", "inner51")), ("brows", ("nme", "brows")), ("eyes", ("nme", "eyes")),
                ("nose", ("nme", "nose")), ("o.mouth", ("nme", "outer_mouth")), ("i.mouth", ("nme", "inner_mouth")),
                ("jaw", ("nme", "jaw_line")), ("offs-rm", ("nme_offset_removed",)),
                ("ratio/MP", ("nme_ratio_vs_mediapipe",)), ("mouth r", ("mouth", "corr_ref")),
                ("mouth amp/ref", ("mouth", "amp_vs_ref")), ("mouth amp/MP", ("mouth", "amp_vs_mediapipe")),
                ("eyeR mean/ref", ("eyes", "right", "mean_vs_ref")), ("eyeL mean/ref", ("eyes", "left", "mean_vs_ref")),
                ("eye r R/L", None), ("blinks", None), ("jitter px", ("jitter_px",)),
                ("jit/MP", ("jitter_ratio_vs_mediapipe",)), ("lag", ("lag_frames_vs_mediapipe",)),
                ("mouth lag", ("mouth", "lag_vs_ref")))


def _row(name: str, src: str, s: dict) -> str:
    cells = [name, src]
    for title, path in CLIP_COLUMNS:
        if title == "eye r R/L":
            r, lft = (_fmt(_dig(s, ("eyes", side, "corr_ref"))) for side in ("right", "left"))
            cells.append(f"{r}/{lft}")
        elif title == "blinks":
            b = s["blinks"]
            cells.append(f"{b['reproduced']}/{b['total']} ({len(b['detected'])} det)")
        else:
            cells.append(_fmt(_dig(s, path), 3 if "ratio" in title or "/" in title else 2))
    return "| " + " | ".join(cells) + " |"


def markdown(report: dict) -> str:
    head = "| clip | source | " + " | ".join(t for t, _ in CLIP_COLUMNS) + " |"
    sep = "|" + "---|" * (len(CLIP_COLUMNS) + 2)
    lines = [f"# Independent 68-point reference (dlib) on {len(report['clips'])} GRID clips", "",
             report["notes"], "", "## Per clip", "", head, sep]
    for c in report["clips"]:
        for src, s in c["sources"].items():
            lines.append(_row(f"{c['name']} ({c['frames_used']}/{c['frames']})", src, s))
    lines += ["", "## Summary (mean over clips; blinks summed)", "",
              "| source | NME51 % | brows | eyes | nose | o.mouth | i.mouth | jaw | offset-removed | ratio vs MP | "
              "Δbrows | Δeyes | Δnose | Δo.mouth | Δi.mouth | Δjaw | mouth r | mouth amp/ref | mouth amp/MP | "
              "eye mean/ref R/L | eye r R/L | blink recall | jitter px | jitter/MP | lag | mouth lag |",
              "|" + "---|" * 26]
    for src, d in report["summary"].items():
        g = d.get
        rec = f"{d['blinks.reproduced']}/{d['blinks.total']}" + \
            (f" = {100 * d['blinks.recall']:.0f} %" if d["blinks.recall"] is not None else "") + \
            f" ({d['blinks.detected']} det)"
        lines.append("| " + " | ".join([
            src, _fmt(g("nme.inner51")), *(_fmt(g(f"nme.{r}")) for r in M.REGIONS),
            _fmt(g("nme_offset_removed")), _fmt(g("nme_ratio_vs_mediapipe"), 3),
            *(_fmt(g(f"nme_minus_mediapipe.{r}")) for r in M.REGIONS),
            _fmt(g("mouth.corr_ref"), 3), _fmt(g("mouth.amp_vs_ref"), 3), _fmt(g("mouth.amp_vs_mediapipe"), 3),
            f"{_fmt(g('eyes.right.mean_vs_ref'))}/{_fmt(g('eyes.left.mean_vs_ref'))}",
            f"{_fmt(g('eyes.right.corr_ref'))}/{_fmt(g('eyes.left.corr_ref'))}", rec,
            _fmt(g("jitter_px"), 3), _fmt(g("jitter_ratio_vs_mediapipe"), 3),
            _fmt(g("lag_frames_vs_mediapipe")), _fmt(g("mouth.lag_vs_ref"))]) + " |")
    return "\n".join(lines) + "\n"


NOTES = ("NME: mean point distance over the reference's inter-ocular distance (outer eye corners 36/45), %, "
         "over frames where dlib, MediaPipe and every fit have the face. Fitted points: FLAME's official 68-point "
         "embedding on the fitted mesh through the result's camera (its inner-lip rows put in upper/lower order when "
         "the template has them crossed, see embedding_inner_lips_crossed_mm). Raw MediaPipe: its 478 points through "
         "a fixed "
         "478→68 table. Δ = fitted − MediaPipe (points). offset-removed: each point's mean offset over the clip "
         "removed. Mouth: inner-lip gap / IOD; r = Pearson correlation with dlib's, amp = std ratio. Eyes: lid gap "
         "/ IOD per eye; mean/ref = mean opening over dlib's. Blinks: local minima of the mean eye opening below "
         f"{M.BLINK_FRACTION} × the clip's median (runs within {M.BLINK_MERGE} frames merged) on dlib's signal; "
         f"reproduced = the source has such an event within ±{M.BLINK_TOLERANCE} frames. Jitter: mean |2nd "
         "difference| of the inner-51 points (px/frame²). Lag: cross-correlation peak (frames, + = behind) of the "
         "inner-51 points vs raw MediaPipe, and of the mouth opening vs dlib's.")


def run_grid_reference(out_dir: Path, grid: Path, clips: str = "all", qualities: tuple[str, ...] = ("fast",),
                       refdata: Path | None = None, dlib_model: str | None = None, results_dir: Path | None = None,
                       track_cmd: str = DEFAULT_TRACK_CMD, reference: Path | None = None, progress=None) -> dict:
    """Run the GRID reference bench; writes ``out_dir/reference_grid.json`` and ``.md``; returns the report.

    results_dir: results ``CLIP_QUALITY.npz`` reused from there when present (tracked into it otherwise);
    None → tracked fresh into ``out_dir/results``."""
    from ..bench import DEFAULT_REFERENCE
    from ..contract.model_format import save_model_npz
    from ..contract.result import load_result
    from ..flame.synthetic import flame_reference_head, load_static_embedding_68
    from .paths import default_refdata
    t_start = time.perf_counter()
    refdata = Path(refdata) if refdata else default_refdata()
    require_dlib()
    model_file = find_model(refdata, dlib_model)
    videos = select_clips(Path(grid), clips)
    ref_dir = Path(reference) if reference else DEFAULT_REFERENCE
    if not ref_dir.is_dir():
        raise InputError(f"FLAME reference folder {ref_dir} not found; pass --reference DIR")
    prog = progress or (lambda *a: None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = flame_reference_head(ref_dir)
    model_path = save_model_npz(out_dir / "bench_head.npz", model)
    official = load_static_embedding_68(ref_dir / "flame_static_embedding_68.pkl")
    emb_idx, emb_bary, lip_cross_mm = inner_lip_order(model["v_template"], model.faces, *official)
    reuse = results_dir is not None
    rdir = Path(results_dir) if reuse else out_dir / "results"
    clips_out, track_s = [], {}
    for k, video in enumerate(videos):
        prog("reference", k / len(videos), f"{video.name}: dlib reference")
        ref, found = reference_points(video, model_file, refdata / "cache" / "dlib")
        mp = raw_mediapipe(video, refdata / "cache" / "mediapipe")
        mp68 = np.asarray(mp.points, float)[:, list(MP_TO_68)]
        fits = {}
        for q in qualities:
            prog("reference", k / len(videos), f"{video.name}: track ({q})")
            path, secs = ensure_result(rdir, video.stem, q, video, model_path, track_cmd, reuse)
            if secs is not None:
                track_s.setdefault(q, []).append(secs)
            result = load_result(path)
            if result.n_frames != len(found):
                raise InputError(f"{path}: {result.n_frames} frames, the clip has {len(found)}; re-track it")
            fits[q] = project_surface(result_vertices(result, model), model.faces, emb_idx, emb_bary, result)
        m = clip_metrics(ref, found, mp68, np.asarray(mp.valid, bool), fits)
        m["name"] = video.stem
        clips_out.append(m)
    report = {"format": REPORT_FORMAT, "version": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
              "notes": NOTES, "qualities": list(qualities), "track_cmd": track_cmd,
              "results_dir": str(rdir), "dlib_model": str(model_file),
              "head": f"FLAME-topology test head ({ref_dir})",
              "embedding_inner_lips_crossed_mm": lip_cross_mm, "embedding_inner_lips_swapped": lip_cross_mm > 0,
              "track_wall_s": {q: _mean(v) for q, v in track_s.items()},
              "clips": clips_out, "summary": summarise(clips_out)}
    report["total_s"] = time.perf_counter() - t_start
    write_report(out_dir, "reference_grid", report, markdown)
    prog("reference", 1.0, f"wrote {out_dir / 'reference_grid.json'}")
    return report
