"""Thin wrapper: ``python benchmarks/run_bench.py -o REPORT_DIR [--quick] ...`` = ``flamecap bench ...``
(accuracy on synthetic ground truth and GRID footage, speed vs the per-frame Adam baseline; prints the table)."""
import sys

from flamecap.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
