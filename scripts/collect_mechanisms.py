"""The mechanism measures of every cell as one table (Parquet, Markdown) and a figure against wp (PNG, PDF)."""

import argparse
import json

import pandas as pd

from plw.analysis import CELL_KEYS, with_completion_weight
from plw.figures import mechanism_figure
from plw.grid import cells, mechanism_result, memorization_result
from plw.io import write_figure, write_parquet, write_text
from plw.mechanisms import mechanisms_markdown

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--grid", required=True, help="the grid, as JSON (plw.grid)")
parser.add_argument("--wp-power", type=float, required=True)
parser.add_argument("--parquet", required=True)
parser.add_argument("--markdown", required=True)
parser.add_argument("--figure", nargs=2, required=True, help="PNG and PDF paths")
args = parser.parse_args()

grid = json.loads(args.grid)
table = pd.concat([with_completion_weight(pd.read_parquet(mechanism_result(grid, **cell))).merge(
    with_completion_weight(pd.read_parquet(memorization_result(grid, **cell))), on=CELL_KEYS) for cell in cells(grid)],
    ignore_index=True)
figure = mechanism_figure(table, args.wp_power)
markdown = mechanisms_markdown(table)
write_parquet(table, args.parquet)
write_text(markdown, args.markdown)
for path in args.figure:
    write_figure(figure, path)
print(markdown)
