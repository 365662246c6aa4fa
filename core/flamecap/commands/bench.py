"""``flamecap bench -o REPORT_DIR [--quick] [--grid DIR] [--reference DIR] [--baseline SCRIPT]``: accuracy on
synthetic ground truth and real footage, and speed vs a per-frame Adam baseline (see :mod:`flamecap.bench`).

``flamecap bench -o DIR --references grid,renders [...]``: the benches against independent references instead
(:mod:`flamecap.reference`): dlib's 68 points on the GRID clips, and Blender renders with known parameters."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..cli import add_progress_argument


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmark accuracy (ground truth, real footage) and speed vs a baseline")
    p.add_argument("-o", "--out", required=True, help="report folder (report.json, report.md, plots)")
    p.add_argument("--quick", action="store_true", help="a small version (1 short clip, 1 real clip): ~1 min")
    p.add_argument("--grid", default=None,
                   help="folder of real clips (default: ../shared/data/footage/grid next to the repository)")
    p.add_argument("--no-grid", action="store_true", help="skip real footage")
    p.add_argument("--reference", default=None,
                   help="FLAME reference folder for the FLAME-topology test head (default: "
                        "../shared/data/flame_reference when present, else the registered model, else synthetic)")
    p.add_argument("--baseline", default=None, help="baseline script (default benchmarks/baseline_adam.py)")
    p.add_argument("--baseline-steps", type=int, default=None, help="Adam steps per frame (default 500)")
    r = p.add_argument_group("independent references (--references)")
    r.add_argument("--references", default=None,
                   help="run the reference benches instead: grid (dlib 68 points on real footage), renders "
                        "(Blender ground truth), or grid,renders")
    r.add_argument("--clips", default="all", help="GRID clips: all, a count, or comma-separated names")
    r.add_argument("--qualities", default="fast", help="tracking qualities, comma-separated (fast,production)")
    r.add_argument("--refdata", default=None,
                   help="folder with the dlib model file and the caches (default $FLAMECAP_REFDATA, else refdata/ "
                        "next to the repository)")
    r.add_argument("--dlib-model", default=None, help="dlib 68-point model file (default REFDATA/"
                                                      "shape_predictor_68_face_landmarks.dat)")
    r.add_argument("--results", default=None,
                   help="folder of results CLIP_QUALITY.npz to reuse (missing ones are tracked into it)")
    r.add_argument("--track-cmd", default=None,
                   help="tracking command template with {python} {video} {out} {model} {quality} (default: "
                        "this Python's 'flamecap track')")
    r.add_argument("--reuse-renders", action="store_true",
                   help="renders: use cached clips only (fail instead of rendering a missing one)")
    r.add_argument("--render-clips", default="all",
                   help="renders: all, or comma-separated clip names (synthetic_f1000, testhead_f900, ...)")
    r.add_argument("--blender-python", default=os.environ.get("FLAMECAP_BPY_PYTHON", ""),
                   help="renders: a Python with bpy (default: $FLAMECAP_BPY_PYTHON, else this Python)")
    add_progress_argument(p)
    p.set_defaults(handler=cmd_bench)


REFERENCE_KINDS = ("grid", "renders")


def _references(args) -> list[str]:
    from ..errors import InputError
    kinds = [k.strip() for k in args.references.split(",") if k.strip()]
    bad = [k for k in kinds if k not in REFERENCE_KINDS]
    if bad or not kinds:
        raise InputError(f"--references {args.references}: use {', '.join(REFERENCE_KINDS)} (comma-separated)")
    return kinds


def _qualities(args) -> tuple[str, ...]:
    from ..errors import InputError
    qs = tuple(q.strip() for q in args.qualities.split(",") if q.strip())
    if not qs or any(q not in ("fast", "production") for q in qs):
        raise InputError(f"--qualities {args.qualities}: use fast, production or fast,production")
    return qs


def cmd_references(args) -> int:
    from ..bench import DEFAULT_GRID
    from ..cli import progress_reporter
    from ..reference.tracking import DEFAULT_TRACK_CMD
    kinds, qualities = _references(args), _qualities(args)
    if "renders" in kinds:
        from ..reference.renders import select_render_clips
        render_clips = select_render_clips(args.render_clips)    # refused before any work
    emitter, progress = progress_reporter(args.progress, command="bench")
    out = Path(args.out).resolve()
    common = dict(qualities=qualities, refdata=Path(args.refdata) if args.refdata else None,
                  results_dir=Path(args.results) if args.results else None,
                  track_cmd=args.track_cmd or DEFAULT_TRACK_CMD,
                  reference=Path(args.reference) if args.reference else None, progress=progress)
    written = []
    if "grid" in kinds:
        from ..reference.grid import markdown as grid_markdown
        from ..reference.grid import run_grid_reference
        report = run_grid_reference(out, Path(args.grid) if args.grid else DEFAULT_GRID, clips=args.clips,
                                    dlib_model=args.dlib_model, **common)
        written.append(out / "reference_grid.json")
        if args.progress == "text":
            print(grid_markdown(report))
    if "renders" in kinds:
        from ..reference.renders import markdown as renders_markdown
        from ..reference.renders import run_render_reference
        report = run_render_reference(out, reuse_renders=args.reuse_renders, clips=render_clips,
                                      blender_python=args.blender_python, **common)
        written.append(out / "reference_renders.json")
        if args.progress == "text":
            print(renders_markdown(report))
    if emitter:
        emitter.emit("done", result=str(written[-1]))
    elif args.progress == "text":
        print("wrote " + ", ".join(str(p) for p in written))
    return 0


def cmd_bench(args) -> int:
    from dataclasses import replace
    if args.references:
        return cmd_references(args)

    from ..bench import DEFAULT_BASELINE, BenchConfig, headline_table, run_bench
    from ..cli import progress_reporter
    cfg = BenchConfig.quick_preset() if args.quick else BenchConfig.full()
    if args.baseline_steps is not None:
        cfg = replace(cfg, baseline_steps=args.baseline_steps)
    if args.no_grid:
        cfg = replace(cfg, grid_clips=0)
    emitter, progress = progress_reporter(args.progress, command="bench")
    report = run_bench(args.out, cfg, grid=args.grid, reference=args.reference,
                       baseline=args.baseline or DEFAULT_BASELINE, progress=progress)
    out = Path(args.out).resolve()
    if emitter:
        emitter.emit("done", result=str(out / "report.json"))
    elif args.progress == "text":
        print(headline_table(report))
        print(f"wrote {out / 'report.json'}, {out / 'report.md'} and {len(report['plots'])} plots "
              f"in {report['total_s']:.0f} s")
    return 0
