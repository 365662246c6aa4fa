"""Rendered ground truth (``flamecap bench --references renders``): FLAME-format heads (the synthetic head, the
FLAME-topology test head, and a rig with a different expression basis and jaw skinning) rendered with Blender
Cycles through bpy at 1280×720 with lenses of 900–2000 px, tracked with ``flamecap track``, scored on jaw
opening ratio, jaw / head / gaze error, Procrustes face error next to the neutral template's, focal error and
SSME. Rendered clips are cached in REFDATA/renders (minutes per clip on 2 CPU cores, once).

    python benchmarks/bench_reference_renders.py [-o DIR] [--qualities fast,production] [--reuse-renders]
        [--render-clips all|NAMES] [--results DIR] [--track-cmd "..."]
"""
import sys

from flamecap.cli import main

if __name__ == "__main__":
    args = sys.argv[1:]
    if not any(a in ("-o", "--out") or a.startswith("--out=") for a in args):
        args = ["-o", "bench_reference", *args]
    sys.exit(main(["bench", "--references", "renders", *args]))
