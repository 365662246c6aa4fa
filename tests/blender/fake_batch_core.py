"""A stand-in for ``python -m flamecap batch`` speaking the same JSON-lines protocol (``shot`` events, exit 10
when some shots fail), for the Batch section's tests: the real batch is tested in tests/test_batch.py; here the
add-on's side (argv, following shots, importing finished ones) runs in seconds.

Shots: files as given, folders expanded to their .mp4/.mov/.mpg files; a shot whose file name starts with
``bad`` fails with a one-line error, the others get a valid result (tests/blender/fixtures.py) at
``OUTDIR/<stem>.npz``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fixtures
from flamecap.contract import JsonlEmitter


def main(argv: list[str]) -> int:
    if argv[:2] == ["-m", "flamecap"]:
        argv = argv[2:]
    ap = argparse.ArgumentParser(prog="fake-flamecap")
    ap.add_argument("command", choices=["batch"])
    ap.add_argument("shots", nargs="+")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--progress", default="text")
    ap.add_argument("--quality", default="fast")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--model", default="")
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args(argv)
    em = JsonlEmitter(sys.stdout)
    em.emit("start", command="batch")
    files = []
    for s in map(Path, args.shots):
        files += sorted(q for q in s.iterdir() if q.suffix in (".mp4", ".mov", ".mpg")) if s.is_dir() else [s]
    out = Path(args.output)
    for f in files:
        em.emit("shot", shot=f.stem, status="queued")
    failed = 0
    for i, f in enumerate(files):
        em.emit("shot", shot=f.stem, status="running", attempt=1, pid=1)
        if f.name.startswith("bad"):
            failed += 1
            em.emit("shot", shot=f.stem, status="failed", attempt=1,
                    error=f"{f} is not a video OpenCV can decode; convert it")
        else:
            result = out / f"{f.stem}.npz"
            fixtures.make_result(result, n_frames=6 + i, source_path=str(f))
            em.emit("shot", shot=f.stem, status="done", attempt=1, result=str(result.resolve()))
        em.progress("batch", (i + 1) / len(files), f"{i + 1}/{len(files)} shots finished")
    em.emit("done", result=str(out / "batch_report.json"), done=len(files) - failed, failed=failed, skipped=0)
    if failed:
        em.emit("error", message=f"{failed} of {len(files)} shots failed", code=10)
        return 10
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
