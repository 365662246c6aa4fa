"""``flamecap bench -o REPORT_DIR [--quick] [--grid DIR] [--reference DIR] [--baseline SCRIPT]``: accuracy on
synthetic ground truth and real footage, and speed vs a per-frame Adam baseline (see :mod:`flamecap.bench`)."""
from __future__ import annotations

import argparse
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
    add_progress_argument(p)
    p.set_defaults(handler=cmd_bench)


def cmd_bench(args) -> int:
    from dataclasses import replace

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
