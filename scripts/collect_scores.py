"""Concatenate every evaluation Parquet into results/scores.parquet, listing the cells without results."""

import argparse
import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from plw.analysis import collect_scores
from plw.grid import expected_evaluations
from plw.io import write_parquet

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--grid", required=True, help="the grid, as JSON (plw.grid)")
parser.add_argument("--benchmarks", required=True, help="the config's benchmarks section, as JSON")
parser.add_argument("--wp-power", type=float, required=True)
parser.add_argument("--allow-missing", action="store_true",
                    help="build from what finished (after a --keep-going run) instead of failing")
parser.add_argument("--output", required=True)
args = parser.parse_args()

expected = pd.DataFrame(expected_evaluations(json.loads(args.grid)))
present = [path for path in expected["path"] if Path(path).exists()]
if len(present) < len(expected) and not args.allow_missing:
    raise SystemExit(f"{len(expected) - len(present)} evaluation results are missing; "
                     "rerun the workflow, or collect with --allow-missing")
frames = [pq.read_table(path).to_pandas() for path in present]
primary = {name: spec["metric"] for name, spec in json.loads(args.benchmarks).items()}
scores = collect_scores(frames, expected.drop(columns="path"), primary, args.wp_power)
write_parquet(scores, args.output)
print(f"{len(present)} of {len(expected)} evaluations collected; {int((scores['status'] == 'missing').sum())} missing")
