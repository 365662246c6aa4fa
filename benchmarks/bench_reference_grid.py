"""GRID footage against dlib's independent 68-point reference (``flamecap bench --references grid``):
inner-51 NME of the fitted FLAME landmarks and of raw MediaPipe, per region, mouth / eye opening, blinks,
jitter and lag. Set-up once: ``benchmarks/fetch_reference_data.sh`` (dlib-bin + the 68-point model file).

    python benchmarks/bench_reference_grid.py --clips all [--qualities fast,production] [-o DIR]
        [--results DIR (reuse results there)] [--track-cmd "..."]
"""
import sys

from flamecap.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if not any(a in ("-o", "--out") or a.startswith("--out=") for a in args):
        args = ["-o", "bench_reference", *args]
    sys.exit(main(["bench", "--references", "grid", *args]))
