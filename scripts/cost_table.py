"""The cost table: every training, evaluation, generation and judging job's wall time, CPU time, peak memory and
GPU-hours."""

import argparse
import json

import pandas as pd

from plw.cost import COST_COLUMNS, cost_markdown, job_cost
from plw.grid import costed_jobs
from plw.io import write_parquet, write_text

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--grid", required=True, help="the grid, as JSON (plw.grid)")
parser.add_argument("--parquet", required=True)
parser.add_argument("--markdown", required=True)
args = parser.parse_args()

rows = []
for job in costed_jobs(json.loads(args.grid)):
    gpus = int(pd.read_parquet(job.pop("result"), columns=["gpus"])["gpus"].max())
    rows.append(job_cost(job.pop("benchmark_tsv"), gpus, **job))
costs = pd.DataFrame(rows, columns=COST_COLUMNS).astype({"plw": "float64", "seed": "Int64"})
markdown = cost_markdown(costs)
write_parquet(costs, args.parquet)
write_text(markdown, args.markdown)
print(markdown)
