"""``flamecap batch SHOTS… -o OUTDIR``: track many shots (files, globs, folders, CSV/JSON shot lists) with the
track command's options, on local worker processes or (``--ray ADDRESS``) as Ray tasks; resumable; a summary
table and ``OUTDIR/batch_report.json``."""
from __future__ import annotations

import argparse
import sys

from ..errors import BatchError


def register(sub: argparse._SubParsersAction) -> None:
    from ..cli import add_progress_argument
    from .track import add_track_arguments
    p = sub.add_parser("batch", help="track many shots (files, globs, folders, shot lists) → OUTDIR/<shot>.npz",
                       description="Track many shots with the options of 'flamecap track' (a shot list's columns "
                                   "override them per shot). Finished shots whose input, options and model are "
                                   "unchanged are skipped when the batch runs again.")
    p.add_argument("shots", nargs="+", help="video files, globs ('takes/*.mov'), folders, or shot lists "
                                            "(.csv/.json: 'footage' column, optional 'name' and track options)")
    p.add_argument("-o", "--output", required=True, help="output folder: <shot>.npz, <shot>.batch.json, "
                                                         "batch_report.json")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: one per core)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch/OpenCV threads per worker (default: cores / workers)")
    p.add_argument("--retries", type=int, default=2, help="times a shot is retried after its worker died")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="run the shots as Ray tasks: 'auto' (the running cluster), 'local' (start one here, "
                        "--workers CPUs), or an address such as ray://head:10001; needs flamecap[ray] and an "
                        "output folder every node can reach")
    p.add_argument("--no-resume", action="store_true", help="track every shot, even finished ones")
    add_track_arguments(p, output=False)
    add_progress_argument(p)
    p.set_defaults(handler=cmd_batch)


def cmd_batch(args) -> int:
    from ..batch import collect_shots, run_batch
    from ..cli import progress_reporter
    from .track import TrackOptions
    em, bar = progress_reporter(args.progress, command="batch")
    shots = collect_shots(args.shots, args.output, TrackOptions.from_args(args))
    text = args.progress == "text"

    def on_event(kind: str, **fields) -> None:
        if kind == "progress":
            if bar is not None:
                bar("batch", fields["fraction"], fields["message"])
            return
        if em is not None:
            em.emit("shot", **fields)
        elif text and fields["status"] in ("done", "failed", "skipped"):
            detail = fields.get("error") or fields.get("result", "")
            print(f"  {fields['status']:<8} {fields['shot']}: {detail}", flush=True)

    report = run_batch(shots, args.output, workers=args.workers, threads=args.threads, retries=args.retries,
                       ray=args.ray, resume=not args.no_resume, on_event=on_event)
    if text:
        print_table(report)
    if em is not None:
        em.emit("done", result=report.path, **{k: report.count(k) for k in ("done", "skipped", "failed")})
    failed = [s for s in report.shots if s.status != "done" and s.status != "skipped"]
    if failed:
        raise BatchError(f"{len(failed)} of {len(report.shots)} shots failed (first: {failed[0].shot.name}: "
                         f"{failed[0].error}); the others are done; see {report.path}")
    return 0


def print_table(report, stream=None) -> None:
    """The summary table: one row per shot, then the totals."""
    stream = stream or sys.stdout
    rows = [("shot", "status", "frames", "seconds", "tries", "error")]
    for s in report.shots:
        frames = "" if s.frames is None else f"{s.valid_frames}/{s.frames}"
        rows.append((s.shot.name, s.status, frames, "" if s.seconds is None else f"{s.seconds:.1f}",
                     str(s.attempts or ""), s.error))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r[:5], widths)) + ("  " + r[5] if r[5] else ""), file=stream)
    counts = ", ".join(f"{report.count(k)} {k}" for k in ("done", "skipped", "failed", "cancelled") if report.count(k))
    print(f"{len(report.shots)} shots: {counts} in {report.seconds:.1f} s ({report.engine}, {report.workers} "
          f"workers x {report.threads} threads); report {report.path}", file=stream, flush=True)
