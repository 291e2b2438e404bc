"""Table 3: the mixed-effects regression of score on wp and wp², per dataset and per (dataset, model)."""

import argparse

import pandas as pd

from plw.analysis import missing_cells, regression_markdown, regression_table
from plw.io import write_parquet, write_text

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--scores", required=True)
parser.add_argument("--formula", required=True)
parser.add_argument("--wp-power", type=float, required=True)
parser.add_argument("--bootstrap-samples", type=int, default=1000)
parser.add_argument("--parquet", required=True)
parser.add_argument("--markdown", required=True)
args = parser.parse_args()

scores = pd.read_parquet(args.scores)
table = regression_table(scores, args.formula, args.wp_power, args.bootstrap_samples)
write_parquet(table, args.parquet)
markdown = regression_markdown(table, missing_cells(scores), args.formula, args.wp_power)
write_text(markdown, args.markdown)
print(markdown)
