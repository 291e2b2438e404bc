"""Figures 1 and 2 (PNG and PDF): aggregate and per-benchmark scores against wp."""

import argparse

import pandas as pd

from plw.figures import aggregate_figure, benchmark_figure
from plw.io import write_figure

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--scores", required=True)
parser.add_argument("--regression", required=True)
parser.add_argument("--wp-power", type=float, required=True)
parser.add_argument("--aggregate", nargs=2, required=True, help="PNG and PDF paths of Figure 1")
parser.add_argument("--benchmarks", nargs=2, required=True, help="PNG and PDF paths of Figure 2")
args = parser.parse_args()

scores, regression = pd.read_parquet(args.scores), pd.read_parquet(args.regression)
for figure, paths in ((aggregate_figure(scores, regression, args.wp_power), args.aggregate),
                      (benchmark_figure(scores, args.wp_power), args.benchmarks)):
    for path in paths:
        write_figure(figure, path)
print(f"wrote {' '.join(args.aggregate + args.benchmarks)}")
