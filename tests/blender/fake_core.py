"""A stand-in for ``python -m flamecap track`` speaking the same JSON-lines protocol, for add-on tests that
need deterministic timing (cancel). Called through a generated ``python`` stub script, so the add-on runs
exactly the argv it would run for the real core; the argv is parsed by the real ``flamecap`` parser
(``flamecap.cli.build_parser``, torch-free), so an option the core does not know fails here as it would there.

Behaviour: footage that is not a file → error event (code 2); ``--model`` that does not exist → error event
(code 3); env ``FAKE_CORE_STEP_S`` = seconds per progress step (default 0.01); otherwise writes a valid
result (tests/blender/fixtures.py, with ``--focal`` as its focal length) atomically and emits ``done``."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fixtures
from flamecap.cli import build_parser
from flamecap.contract import JsonlEmitter


def main(argv: list[str]) -> int:
    if argv[:2] == ["-m", "flamecap"]:
        argv = argv[2:]
    args = build_parser().parse_args(argv)
    em = JsonlEmitter(sys.stdout)
    em.emit("start", command=args.command)
    print("some library chatter that is not JSON")  # readers must ignore it
    if not os.path.isfile(args.footage) or os.path.getsize(args.footage) < 16:
        em.emit("error", message=f"cannot read footage {args.footage}: not a video; choose a video file", code=2)
        print(f"error: cannot read footage {args.footage}", file=sys.stderr)
        return 2
    if args.model and not os.path.isfile(args.model):
        em.emit("error", message=f"model not found: {args.model}; register a model", code=3)
        return 3
    step = float(os.environ.get("FAKE_CORE_STEP_S", "0.01"))
    stages = ("load", "landmarks", "fit", "write")
    for i in range(40):
        em.progress(stages[min(i // 10, 3)], (i + 1) / 41, f"frame {i}")
        time.sleep(step)
    start = args.start or 0
    n = (args.end - start) if args.end is not None else 12
    fixtures.make_result(args.output, n_frames=n, source_path=args.footage, frame_offset=start, focal_px=args.focal)
    em.emit("done", result=str(Path(args.output).resolve()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
